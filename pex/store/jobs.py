"""Background jobs: queued by the UI or the CLI, claimed by one worker at a time, with progress, log tail and outcome.

A job is a row of ``jobs``; its life is ``queued -> running -> succeeded | failed | cancelled | interrupted`` (or
``queued -> cancelled``). Every change of status is one conditional UPDATE (``... WHERE status = <the status it
leaves>``), so two processes racing for one job (two workers claiming it, a cancel and the end of the run, a
worker marking it interrupted while it finishes) never both win: the one whose UPDATE changed no row lost.
What a job does is :mod:`pex.services.jobs` and :mod:`pex.services.worker`; this module only keeps the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError, PexError
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import iso, utc
from pex.store.schema import jobs

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINISHED = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
LOG_LINES = 50  # the log lines a job row keeps (the worker's own log has them all)


@dataclass(frozen=True)
class JobRecord:
    """A stored job."""

    id: int
    kind: str
    experiment: str | None
    params: dict[str, Any]
    status: str
    stage: str | None
    message: str | None
    fraction: float
    log_tail: list[str]
    error: str | None
    hint: str | None
    run_id: int | None
    actor: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker: str | None
    cancel_requested: bool

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed, cancelled or interrupted)."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The record for JSON output (times as ISO 8601 in UTC)."""
        return {"id": self.id, "kind": self.kind, "experiment": self.experiment, "params": self.params,
                "status": self.status, "stage": self.stage, "message": self.message, "fraction": self.fraction,
                "log_tail": list(self.log_tail), "error": self.error, "hint": self.hint, "run_id": self.run_id,
                "actor": self.actor, "created_at": iso(self.created_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "heartbeat_at": iso(self.heartbeat_at), "worker": self.worker,
                "cancel_requested": self.cancel_requested}


def job_record(row: Any) -> JobRecord:
    """A JobRecord from a row of ``jobs``."""
    return JobRecord(row.id, row.kind, row.experiment, row.params or {}, row.status, row.stage, row.message,
                     float(row.fraction), list(row.log_tail or []), row.error, row.hint, row.run_id, row.actor,
                     utc(row.created_at), _utc(row.started_at), _utc(row.finished_at), _utc(row.heartbeat_at),
                     row.worker, bool(row.cancel_requested))


def _utc(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None


def _not_found(job_id: int) -> NotFoundError:
    return NotFoundError(f"no job {job_id} in this workspace", "`pex jobs list` shows the jobs")


class JobsMixin:
    """Workspace methods for background jobs."""

    @db("queue a job in")
    def put_job(self, kind: str, params: dict[str, Any], actor: str, experiment: str | None = None) -> JobRecord:
        """Queue a job (already validated by :func:`pex.services.jobs.submit`)."""
        with self.engine.begin() as conn:
            job_id = int(conn.execute(jobs.insert().values(
                kind=kind, experiment=experiment, params=jsonable(params), status="queued", fraction=0.0, log_tail=[],
                actor=actor, created_at=datetime.now(UTC), cancel_requested=False)).inserted_primary_key[0])
            return job_record(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

    @db("read the jobs of")
    def get_job(self, job_id: int) -> JobRecord:
        """The job ``job_id``; NotFoundError when there is none."""
        with self._read() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise _not_found(job_id)
        return job_record(row)

    @db("read the jobs of")
    def list_jobs(self, experiment: str | None = None, status: str | tuple[str, ...] | None = None,
                  limit: int | None = 50) -> list[JobRecord]:
        """Jobs newest first, of one experiment and/or in the given status(es)."""
        query = sa.select(jobs).order_by(jobs.c.id.desc())
        if experiment is not None:
            query = query.where(jobs.c.experiment == experiment)
        if status is not None:
            query = query.where(jobs.c.status.in_((status,) if isinstance(status, str) else status))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [job_record(r) for r in conn.execute(query)]

    @db("claim a job in")
    def claim_job(self, worker: str) -> JobRecord | None:
        """Move the oldest queued job to ``running`` for ``worker`` ("host:pid"); None when none is queued.

        Safe with any number of workers on SQLite and PostgreSQL: the UPDATE only changes a row still queued, so of
        two workers that picked the same job one changes it and the other changes nothing (on PostgreSQL it waits
        for the first one's row lock, then re-checks the condition) and tries the next queued job. SQLite runs
        the statement, the choice of the oldest job included, under its one write lock.
        """
        while True:
            oldest = sa.select(sa.func.min(jobs.c.id)).where(jobs.c.status == "queued").scalar_subquery()
            now = datetime.now(UTC)
            with self.engine.begin() as conn:  # one statement: on SQLite it runs under the write lock as a whole
                row = conn.execute(jobs.update().where((jobs.c.id == oldest) & (jobs.c.status == "queued"))
                                   .values(status="running", worker=worker, started_at=now, heartbeat_at=now)
                                   .returning(*jobs.c)).first()
                if row is not None:
                    return job_record(row)
                if conn.execute(sa.select(jobs.c.id).where(jobs.c.status == "queued").limit(1)).first() is None:
                    return None
            # another worker took the job this one picked, and others are queued: try again

    @db("write the progress of a job in")
    def job_progress(self, job_id: int, *, stage: str | None = None, message: str | None = None,
                     fraction: float | None = None, lines: list[str] | None = None) -> None:
        """Record a running job's progress and append ``lines`` to its log tail (the last :data:`LOG_LINES` kept).

        Only a running job's row changes: progress arriving after the job ended (cancelled, interrupted) is dropped.
        """
        values: dict[str, Any] = {}
        if stage is not None:
            values["stage"] = stage
        if message is not None:
            values["message"] = message
        if fraction is not None:
            values["fraction"] = min(1.0, max(0.0, float(fraction)))
        running = jobs.update().where((jobs.c.id == job_id) & (jobs.c.status == "running"))
        with self.engine.begin() as conn:  # the write first (see cancel_job), then the tail it appends to
            changed = conn.execute(running.values(**values) if values else running.values(fraction=jobs.c.fraction))
            if lines and changed.rowcount == 1:
                tail = conn.execute(sa.select(jobs.c.log_tail).where(jobs.c.id == job_id)).scalar()
                conn.execute(running.values(log_tail=[*(tail or []), *lines][-LOG_LINES:]))

    @db("write the heartbeat of a job in")
    def job_heartbeat(self, job_id: int) -> bool:
        """Note that the worker running ``job_id`` is alive; returns whether the job is still running."""
        with self.engine.begin() as conn:
            return conn.execute(jobs.update().where((jobs.c.id == job_id) & (jobs.c.status == "running"))
                                .values(heartbeat_at=datetime.now(UTC))).rowcount == 1

    @db("cancel a job in")
    def cancel_job(self, job_id: int, actor: str) -> JobRecord:
        """Cancel a job for ``actor``: a queued one at once (``cancelled``), a running one by asking its worker
        (``cancel_requested``, and a line in its log; the worker stops it and it ends ``cancelled``). A finished
        job is refused."""
        # every transaction here starts with its write, which takes SQLite's write lock (waiting for another
        # writer's) before anything is read: a transaction that read first could not write after a concurrent one
        with self.engine.begin() as conn:
            now = datetime.now(UTC)
            queued = jobs.update().where((jobs.c.id == job_id) & (jobs.c.status == "queued"))
            if conn.execute(queued.values(status="cancelled", finished_at=now, cancel_requested=True,
                                          message=f"cancelled by {actor} before it started")).rowcount == 0:
                running = jobs.update().where((jobs.c.id == job_id) & (jobs.c.status == "running"))
                if conn.execute(running.values(cancel_requested=True)).rowcount == 1:
                    tail = conn.execute(sa.select(jobs.c.log_tail).where(jobs.c.id == job_id)).scalar()
                    line = f"{now:%H:%M:%S} cancel requested by {actor}"
                    conn.execute(jobs.update().where(jobs.c.id == job_id)
                                 .values(log_tail=[*(tail or []), line][-LOG_LINES:]))
                else:
                    status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
                    if status is None:
                        raise _not_found(job_id)
                    raise PexError(f"job {job_id} already finished ({status})",
                                   "only a queued or running job can be cancelled; `pex jobs rerun ID` runs it again")
            return job_record(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())

    @db("finish a job in")
    def finish_job(self, job_id: int, status: str, *, message: str | None = None, error: str | None = None,
                   hint: str | None = None, run_id: int | None = None, fraction: float | None = None) -> bool:
        """End a running job with ``status`` (succeeded, failed, cancelled or interrupted); returns False (and changes
        nothing) when the job was not running any more, e.g. another worker marked it interrupted."""
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status!r}")
        values: dict[str, Any] = {"status": status, "finished_at": datetime.now(UTC), "error": error, "hint": hint}
        if message is not None:
            values["message"] = message
        if run_id is not None:
            values["run_id"] = run_id
        if fraction is not None:
            values["fraction"] = fraction
        with self.engine.begin() as conn:
            return conn.execute(jobs.update().where((jobs.c.id == job_id) & (jobs.c.status == "running"))
                                .values(**values)).rowcount == 1

    @db("mark a job interrupted in")
    def interrupt_job(self, job_id: int, worker: str | None, message: str, hint: str | None = None) -> bool:
        """Mark a running job ``interrupted`` if it is still run by ``worker`` (the one found dead); returns whether
        it was. A job is never retried silently: the owner reruns it."""
        with self.engine.begin() as conn:
            return conn.execute(jobs.update().where(
                (jobs.c.id == job_id) & (jobs.c.status == "running") & (jobs.c.worker == worker)).values(
                status="interrupted", finished_at=datetime.now(UTC), message=message, error=message,
                hint=hint)).rowcount == 1
