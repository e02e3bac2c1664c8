"""The online loop's state: each loop's Ax experiment and settings, and its rounds.

A loop's Ax state (Ax's own JSON snapshot of the experiment and its generation strategy) and the round it
concerns are written in one transaction, so a reader sees the Ax experiment and the rounds in step: after an
ask, the new trials and the open round that serves them; after a tell, the completed trials and the round's
results.
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
from pex.store.schema import experiments, online_loops, online_rounds


@dataclass(frozen=True)
class OnlineLoop:
    """A stored loop: its experiment, the stable policy name its rounds are served under, settings and Ax state."""

    name: str
    experiment: str
    policy: str
    settings: dict[str, Any]
    ax_state: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class OnlineRound:
    """One round: the routing policy version that serves it, its arms, and (once complete) its results."""

    loop: str
    round: int
    policy_version: int
    status: str  # open | complete
    arms: list[dict[str, Any]]
    results: dict[str, Any] | None
    opened_at: datetime
    completed_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The round as JSON."""
        return {"round": self.round, "policy_version": self.policy_version, "status": self.status, "arms": self.arms,
                "results": self.results, "opened_at": self.opened_at.isoformat(),
                "completed_at": self.completed_at.isoformat() if self.completed_at else None}


class OnlineMixin:
    """Workspace methods for online loops."""

    @db("write the online loop to")
    def create_loop(self, name: str, experiment: str, policy: str, settings: dict[str, Any], ax_state: dict[str, Any]) -> None:
        """Store a new loop; an existing loop of that name is an error (its rounds would be lost)."""
        now = datetime.now(UTC)
        with self._lock(), self.engine.begin() as conn:
            if conn.execute(sa.select(experiments.c.name).where(experiments.c.name == experiment)).first() is None:
                raise NotFoundError(f"no experiment {experiment!r} in this workspace", "ingest it first with `pex ingest SPEC`")
            if conn.execute(sa.select(online_loops.c.name).where(online_loops.c.name == name)).first() is not None:
                raise PexError(f"experiment {name!r} already has an online loop",
                               f"see it with `pex online status {name}`; open the next round with `pex online complete {name} --next`")
            conn.execute(online_loops.insert().values(name=name, experiment=experiment, policy=policy,
                                                      settings=jsonable(settings), ax_state=ax_state,
                                                      created_at=now, updated_at=now))

    @db("write the online loop to")
    def discard_loop(self, name: str) -> bool:
        """Remove a loop that has no round yet (its first round failed to open); True if removed."""
        with self._lock(), self.engine.begin() as conn:
            if conn.execute(sa.select(online_rounds.c.id).where(online_rounds.c.loop == name).limit(1)).first() is not None:
                return False
            return conn.execute(online_loops.delete().where(online_loops.c.name == name)).rowcount > 0

    @db("read the online loop from")
    def get_loop(self, name: str) -> OnlineLoop:
        """A stored loop by name."""
        with self._read() as conn:
            row = conn.execute(sa.select(online_loops).where(online_loops.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"experiment {name!r} has no online loop", f"start one with `pex online start {name}`")
        return OnlineLoop(row.name, row.experiment, row.policy, row.settings, row.ax_state, utc(row.created_at),
                          utc(row.updated_at))

    @db("write the online loop to")
    def save_round(self, loop: str, ax_state: dict[str, Any], round_: int, *, policy_version: int | None = None,
                   arms: list[dict[str, Any]] | None = None, results: dict[str, Any] | None = None,
                   expect_status: str | None = None) -> OnlineRound:
        """Write the loop's Ax state and round ``round_`` in one transaction: a new open round (``policy_version`` and
        ``arms``) or, with ``results``, the completion of an open one. ``expect_status`` guards against two
        processes completing the same round: the write fails unless the round is in that state."""
        now = datetime.now(UTC)
        with self._lock(), self.engine.begin() as conn:
            where = (online_rounds.c.loop == loop) & (online_rounds.c.round == round_)
            current = conn.execute(sa.select(online_rounds.c.status).where(where)).scalar()
            if expect_status is not None and current != expect_status:
                raise PexError(f"round {round_} of {loop!r} is {current or 'not open'}, not {expect_status}",
                               f"see `pex online status {loop}`")
            if results is None:
                conn.execute(online_rounds.insert().values(loop=loop, round=round_, policy_version=policy_version, status="open",
                                                           arms=jsonable(arms or []), results=None, opened_at=now))
            else:
                conn.execute(online_rounds.update().where(where).values(status="complete", results=jsonable(results),
                                                                        completed_at=now))
            conn.execute(online_loops.update().where(online_loops.c.name == loop).values(ax_state=ax_state, updated_at=now))
        return self.rounds(loop)[round_ - 1]

    @db("read the online loop from")
    def rounds(self, loop: str) -> list[OnlineRound]:
        """Every round of a loop, first first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(online_rounds).where(online_rounds.c.loop == loop).order_by(online_rounds.c.round)).all()
        return [OnlineRound(r.loop, r.round, r.policy_version, r.status, r.arms, r.results, utc(r.opened_at),
                            utc(r.completed_at) if r.completed_at else None) for r in rows]
