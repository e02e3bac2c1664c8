"""Pipeline runs: the summary of each `pex run`, from which `pex report` renders the report again, and the history
of the runs on one dataset version (their settings and recommendations), which the next run on it reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import NewRun, RunRecord, run_record, utc
from pex.store.schema import dataset_versions, jobs, runs

# the columns a history reads (never the summaries: each is the size of a summary.json)
_HISTORY = (runs.c.id, runs.c.experiment, runs.c.dataset_id, runs.c.fit_id, runs.c.created_at, runs.c.settings,
            runs.c.reason, runs.c.policy, runs.c.policy_version, runs.c.own_policy, runs.c.own_version, runs.c.bound_to)


class RunsMixin:
    """Workspace methods for pipeline runs."""

    @db("write")
    def put_run(self, experiment: str, summary: dict[str, Any], fit_id: str | None = None) -> int:
        """Store the summary of one `pex run` (the report is rendered from it) outside any dataset version's history."""
        with self.engine.begin() as conn:
            return int(conn.execute(runs.insert().values(
                experiment=experiment, fit_id=fit_id, summary=jsonable(summary), created_at=datetime.now(UTC),
            )).inserted_primary_key[0])

    @db("write")
    def record_run(self, experiment: str, dataset_id: str, settings: dict[str, Any], reason: str | None,
                   make: Callable[[list[RunRecord], int, datetime], NewRun], fit_id: str | None = None) -> RunRecord:
        """Record a run on a dataset version with its settings and reason; ``make(earlier, run_id, now)`` gets the
        runs recorded before on that version (oldest first), this run's id and time, and returns its summary and
        recommendation (:class:`NewRun`).

        ``make`` runs under the workspace lock, inside the transaction that inserts the row, so two runs finishing
        at once on one dataset version each see the other (one is the first run, the other the second), never
        neither.
        """
        now = datetime.now(UTC)
        with self._lock(), self.engine.begin() as conn:
            earlier = [run_record(r) for r in conn.execute(
                sa.select(*_HISTORY).where((runs.c.experiment == experiment) & (runs.c.dataset_id == dataset_id))
                .order_by(runs.c.id))]
            run_id = int(conn.execute(runs.insert().values(
                experiment=experiment, fit_id=fit_id, summary={}, created_at=now, dataset_id=dataset_id,
                settings=jsonable(settings), reason=reason)).inserted_primary_key[0])
            new = make(earlier, run_id, now)
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                summary=jsonable(new.summary), policy=new.policy, policy_version=new.policy_version,
                own_policy=new.own_policy, own_version=new.own_version, bound_to=new.bound_to))
        return RunRecord(run_id, experiment, dataset_id, fit_id, now, settings, reason, new.policy, new.policy_version,
                         new.own_policy, new.own_version, new.bound_to)

    @db("read")
    def run_history(self, experiment: str, dataset_id: str) -> list[RunRecord]:
        """The runs recorded on a dataset version, oldest first (runs stored before the history was kept are not)."""
        with self._read() as conn:
            return [run_record(r) for r in conn.execute(
                sa.select(*_HISTORY).where((runs.c.experiment == experiment) & (runs.c.dataset_id == dataset_id))
                .order_by(runs.c.id))]

    @db("read")
    def run_summary(self, run_id: int) -> dict[str, Any]:
        """The stored summary of run ``run_id``."""
        with self._read() as conn:
            row = conn.execute(sa.select(runs.c.summary).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"no pipeline run {run_id} in this workspace", "list an experiment's runs in its report")
        return row.summary

    @db("read")
    def latest_run(self, experiment: str) -> dict[str, Any]:
        """The summary of the newest `pex run` of an experiment."""
        self.dataset_version(experiment)  # NotFoundError for an unknown experiment
        with self._read() as conn:
            row = conn.execute(sa.select(runs.c.summary).where(runs.c.experiment == experiment)
                               .order_by(runs.c.id.desc()).limit(1)).first()
        if row is None:
            raise NotFoundError(f"experiment {experiment!r} has no pipeline run yet",
                                "run the whole pipeline first: `pex run SPEC` (the spec of that experiment)")
        return row.summary

    @db("read")
    def list_runs(self, experiment: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The pipeline runs of an experiment, newest first: id, created_at, dataset_id, dataset_version (its
        number; None for runs stored before run history was kept), the recommended policy and version, the
        recommendation's headline, the reason given, ``bound_to`` and the id of the job that made it (None for
        ``pex run``). Reads two fields out of each summary in the database, never whole summaries.

        An unknown experiment is a NotFoundError; one without runs gives an empty list.
        """
        self.dataset_version(experiment)  # NotFoundError (with the known names) for an unknown experiment
        headline = runs.c.summary[("recommendation", "headline")].as_string()
        recommended = runs.c.summary[("recommended_policy",)].as_string()
        query = (sa.select(runs.c.id, runs.c.created_at, runs.c.dataset_id, dataset_versions.c.version, runs.c.policy,
                           runs.c.policy_version, runs.c.reason, runs.c.bound_to, runs.c.fit_id,
                           headline.label("headline"), recommended.label("recommended"), jobs.c.id.label("job_id"))
                 .select_from(runs.outerjoin(dataset_versions, dataset_versions.c.id == runs.c.dataset_id)
                              .outerjoin(jobs, jobs.c.run_id == runs.c.id))
                 .where(runs.c.experiment == experiment).order_by(runs.c.id.desc()))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [{"id": r.id, "experiment": experiment, "created_at": utc(r.created_at), "dataset_id": r.dataset_id,
                 "dataset_version": r.version, "policy": r.policy or r.recommended, "policy_version": r.policy_version,
                 "headline": r.headline, "reason": r.reason, "bound_to": r.bound_to, "fit_id": r.fit_id,
                 "job_id": r.job_id} for r in rows]
