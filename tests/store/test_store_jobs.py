"""The jobs table: atomic claims, cancel by state, progress only while running, conditional ends; runs listed;
tokens read back by id, and the view scope."""

from __future__ import annotations

import threading

import pytest

from pex.errors import NotFoundError, PexError
from pex.store.jobs import LOG_LINES
from pex.store.workspace import Workspace


@pytest.fixture
def ws(home):
    with Workspace(home) as opened:
        yield opened


def test_two_workers_claiming_at_once_get_each_job_exactly_once(home):
    n_jobs, n_workers = 40, 4
    with Workspace(home) as ws:
        queued = [ws.put_job("run", {"experiment": "exp"}, "tests", "exp").id for _ in range(n_jobs)]
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(n_workers)

    def claim(name: str) -> None:
        mine = claimed.setdefault(name, [])
        with Workspace(home) as own:  # one workspace (engine, connections) per worker, as in separate processes
            start.wait()
            while (job := own.claim_job(name)) is not None:
                assert job.status == "running" and job.worker == name
                mine.append(job.id)

    threads = [threading.Thread(target=claim, args=(f"host:{i}",)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    got = [job_id for ids in claimed.values() for job_id in ids]
    assert sorted(got) == queued  # every job once, none twice
    assert sum(1 for ids in claimed.values() if ids) >= 2  # they really raced
    with Workspace(home) as ws:
        by_id = {j.id: j for j in ws.list_jobs(limit=None)}
    for name, ids in claimed.items():
        assert all(by_id[i].worker == name for i in ids)
        assert ids == sorted(ids)  # each worker takes the oldest queued job first


def test_claim_takes_the_oldest_queued_job_and_none_when_nothing_is_queued(ws):
    assert ws.claim_job("w:1") is None
    first, second = (ws.put_job("run", {"experiment": "exp", "n": i}, "tests", "exp") for i in range(2))
    ws.cancel_job(first.id, "tests")
    got = ws.claim_job("w:1")
    assert got.id == second.id and got.started_at is not None and got.heartbeat_at is not None
    assert ws.claim_job("w:1") is None


def test_cancel_a_queued_job_ends_it_a_running_one_asks_its_worker_a_finished_one_is_refused(ws):
    queued = ws.put_job("run", {"experiment": "exp"}, "token:alice", "exp")
    done = ws.cancel_job(queued.id, "token:bob")
    assert done.status == "cancelled" and done.finished_at is not None and "token:bob" in done.message
    running = ws.put_job("run", {"experiment": "exp"}, "token:alice", "exp")
    assert ws.claim_job("w:1").id == running.id
    asked = ws.cancel_job(running.id, "token:bob")
    assert asked.status == "running" and asked.cancel_requested and "cancel requested by token:bob" in asked.log_tail[-1]
    assert ws.finish_job(running.id, "cancelled", message="cancelled")
    for job_id in (queued.id, running.id):
        with pytest.raises(PexError, match="already finished"):
            ws.cancel_job(job_id, "token:bob")
    with pytest.raises(NotFoundError, match="no job 999"):
        ws.cancel_job(999, "token:bob")


def test_progress_is_written_only_while_running_and_the_log_keeps_its_last_lines(ws):
    job = ws.put_job("run", {"experiment": "exp"}, "tests", "exp")
    ws.job_progress(job.id, stage="fit", fraction=0.5, lines=["early"])
    assert ws.get_job(job.id).stage is None  # queued: not running yet, nothing written
    ws.claim_job("w:1")
    for i in range(LOG_LINES + 7):
        ws.job_progress(job.id, stage="fit", message=f"model {i}", fraction=i / 100, lines=[f"line {i}"])
    got = ws.get_job(job.id)
    assert (got.stage, got.message, got.fraction) == ("fit", f"model {LOG_LINES + 6}", (LOG_LINES + 6) / 100)
    assert got.log_tail == [f"line {i}" for i in range(7, LOG_LINES + 7)]
    ws.job_progress(job.id, fraction=7.0)
    assert ws.get_job(job.id).fraction == 1.0  # clipped to 0..1
    assert ws.finish_job(job.id, "succeeded", run_id=12, fraction=1.0)
    assert not ws.finish_job(job.id, "failed", error="late")  # ended once: a second end changes nothing
    ws.job_progress(job.id, stage="late", lines=["late"])
    got = ws.get_job(job.id)
    assert (got.status, got.run_id, got.error, got.stage) == ("succeeded", 12, None, "fit") and "late" not in got.log_tail
    assert not ws.job_heartbeat(job.id)


def test_interrupt_only_changes_a_job_still_run_by_the_dead_worker(ws):
    job = ws.put_job("run", {"experiment": "exp"}, "tests", "exp")
    ws.claim_job("host:1")
    assert not ws.interrupt_job(job.id, "host:2", "gone")  # another worker's job: untouched
    assert ws.interrupt_job(job.id, "host:1", "the worker stopped", "run it again")
    got = ws.get_job(job.id)
    assert (got.status, got.error, got.hint) == ("interrupted", "the worker stopped", "run it again")
    assert got.to_dict()["finished_at"].endswith("+00:00")
    with pytest.raises(ValueError):
        ws.finish_job(job.id, "running")


def test_list_jobs_newest_first_by_experiment_and_status(ws):
    a = ws.put_job("run", {"experiment": "a"}, "tests", "a")
    b = ws.put_job("run", {"experiment": "b"}, "tests", "b")
    c = ws.put_job("online_start", {"experiment": "a"}, "tests", "a")
    assert [j.id for j in ws.list_jobs()] == [c.id, b.id, a.id]
    assert [j.id for j in ws.list_jobs(experiment="a")] == [c.id, a.id]
    ws.claim_job("w:1")
    assert [j.id for j in ws.list_jobs(status="running")] == [a.id]
    assert [j.id for j in ws.list_jobs(status=("queued",), limit=1)] == [c.id]


def test_list_runs_newest_first_with_version_headline_and_job(ws_home):
    with Workspace(ws_home) as ws:
        assert ws.list_runs("exp") == []
        dv = ws.dataset_version("exp")
        old = ws.put_run("exp", {"recommended_policy": "exp-old", "recommendation": {"headline": "old <b>one</b>"}})
        job = ws.put_job("run", {"experiment": "exp"}, "token:alice", "exp")
        ws.claim_job("w:1")

        def make(earlier, run_id, now):
            from pex.store.records import NewRun

            return NewRun({"recommended_policy": "exp-tree", "recommendation": {"headline": "Ship the tree"}},
                          "exp-tree", 3, "exp-tree", 3)

        recorded = ws.record_run("exp", dv.id, {"seed": 0}, None, make)
        ws.finish_job(job.id, "succeeded", run_id=recorded.id)
        runs = ws.list_runs("exp")
        assert [r["id"] for r in runs] == [recorded.id, old]
        assert runs[0] | {"created_at": None} == {
            "id": recorded.id, "experiment": "exp", "created_at": None, "dataset_id": dv.id, "dataset_version": 1,
            "policy": "exp-tree", "policy_version": 3, "headline": "Ship the tree", "reason": None, "bound_to": None,
            "fit_id": None, "job_id": job.id}
        assert runs[1]["headline"] == "old <b>one</b>" and runs[1]["policy"] == "exp-old"
        assert runs[1]["dataset_version"] is None and runs[1]["job_id"] is None
        assert runs[0]["created_at"].tzinfo is not None
        assert [r["id"] for r in ws.list_runs("exp", limit=1)] == [recorded.id]
        with pytest.raises(NotFoundError, match="no experiment named 'nope'"):
            ws.list_runs("nope")


def test_get_token_reads_a_token_back_by_id_and_view_tokens_allow_view_routes_only(ws):
    record, _secret = ws.create_token("view", "viewer")
    assert ws.get_token(record.id) == record
    assert ws.get_token("0000") is None
    assert record.allows("view") and not record.allows("decide") and not record.allows("admin")
    admin, _ = ws.create_token("admin", "boss")
    decide, _ = ws.create_token("decide", "server")
    assert admin.allows("view") and not decide.allows("view")
    revoked = ws.revoke_token("viewer")
    assert ws.get_token(record.id) == revoked and not revoked.allows("view")
    with pytest.raises(PexError, match="unknown token scope 'read'"):
        ws.create_token("read")


@pytest.mark.postgres
def test_claims_race_safely_on_postgresql(tmp_path, empty_postgres_url):
    n_jobs, n_workers = 30, 4
    with Workspace(tmp_path / "ws", database_url=empty_postgres_url) as ws:
        queued = [ws.put_job("run", {"experiment": "exp"}, "tests", "exp").id for _ in range(n_jobs)]
    got: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(n_workers)

    def claim(name: str) -> None:
        with Workspace(tmp_path / "ws", database_url=empty_postgres_url) as own:
            start.wait()
            while (job := own.claim_job(name)) is not None:
                with lock:
                    got.append(job.id)

    threads = [threading.Thread(target=claim, args=(f"host:{i}",)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == queued
