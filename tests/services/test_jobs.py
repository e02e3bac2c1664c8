"""Jobs as the UI and CLI submit them (every parameter checked, nothing stored when wrong; run again), and the
pipeline's structured progress and its run on a stored dataset version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pex.errors import NotFoundError, PexError
from pex.services import jobs
from pex.services.progress import STAGES, Cancelled, Progress, event
from pex.services.run import run_stored
from pex.store.workspace import Workspace

SMALL = {"learner": "t", "dense": 64, "seed": 3}


@pytest.mark.parametrize(("kind", "params", "message", "hint"), [
    ("fly", {"experiment": "exp"}, "unknown job kind 'fly'", "run, online_start, online_complete"),
    ("run", {}, "needs the experiment's name", "experiment"),
    ("run", {"experiment": "nope"}, "no experiment named 'nope'", "known experiments: exp"),
    ("run", {"experiment": "exp", "dataset_version": 9}, "has no dataset version 9", "pex experiments"),
    ("run", {"experiment": "exp", "learner": "forest"}, "unknown learner 'forest'", "auto, t, x, s, dr"),
    ("run", {"experiment": "exp", "seed": "1"}, "'seed' of a 'run' job must be int", "dataset_version"),
    ("run", {"experiment": "exp", "seed": True}, "'seed' of a 'run' job must be int", "learner"),
    ("run", {"experiment": "exp", "seed": -1}, "seed must be 0 or more", "default"),
    ("run", {"experiment": "exp", "dense": 3}, "dense must be at least 16", "1024"),
    ("run", {"experiment": "exp", "reason": "  "}, "--reason is empty", "replace"),
    ("run", {"experiment": "exp", "steps": 3}, "takes no parameter 'steps'", "learner"),
    ("online_start", {"experiment": "exp", "arms": 99}, "--arms must be from 1 to 16", "four"),
    ("online_complete", {"experiment": "exp"}, "has no online loop", "pex online start exp"),
])
def test_submit_refuses_bad_input_with_a_hint_and_stores_nothing(ws_home, kind, params, message, hint):
    with Workspace(ws_home) as ws:
        with pytest.raises(PexError, match=message) as info:
            jobs.submit(ws, kind, params, "token:alice")
        assert hint in (info.value.hint or "")
        assert ws.list_jobs() == []


def test_submit_queues_with_its_actor_and_rerun_only_after_a_failure_cancel_or_interruption(ws_home):
    with Workspace(ws_home) as ws:
        job = jobs.submit(ws, "run", {"experiment": "exp", "dataset_version": 1, **SMALL}, "token:alice")
        assert (job.status, job.experiment, job.actor, job.kind) == ("queued", "exp", "token:alice", "run")
        assert jobs.get_job(ws, job.id).params == {"experiment": "exp", "dataset_version": 1, **SMALL}
        default = jobs.submit(ws, "run", {"experiment": "exp", "dataset_version": None}, "token:alice")
        assert default.params == {"experiment": "exp"}  # None is "not given": the current version, at run time
        jobs.cancel(ws, default.id, "token:alice")
        with pytest.raises(PexError, match="is queued; only a failed, cancelled or interrupted"):
            jobs.rerun(ws, job.id, "token:bob")
        assert jobs.cancel(ws, job.id, "token:bob").status == "cancelled"
        again = jobs.rerun(ws, job.id, "token:bob")
        assert (again.status, again.params, again.actor) == ("queued", job.params, "token:bob") and again.id != job.id
        assert [j.id for j in jobs.list_jobs(ws, experiment="exp")] == [again.id, default.id, job.id]
        assert jobs.list_jobs(ws, experiment="other") == []
        with pytest.raises(NotFoundError, match="no job 77"):
            jobs.get_job(ws, 77)


def test_progress_events_name_each_stage_and_fraction_never_goes_back():
    events = [event(stage, stage) for stage in STAGES]
    assert [e.index for e in events] == list(range(1, len(STAGES) + 1))
    assert [e.fraction for e in events] == sorted(e.fraction for e in events) and events[0].fraction == 0.0
    assert event("fit", "half", 0.5).fraction == pytest.approx((event("fit", "").fraction + event("policies", "").fraction) / 2)
    assert event("report", "done", 1.0).fraction == pytest.approx(1.0)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, small_run):
    """`pex run` on a spec (the shared ``small_run``, run with :data:`SMALL`), and the same spec ingested in another
    workspace then run from the store with the same settings, with its progress events."""
    base = tmp_path_factory.mktemp("stored")
    spec = small_run.out.parent / "exp" / "exp.toml"
    from pex.cli.main import main

    assert main(["--home", str(base / "b"), "ingest", str(spec)]) == 0
    from_store: list[Progress] = []
    stored_run = run_stored(base / "b", "exp", 1, on_progress=from_store.append, **SMALL)
    return small_run, stored_run, from_store, base


def test_a_run_reports_every_stage_with_a_rising_fraction_and_the_fit_model_by_model(two_runs):
    _spec_run, _stored, events, _base = two_runs
    for evs in (events,):
        stages = [e.stage for e in evs]
        assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == list(STAGES)
        fractions = [e.fraction for e in evs]
        assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
        fit = [e for e in evs if e.stage == "fit"]
        assert len(fit) > 4 and len({e.fraction for e in fit}) > 4  # the fit's models move the fraction
        assert all(e.total == len(STAGES) for e in evs)


def test_a_run_on_the_stored_dataset_version_recommends_what_pex_run_on_the_spec_does(two_runs):
    spec_run, stored_run, _events, base = two_runs
    assert stored_run.out is None and not (base / "b" / "runs").exists()  # no output folder unless asked
    assert stored_run.run_id == 1 and spec_run.run_id == 1
    a, b = spec_run.summary, stored_run.summary
    assert a["recommended_policy"] == b["recommended_policy"]
    assert a["recommendation"]["headline"] == b["recommendation"]["headline"]
    assert a["recommendation"]["document"] | {"trained_at": None, "lineage": None} == \
        b["recommendation"]["document"] | {"trained_at": None, "lineage": None}
    assert [(p["name"], p["value"]) for p in a["policies"]] == [(p["name"], p["value"]) for p in b["policies"]]
    with Workspace(base / "b") as ws:
        assert ws.run_summary(stored_run.run_id)["recommended_policy"] == b["recommended_policy"]
        assert [r["id"] for r in ws.list_runs("exp")] == [stored_run.run_id]


def test_a_progress_callback_raising_cancelled_stops_the_run_with_no_run_recorded(tmp_path, ingested_template):
    shutil.copytree(ingested_template, tmp_path / "ws")

    def stop_at_fit(e: Progress) -> None:
        if e.stage == "fit":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        run_stored(tmp_path / "ws", "exp", on_progress=stop_at_fit, **SMALL)
    with Workspace(tmp_path / "ws") as ws:
        assert ws.list_runs("exp") == []


def test_run_stored_refuses_an_unknown_experiment_or_version(ws_home: Path):
    with pytest.raises(NotFoundError, match="no experiment named 'nope'"):
        run_stored(ws_home, "nope")
    with pytest.raises(NotFoundError, match="no dataset version 4"):
        run_stored(ws_home, "exp", 4)

