"""Pipeline runs: the summary of each `pex run`, from which `pex report` renders the report again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.schema import runs


class RunsMixin:
    """Workspace methods for pipeline runs."""

    @db("write")
    def put_run(self, experiment: str, summary: dict[str, Any], fit_id: str | None = None) -> int:
        """Store the summary of one `pex run` (the report is rendered from it)."""
        with self.engine.begin() as conn:
            return int(conn.execute(runs.insert().values(
                experiment=experiment, fit_id=fit_id, summary=jsonable(summary), created_at=datetime.now(UTC),
            )).inserted_primary_key[0])

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
