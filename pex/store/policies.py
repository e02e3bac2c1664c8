"""Policy documents, versioned per name, each with its off-policy evaluation (JSON in the database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError, StoreError
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import PolicyRecord, policy_record
from pex.store.schema import experiments, policies


class PoliciesMixin:
    """Workspace methods for policies."""

    @db("write")
    def put_policies(self, experiment: str, items: list[tuple[dict[str, Any], dict[str, Any] | None]],
                     fit_id: str | None = None) -> list[PolicyRecord]:
        """Store policy documents (each with its evaluation) as new versions, all in one transaction.

        A document's ``version`` is set to one more than the newest stored
        version of that name.
        """
        now = datetime.now(UTC)
        out = []
        # the lock: two writers must not both read the same newest version and both add the next one
        with self._lock(), self.engine.begin() as conn:
            if conn.execute(sa.select(experiments.c.name).where(experiments.c.name == experiment)).first() is None:
                raise NotFoundError(f"no experiment {experiment!r} in this workspace", "ingest it first with `pex ingest SPEC`")
            for document, evaluation in items:
                name = document["name"]
                latest = conn.execute(sa.select(sa.func.max(policies.c.version)).where(policies.c.name == name)).scalar()
                other = conn.execute(sa.select(policies.c.experiment).where(policies.c.name == name).limit(1)).scalar()
                if other is not None and other != experiment:
                    raise StoreError(f"policy name {name!r} is already used by experiment {other!r}",
                                     "policy names are unique in a workspace; rename it")
                doc = jsonable({**document, "version": (latest or 0) + 1})
                if evaluation is not None:
                    evaluation = jsonable({**evaluation, "version": doc["version"]})
                conn.execute(policies.insert().values(experiment=experiment, name=name, version=doc["version"], kind=doc["kind"],
                                                      fit_id=fit_id, document=doc, evaluation=evaluation, created_at=now))
                out.append(PolicyRecord(experiment, name, doc["version"], doc["kind"], fit_id, doc, evaluation, now))
        return out

    @db("read")
    def get_policy(self, name: str, version: int | None = None) -> PolicyRecord:
        """A stored policy by name (default: its newest version)."""
        query = sa.select(policies).where(policies.c.name == name)
        if version is not None:
            query = query.where(policies.c.version == version)
        with self._read() as conn:
            row = conn.execute(query.order_by(policies.c.version.desc()).limit(1)).first()
        if row is None:
            known = self._policy_names()
            raise NotFoundError(f"no policy {name!r}{f' version {version}' if version else ''} in this workspace",
                                f"known policies: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}" if known
                                else "build policies with `pex policies NAME`, or pass a policy JSON file")
        return policy_record(row)

    @db("read")
    def list_policies(self, experiment: str, fit_id: str | None = None) -> list[PolicyRecord]:
        """The newest version of every policy of an experiment (optionally: built from one fit), oldest name first."""
        self.dataset_version(experiment)  # NotFoundError for an unknown experiment
        scope = policies.c.experiment == experiment
        if fit_id is not None:
            scope = scope & (policies.c.fit_id == fit_id)  # the newest version built from that fit
        newest = (sa.select(policies.c.name, sa.func.max(policies.c.version).label("version"))
                  .where(scope).group_by(policies.c.name).subquery())
        query = sa.select(policies).join(newest, (policies.c.name == newest.c.name) & (policies.c.version == newest.c.version))
        with self._read() as conn:
            rows = conn.execute(query.order_by(policies.c.id)).all()
        return [policy_record(r) for r in rows]

    def _policy_names(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(sa.select(policies.c.name).distinct().order_by(policies.c.name))]
