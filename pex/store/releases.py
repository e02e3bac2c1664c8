"""Which version of each policy is live: publish and rollback events, appended in order and never changed.

The live version of a policy is the ``to_version`` of its newest event. A rollback returns to the version that
was live before the current one was published (a stack: publish pushes, rollback pops), so repeated rollbacks
walk back through the publications.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError, PexError
from pex.store.engine import db
from pex.store.records import utc
from pex.store.schema import policies, releases, runs


@dataclass(frozen=True)
class Release:
    """One publish or rollback: who moved which policy from which version to which, and when."""

    policy: str
    action: str
    from_version: int | None
    to_version: int
    actor: str
    created_at: datetime
    note: str | None = None  # why it happened outside the normal rule (an uncertified publish confirmed in the UI)

    def to_dict(self) -> dict[str, Any]:
        """The event for JSON output."""
        return {"policy": self.policy, "action": self.action, "from_version": self.from_version,
                "to_version": self.to_version, "actor": self.actor, "created_at": self.created_at.isoformat(),
                "note": self.note}


class ReleasesMixin:
    """Workspace methods for publishing policy versions."""

    @db("publish a policy in")
    def publish(self, name: str, version: int | None, actor: str, note: str | None = None) -> Release:
        """Make ``version`` of policy ``name`` live. The default is the newest stored version, unless a run stored it
        beside the recommendation of an earlier run on the same data (:mod:`pex.services.history`: a re-run without a
        reason, whose own versions are for information): then the version that run recommends. ``note`` is kept
        with the event (e.g. that an uncertified policy was published on purpose)."""
        with self._lock(), self.engine.begin() as conn:
            stored = conn.execute(sa.select(sa.func.max(policies.c.version)).where(policies.c.name == name)).scalar()
            if stored is None:
                raise NotFoundError(f"no policy {name!r} in this workspace", "`pex policies NAME` lists an experiment's policies")
            if version is None:
                carried = conn.execute(sa.select(runs.c.policy_version).where(
                    (runs.c.own_policy == name) & (runs.c.own_version == stored) & (runs.c.policy == name)
                    & runs.c.bound_to.is_not(None)).order_by(runs.c.id.desc()).limit(1)).scalar()
                version = stored if carried is None else int(carried)
            if conn.execute(sa.select(policies.c.id).where((policies.c.name == name) & (policies.c.version == version))
                            ).first() is None:
                raise NotFoundError(f"policy {name!r} has no version {version}", f"its newest version is {stored}")
            history = _history(conn, name)
            live = history[-1] if history else None
            if live == version:
                raise PexError(f"policy {name!r} version {version} is already live", "publish another version, or roll back")
            return _append(conn, name, "publish", live, version, actor, note)

    @db("roll back a policy in")
    def rollback(self, name: str, actor: str, note: str | None = None) -> Release:
        """Return policy ``name`` to the version that was live before the current one was published."""
        with self._lock(), self.engine.begin() as conn:
            history = _history(conn, name)
            if not history:
                raise NotFoundError(f"policy {name!r} was never published", f"publish it first: `pex publish {name}`")
            if len(history) < 2:
                raise PexError(f"policy {name!r} has only ever had version {history[-1]} live: nothing to roll back to",
                               f"publish another version instead: `pex publish {name} --version V`")
            return _append(conn, name, "rollback", history[-1], history[-2], actor, note)

    @db("read the live policies of")
    def live_versions(self) -> dict[str, int]:
        """Every published policy's live version."""
        newest = sa.select(sa.func.max(releases.c.id)).group_by(releases.c.policy).scalar_subquery()
        with self._read() as conn:
            return {r.policy: r.to_version for r in conn.execute(
                sa.select(releases.c.policy, releases.c.to_version).where(releases.c.id.in_(newest)))}

    @db("read the releases of")
    def releases(self, name: str | None = None) -> list[Release]:
        """Every publish and rollback (of one policy, when given), oldest first."""
        query = sa.select(releases)
        if name is not None:
            query = query.where(releases.c.policy == name)
        with self._read() as conn:
            return [Release(r.policy, r.action, r.from_version, r.to_version, r.actor, utc(r.created_at), r.note)
                    for r in conn.execute(query.order_by(releases.c.id))]

    @db("read the releases of")
    def rollback_target(self, name: str) -> int | None:
        """The version a rollback of policy ``name`` would make live (the one live before the current one), or None
        when there is nothing to roll back to (never published, or only ever one version live)."""
        with self._read() as conn:
            history = _history(conn, name)
        return history[-2] if len(history) >= 2 else None


def _history(conn: sa.Connection, name: str) -> list[int]:
    """The stack of live versions after replaying ``name``'s events; its top is live."""
    stack: list[int] = []
    for action, to_version in conn.execute(sa.select(releases.c.action, releases.c.to_version)
                                           .where(releases.c.policy == name).order_by(releases.c.id)):
        if action == "rollback":
            stack.pop()
        else:
            stack.append(to_version)
    return stack


def _append(conn: sa.Connection, name: str, action: str, from_version: int | None, to_version: int, actor: str,
            note: str | None) -> Release:
    now = datetime.now(UTC)
    conn.execute(releases.insert().values(policy=name, action=action, from_version=from_version, to_version=to_version,
                                          actor=actor, created_at=now, note=note))
    return Release(name, action, from_version, to_version, actor, now, note)
