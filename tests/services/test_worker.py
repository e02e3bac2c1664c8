"""The worker: a job runs in a child process to its outcome (succeeded with its run, failed with message and hint),
a cancel stops it cleanly within seconds, and a SIGKILLed worker's job ends `interrupted` (its child gone too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pex.services import jobs
from pex.services.worker import INTERRUPTED, Worker, dead_workers_jobs, mark_interrupted
from pex.store.workspace import Workspace
from tests.gunicorn import PEX
from tests.processes import started

SMALL = {"learner": "t", "dense": 64, "seed": 3}


def wait_for(check, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    return None


def quiet_worker(home: Path) -> Worker:
    return Worker(home, poll=0.2, say=lambda line: None)


def children(job_id: int) -> list[int]:
    """Pids of the processes running job ``job_id`` (its worker's children)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, timeout=10).stdout
    return [int(line.split()[0]) for line in out.splitlines()
            if "pex.services.worker" in line and f"--job {job_id} " in line + " "]


@pytest.mark.slow  # a whole pipeline in a child process: 15-40 s on a busy machine (the browser test runs one too)
def test_a_job_runs_to_success_with_its_run_progress_and_log(ws_home):
    with Workspace(ws_home) as ws:
        job = jobs.submit(ws, "run", {"experiment": "exp", **SMALL}, "token:alice")
        seen: list[tuple[str | None, float]] = []
        done = threading.Event()

        def watch() -> None:
            with Workspace(ws_home) as own:
                while not done.is_set():
                    j = own.get_job(job.id)
                    seen.append((j.stage, j.fraction))
                    time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            ended = quiet_worker(ws_home).once()
        finally:
            done.set()
            watcher.join(timeout=10)
        assert ended.id == job.id and ended.status == "succeeded", (ended.error, ended.hint)
        assert ended.run_id is not None and ended.fraction == 1.0 and ended.finished_at is not None
        assert ws.run_summary(ended.run_id)["experiment"] == "exp"
        newest = ws.list_runs("exp")[0]
        assert (newest["id"], newest["job_id"]) == (ended.run_id, job.id)
        assert any("[3/6]" in line for line in ended.log_tail) and ended.error is None
        stages = [s for s, _ in seen if s]
        assert len(set(stages)) >= 3  # the job's row showed at least three stages while it ran
        fractions = [f for _, f in seen]
        assert fractions == sorted(fractions)


def test_a_failing_job_ends_failed_with_the_message_and_hint_never_a_traceback(ws_home, capfd):
    with Workspace(ws_home) as ws:
        dv = ws.dataset_version("exp")
        missing = jobs.submit(ws, "run", {"experiment": "exp", **SMALL}, "token:alice")
        (ws.artifacts / dv.artifact).unlink()  # the stored data is gone: a StoreError with a hint
        ended = quiet_worker(ws_home).once()
        assert (ended.id, ended.status) == (missing.id, "failed")
        assert "dataset artifact" in ended.error and "ingest" in ended.hint and "Traceback" not in ended.error
        # an unexpected exception: type and message, hint to the worker's log, where its traceback went
        bad = ws.put_job("run", {"experiment": "exp", "bogus": 1}, "tests", "exp")  # past submit's checks
        ended = quiet_worker(ws_home).once()
        assert (ended.id, ended.status) == (bad.id, "failed")
        assert ended.error.startswith("TypeError:") and ended.hint == "see the worker's log"
        assert "Traceback" in capfd.readouterr().err


@pytest.mark.slow  # a worker process and a pipeline job (12-16 s); the browser test (make test) cancels a job too
def test_cancelling_a_running_job_ends_it_cancelled_within_seconds_with_no_run(ws_home):
    with Workspace(ws_home) as ws:
        job = jobs.submit(ws, "run", {"experiment": "exp"}, "token:alice")  # the default run: long enough
        result = {}
        runner = threading.Thread(target=lambda: result.setdefault("job", quiet_worker(ws_home).once()))
        runner.start()
        try:
            assert wait_for(lambda: ws.get_job(job.id).stage in ("effects", "fit"), 60)
            asked = time.monotonic()
            jobs.cancel(ws, job.id, "token:bob")
            runner.join(timeout=30)
            took = time.monotonic() - asked
        finally:
            runner.join(timeout=30)
        ended = ws.get_job(job.id)
        assert ended.status == "cancelled" and took < 15, (ended.status, took)
        assert ended.run_id is None and ws.list_runs("exp") == []
        assert any("cancel requested by token:bob" in line for line in ended.log_tail)
        assert children(job.id) == []


@pytest.mark.slow  # two worker processes and a job (10-20 s); the browser test (make test) kills a worker too
def test_a_sigkilled_workers_job_is_marked_interrupted_by_the_next_worker_and_its_child_stops(ws_home, tmp_path):
    env = {**os.environ, "PEX_HOME": str(ws_home), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    with Workspace(ws_home) as ws:
        job = jobs.submit(ws, "run", {"experiment": "exp"}, "token:alice")
        with started([*PEX, "worker", "--poll", "0.2"], stderr=tmp_path / "w1.err",
                     env=env) as first:
            assert first.wait_for_line("", 30) is not None  # it started
            assert wait_for(lambda: ws.get_job(job.id).stage in ("effects", "fit"), 60), (tmp_path / "w1.err").read_text()
            assert children(job.id)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
            assert wait_for(lambda: not children(job.id), 10)  # the child does not run on
        assert ws.get_job(job.id).status == "running"  # nobody has noticed yet
        with started([*PEX, "worker", "--once"], stderr=tmp_path / "w2.err",
                     env=env) as second:
            assert second.wait_for_line("no job queued", 60), (tmp_path / "w2.err").read_text()
            assert second.proc.wait(timeout=30) == 0
        ended = ws.get_job(job.id)
        assert (ended.status, ended.message, ended.run_id) == ("interrupted", INTERRUPTED, None)
        assert "rerun" in ended.hint
        assert jobs.rerun(ws, job.id, "token:alice").status == "queued"  # run again, never silently


def test_only_dead_workers_jobs_are_interrupted(ws_home):
    with Workspace(ws_home) as ws:
        mine = ws.put_job("run", {"experiment": "exp"}, "tests", "exp")
        ws.claim_job("somehost-elsewhere:1")
        assert dead_workers_jobs(ws, "me:1") == []  # another host, fresh heartbeat: alive as far as we can tell
        from datetime import UTC, datetime, timedelta

        later = datetime.now(UTC) + timedelta(seconds=31)
        assert [j.id for j in dead_workers_jobs(ws, "me:1", now=later)] == [mine.id]  # its heartbeat went stale
        assert mark_interrupted(ws, "me:1") == []
        ws.job_heartbeat(mine.id)
        import socket

        alive = ws.put_job("run", {"experiment": "exp"}, "tests", "exp")
        ws.claim_job(f"{socket.gethostname()}:{os.getpid()}")  # this very process: alive
        assert dead_workers_jobs(ws, "me:1") == []
        gone = ws.put_job("run", {"experiment": "exp"}, "tests", "exp")
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait(timeout=30)
        ws.claim_job(f"{socket.gethostname()}:{proc.pid}")  # a pid on this host that has ended
        assert mark_interrupted(ws, "me:1") == [gone.id]
        assert ws.get_job(alive.id).status == "running" and ws.get_job(gone.id).status == "interrupted"
        # a restarted container's worker has the dead one's host and pid: idle, it knows the job is not its own
        assert mark_interrupted(ws, f"{socket.gethostname()}:{os.getpid()}") == [alive.id]


@pytest.mark.slow  # starts a worker process and a job (15-20 s on a busy machine)
@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_a_worker_stopped_by_sigterm_interrupts_its_job_and_exits(ws_home, tmp_path, sig):
    env = {**os.environ, "PEX_HOME": str(ws_home), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    with Workspace(ws_home) as ws:
        job = jobs.submit(ws, "run", {"experiment": "exp"}, "token:alice")
        with started([*PEX, "worker", "--poll", "0.2"], stderr=tmp_path / "w.err",
                     env=env) as worker:
            assert wait_for(lambda: ws.get_job(job.id).stage in ("effects", "fit"), 60), (tmp_path / "w.err").read_text()
            assert worker.signal_and_wait(sig, 20) == 0
        ended = ws.get_job(job.id)
        assert (ended.status, ended.message) == ("interrupted", INTERRUPTED)
        assert children(job.id) == []
