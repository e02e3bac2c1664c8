"""Background jobs as the UI and the CLI see them: submit, cancel, run again, read.

A job is work too long for a web request (a pipeline run, opening or completing an online round). :func:`submit`
checks the kind and every parameter against the workspace first (an unknown experiment, dataset version or learner
is a PexError with a hint, and nothing is stored), then queues it; a worker (:mod:`pex.services.worker`) claims it
and runs it. Every job records who asked (``token:alice`` from the UI, ``cli:<user>`` from the CLI).
"""

from __future__ import annotations

from typing import Any

from pex.errors import PexError
from pex.store.jobs import JobRecord
from pex.store.workspace import Workspace

LEARNERS = ("auto", "t", "x", "s", "dr")
RERUNNABLE = ("failed", "cancelled", "interrupted")

# per kind, its parameters and their types (beside "experiment", which every kind needs)
PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "run": {"dataset_version": int, "learner": str, "seed": int, "reason": str, "dense": int},
    "online_start": {"arms": int, "holdout": (int, float), "from_offline": bool, "exploration": (int, float),
                     "seed": int, "method": str, "rounds": int},
    "online_complete": {"next_round": bool, "abandon_empty": bool},
}
KINDS = tuple(PARAMS)


def _bad(message: str, hint: str) -> PexError:
    return PexError(message, hint)


def check(ws: Workspace, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a job of ``kind``, checked against the workspace; a PexError (with hint) for anything wrong."""
    if kind not in PARAMS:
        raise _bad(f"unknown job kind {kind!r}", f"kinds: {', '.join(KINDS)}")
    if not isinstance(params, dict):
        raise _bad("a job's parameters must be an object of names and values", 'e.g. {"experiment": "checkout"}')
    params = {k: v for k, v in params.items() if v is not None}  # None: not given (the default)
    allowed = PARAMS[kind]
    unknown = sorted(set(params) - set(allowed) - {"experiment"})
    if unknown:
        raise _bad(f"job kind {kind!r} takes no parameter {', '.join(map(repr, unknown))}",
                   f"its parameters: experiment, {', '.join(allowed)}")
    experiment = params.get("experiment")
    if not isinstance(experiment, str) or not experiment:
        raise _bad(f"a {kind!r} job needs the experiment's name", 'e.g. {"experiment": "checkout"}')
    for name, value in params.items():
        wanted = allowed.get(name, str)
        # bool is an int to Python: a flag given for a number (or a number for a flag) is refused all the same
        if not isinstance(value, wanted) or (isinstance(value, bool) and wanted is not bool):
            kinds = wanted if isinstance(wanted, tuple) else (wanted,)
            raise _bad(f"parameter {name!r} of a {kind!r} job must be {' or '.join(t.__name__ for t in kinds)}, "
                       f"got {value!r}", f"its parameters: experiment, {', '.join(allowed)}")
    version = params.get("dataset_version")
    ws.dataset_version(experiment, version)  # NotFoundError with the known experiments or versions as its hint
    if kind == "run":
        _check_run(params)
    elif kind == "online_start":
        from pex.services.online import LoopOptions

        LoopOptions(**{k: v for k, v in params.items() if k != "experiment"}).check()
    else:
        ws.get_loop(experiment)  # NotFoundError: start the loop first
    return dict(params)


def _check_run(params: dict[str, Any]) -> None:
    from pex.services.history import check_reason

    learner = params.get("learner", "auto")
    if learner not in LEARNERS:
        raise _bad(f"unknown learner {learner!r}", f"learners: {', '.join(LEARNERS)} (auto picks per metric)")
    if params.get("seed", 0) < 0:
        raise _bad(f"seed must be 0 or more, got {params['seed']}", "e.g. seed 0 (the default)")
    if params.get("dense", 1024) < 16:
        raise _bad(f"dense must be at least 16 weight vectors, got {params['dense']}", "1024 is the default")
    if params.get("dataset_version") is not None and params["dataset_version"] < 1:
        raise _bad(f"dataset version must be 1 or more, got {params['dataset_version']}", "versions count from 1")
    check_reason(params.get("reason"))


def submit(ws: Workspace, kind: str, params: dict[str, Any], actor: str) -> JobRecord:
    """Queue a job of ``kind`` with ``params`` for ``actor``; nothing is stored when the parameters are wrong."""
    checked = check(ws, kind, params)
    return ws.put_job(kind, checked, actor, experiment=checked["experiment"])


def cancel(ws: Workspace, job_id: int, actor: str) -> JobRecord:
    """Cancel a job: a queued one at once, a running one by its worker (it ends ``cancelled`` within seconds);
    a finished job is a PexError ("already finished")."""
    return ws.cancel_job(job_id, actor)


def rerun(ws: Workspace, job_id: int, actor: str) -> JobRecord:
    """Queue a new job with the kind and parameters of a failed, cancelled or interrupted one (checked again: the
    experiment may have changed since)."""
    job = ws.get_job(job_id)
    if job.status not in RERUNNABLE:
        raise PexError(f"job {job_id} is {job.status}; only a failed, cancelled or interrupted job can be run again",
                       "submit a new job instead" if job.status == "succeeded" else "wait for it to finish")
    return submit(ws, job.kind, job.params, actor)


def get_job(ws: Workspace, job_id: int) -> JobRecord:
    """The job ``job_id`` (NotFoundError with a hint when there is none)."""
    return ws.get_job(job_id)


def list_jobs(ws: Workspace, experiment: str | None = None, limit: int = 50) -> list[JobRecord]:
    """Jobs newest first, of ``experiment`` when given."""
    return ws.list_jobs(experiment=experiment, limit=limit)
