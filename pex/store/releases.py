"""Which version of each policy is live: publish and rollback events, appended in order and never changed.

The live version of a policy is the ``to_version`` of its newest event. A rollback returns to the version that
was live before the current one was published (a stack: publish pushes, rollback pops), so repeated rollbacks
walk back through the publications.

A staged rollout (:mod:`pex.services.rollout`) is one entry of that stack however many steps it takes: ``canary``
pushes the first routing version, ``ramp`` and ``complete`` replace the top (the next share, then the new version
alone), and ``auto-rollback`` pops like a rollback, so it returns to the version live before the canary, and a
later rollback of a completed rollout does too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError, PexError
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import utc
from pex.store.schema import policies, releases, runs

PUSH = frozenset({"publish", "canary"})  # a new top of the stack
REPLACE = frozenset({"ramp", "complete"})  # the top replaced (a rollout's later steps)
POP = frozenset({"rollback", "auto-rollback"})  # back to the version below the top
ACTIONS = PUSH | REPLACE | POP


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
    details: dict[str, Any] | None = None  # the figures behind an automatic rollout step

    @property
    def forced(self) -> bool:
        """True for a publish of a version its run did not certify, made on purpose (:mod:`pex.services.publishing`)."""
        return bool(self.note) and self.note.startswith(FORCED_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        """The event for JSON output."""
        return {"policy": self.policy, "action": self.action, "from_version": self.from_version,
                "to_version": self.to_version, "actor": self.actor, "created_at": self.created_at.isoformat(),
                "note": self.note, "forced": self.forced, "details": self.details}


# the start of a release note recording an override of the certification gate; the rest is the reason given
FORCED_PREFIX = "forced: "


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
                version = _default_version(conn, name, stored)
            if conn.execute(sa.select(policies.c.id).where((policies.c.name == name) & (policies.c.version == version))
                            ).first() is None:
                raise NotFoundError(f"policy {name!r} has no version {version}", f"its newest version is {stored}")
            history = _history(conn, name)
            live = history[-1] if history else None
            if live == version:
                raise PexError(f"policy {name!r} version {version} is already live", "publish another version, or roll back")
            return _append(conn, name, "publish", live, version, actor, note)

    @db("read the policies of")
    def publish_target(self, name: str) -> int:
        """The version :meth:`publish` makes live when none is named (a gate checks that version first)."""
        with self._read() as conn:
            stored = conn.execute(sa.select(sa.func.max(policies.c.version)).where(policies.c.name == name)).scalar()
            if stored is None:
                raise NotFoundError(f"no policy {name!r} in this workspace", "`pex policies NAME` lists an experiment's policies")
            return _default_version(conn, name, stored)

    @db("change the live version of a policy in")
    def release_step(self, name: str, action: str, to_version: int, actor: str, note: str | None = None,
                     details: dict[str, Any] | None = None, expect_live: int | None = None) -> Release:
        """Append one rollout step (``canary``, ``ramp``, ``complete`` or ``auto-rollback``, see the module) with its
        reason and figures. ``expect_live``: the version the caller measured as live; when another release came in
        between (someone published or rolled back by hand), nothing is written and a PexError says so, so a
        watcher never acts on a measurement of a version that is no longer live."""
        if action not in ACTIONS - {"publish", "rollback"}:
            raise ValueError(f"not a rollout step: {action!r}")
        with self._lock(), self.engine.begin() as conn:
            history = _history(conn, name)
            live = history[-1] if history else None
            if expect_live is not None and live != expect_live:
                raise PexError(f"policy {name!r} changed while it was measured: version {live} is live, not {expect_live}",
                               "the rollout stops acting on its own; see `pex releases " + name + "`")
            if action in POP:
                if len(history) < 2:
                    raise PexError(f"policy {name!r} has nothing to roll back to", "publish another version instead")
                to_version = history[-2]
            elif action in REPLACE and not history:
                raise PexError(f"policy {name!r} has no live version to replace", "start a rollout with a canary")
            return _append(conn, name, action, live, to_version, actor, note, details)

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
            return [Release(r.policy, r.action, r.from_version, r.to_version, r.actor, utc(r.created_at), r.note,
                            r.details) for r in conn.execute(query.order_by(releases.c.id))]

    @db("read the releases of")
    def rollback_target(self, name: str) -> int | None:
        """The version a rollback of policy ``name`` would make live (the one live before the current one), or None
        when there is nothing to roll back to (never published, or only ever one version live)."""
        with self._read() as conn:
            history = _history(conn, name)
        return history[-2] if len(history) >= 2 else None


def _default_version(conn: sa.Connection, name: str, stored: int) -> int:
    """The newest stored version, unless a re-run stored it beside an earlier run's recommendation of ``name``."""
    carried = conn.execute(sa.select(runs.c.policy_version).where(
        (runs.c.own_policy == name) & (runs.c.own_version == stored) & (runs.c.policy == name)
        & runs.c.bound_to.is_not(None)).order_by(runs.c.id.desc()).limit(1)).scalar()
    return stored if carried is None else int(carried)


def _history(conn: sa.Connection, name: str) -> list[int]:
    """The stack of live versions after replaying ``name``'s events; its top is live."""
    stack: list[int] = []
    for action, to_version in conn.execute(sa.select(releases.c.action, releases.c.to_version)
                                           .where(releases.c.policy == name).order_by(releases.c.id)):
        if action in POP:
            stack.pop()
        elif action in REPLACE and stack:
            stack[-1] = to_version
        else:
            stack.append(to_version)
    return stack


def _append(conn: sa.Connection, name: str, action: str, from_version: int | None, to_version: int, actor: str,
            note: str | None, details: dict[str, Any] | None = None) -> Release:
    now = datetime.now(UTC)
    details = jsonable(details) if details is not None else None
    conn.execute(releases.insert().values(policy=name, action=action, from_version=from_version, to_version=to_version,
                                          actor=actor, created_at=now, note=note, details=details))
    return Release(name, action, from_version, to_version, actor, now, note, details)
