"""Staged rollouts of a policy version (canary, ramp, holdout): one row per rollout, its step and status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError, PexError
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import utc
from pex.store.schema import rollouts

RUNNING = "running"
FINISHED = frozenset({"complete", "rolled_back", "stopped"})


@dataclass(frozen=True)
class Rollout:
    """One staged rollout: the new and base versions, the canary shares per step and the routing version of each."""

    id: int
    policy: str
    experiment: str | None
    new_version: int
    base_version: int | None
    routing_key: str
    holdout: float
    steps: list[float]
    step: int
    status: str
    settings: dict[str, Any]
    versions: list[int]
    last_check: dict[str, Any] | None
    actor: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def live_version(self) -> int:
        """The routing version of the current step (what the rollout serves while running)."""
        return self.versions[self.step]

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON."""
        return {"id": self.id, "policy": self.policy, "experiment": self.experiment, "new_version": self.new_version,
                "base_version": self.base_version, "routing_key": self.routing_key, "holdout": self.holdout,
                "steps": list(self.steps), "step": self.step, "status": self.status, "settings": dict(self.settings),
                "versions": list(self.versions), "last_check": self.last_check, "actor": self.actor,
                "reason": self.reason, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


def _rollout(r: Any) -> Rollout:
    return Rollout(r.id, r.policy, r.experiment, r.new_version, r.base_version, r.routing_key, float(r.holdout),
                   list(r.steps), int(r.step), r.status, dict(r.settings), [int(v) for v in r.versions], r.last_check,
                   r.actor, r.reason, utc(r.created_at), utc(r.updated_at), utc(r.finished_at) if r.finished_at else None)


class RolloutsMixin:
    """Workspace methods for staged rollouts (:mod:`pex.services.rollout`)."""

    @db("write the rollout to")
    def create_rollout(self, policy: str, experiment: str | None, new_version: int, base_version: int | None,
                       routing_key: str, holdout: float, steps: list[float], settings: dict[str, Any],
                       first_version: int, actor: str, reason: str | None = None) -> Rollout:
        """Record a new running rollout at step 0 (served by routing version ``first_version``); a second running
        rollout of the same policy is refused, checked under the workspace lock so two starts cannot both pass."""
        now = datetime.now(UTC)
        with self._lock(), self.engine.begin() as conn:
            running = conn.execute(sa.select(rollouts.c.id).where(
                (rollouts.c.policy == policy) & (rollouts.c.status == RUNNING))).first()
            if running is not None:
                raise PexError(f"policy {policy!r} already has a running rollout (#{running.id})",
                               f"see `pex rollout status {policy}`; stop it with `pex rollout stop {policy}` first")
            new_id = conn.execute(rollouts.insert().values(
                policy=policy, experiment=experiment, new_version=new_version, base_version=base_version,
                routing_key=routing_key, holdout=holdout, steps=jsonable(steps), step=0, status=RUNNING,
                settings=jsonable(settings), versions=[int(first_version)], last_check=None, actor=actor,
                reason=reason, created_at=now, updated_at=now, finished_at=None)).inserted_primary_key[0]
        return self.get_rollout(policy, int(new_id))

    @db("read the rollouts of")
    def get_rollout(self, policy: str, rollout_id: int | None = None) -> Rollout:
        """Policy ``policy``'s newest rollout (or the one with ``rollout_id``)."""
        query = sa.select(rollouts).where(rollouts.c.policy == policy)
        if rollout_id is not None:
            query = query.where(rollouts.c.id == rollout_id)
        with self._read() as conn:
            row = conn.execute(query.order_by(rollouts.c.id.desc()).limit(1)).first()
        if row is None:
            raise NotFoundError(f"policy {policy!r} has no rollout", f"start one with `pex publish {policy} --canary 5`")
        return _rollout(row)

    @db("read the rollouts of")
    def running_rollouts(self) -> list[Rollout]:
        """Every running rollout, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(rollouts).where(rollouts.c.status == RUNNING).order_by(rollouts.c.id)).all()
        return [_rollout(r) for r in rows]

    @db("read the rollouts of")
    def experiment_rollouts(self, experiment: str) -> list[Rollout]:
        """Every rollout of a policy of ``experiment``, oldest first (the run report reads their newest checks)."""
        with self._read() as conn:
            rows = conn.execute(sa.select(rollouts).where(rollouts.c.experiment == experiment)
                                .order_by(rollouts.c.id)).all()
        return [_rollout(r) for r in rows]

    @db("write the rollout to")
    def update_rollout(self, rollout_id: int, *, expect_step: int | None = None, step: int | None = None,
                       add_version: int | None = None, status: str | None = None,
                       last_check: dict[str, Any] | None = None) -> Rollout:
        """Move a running rollout on: a new ``step`` served by ``add_version``, a final ``status``, and/or the newest
        ``last_check``. ``expect_step`` guards against two watchers acting on the same step: nothing is written
        unless the rollout is still running at that step."""
        now = datetime.now(UTC)
        with self._lock(), self.engine.begin() as conn:
            row = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
            if row is None:
                raise NotFoundError(f"no rollout #{rollout_id}", "`pex rollout status NAME` shows a policy's rollout")
            if row.status != RUNNING or (expect_step is not None and row.step != expect_step):
                raise PexError(f"rollout #{rollout_id} of {row.policy!r} moved on while it was measured "
                               f"(now {row.status} at step {row.step})", f"see `pex rollout status {row.policy}`")
            values: dict[str, Any] = {"updated_at": now}
            if step is not None:
                values["step"] = step
            if add_version is not None:
                values["versions"] = [*[int(v) for v in row.versions], int(add_version)]
            if status is not None:
                if status != RUNNING and status not in FINISHED:
                    raise ValueError(f"not a rollout status: {status!r}")
                values["status"] = status
                if status in FINISHED:
                    values["finished_at"] = now
            if last_check is not None:
                values["last_check"] = jsonable(last_check)
            conn.execute(rollouts.update().where(rollouts.c.id == rollout_id).values(**values))
            return _rollout(conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first())
