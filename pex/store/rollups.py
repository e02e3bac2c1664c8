"""The monitor's hourly counts: decisions per policy version, arm and hour; outcomes per experiment, metric and hour.

The decision log grows by up to 100,000 rows a second and has no index but its key (pex.store.schema), so a page
never counts it: the worker calls :meth:`RollupsMixin.refresh_rollups` every loop, which counts the rows added
since the last refresh, adds them to ``decision_hours`` / ``outcome_hours`` and moves the rollup's watermark
(``rollup_marks.last_id``, the id of the last row counted) in the same transaction. A refresh that crashes
therefore counts nothing, and one that commits never counts a row again: the counts always equal a direct count of
the rows up to the watermark.

Ids that commit out of order. On SQLite writers are serialized, so ids appear in order. On PostgreSQL two
transactions may take ids 100 and 101 and commit 101 first; a watermark moved past 101 would skip 100 forever. So a
refresh counts only the unbroken run of ids that follows the watermark and stops at the first missing id: a
transaction still in flight fills it within a moment (the decision-log flusher commits in well under a second),
and the next refresh goes on. A missing id that stays missing for :data:`GAP_GRACE_SECONDS` (a rolled-back insert,
a sequence's skipped cache, a deleted row) is then stepped over. ``rollup_marks.gap_since`` records when the current
gap was first seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pex.store.engine import db
from pex.store.records import utc
from pex.store.schema import decision_hours, decisions, outcome_hours, outcomes, rollup_marks

GAP_GRACE_SECONDS = 60.0
BATCH = 50_000  # ids counted per transaction: a refresh after a long pause never holds one transaction long


@dataclass(frozen=True)
class _Rollup:
    name: str
    source: sa.Table
    keys: tuple[str, ...]
    time: str
    target: sa.Table


ROLLUPS = (
    _Rollup("decision_hours", decisions, ("policy", "version", "arm"), "decided_at", decision_hours),
    _Rollup("outcome_hours", outcomes, ("experiment", "metric"), "recorded_at", outcome_hours),
)


def _hour(conn: sa.Connection, column: sa.ColumnElement) -> sa.ColumnElement:
    """The start of the UTC hour of a stored timestamp, in SQL (SQLite keeps UTC text, PostgreSQL timestamptz)."""
    if conn.dialect.name == "postgresql":
        return sa.func.date_trunc("hour", sa.func.timezone("UTC", column))
    return sa.func.strftime("%Y-%m-%d %H:00:00", column)


def _as_hour(value: Any) -> datetime:
    return utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def _upsert(conn: sa.Connection, target: sa.Table, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Add each row's count to the stored count of its key (inserting the key when new)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(target)
    stmt = stmt.on_conflict_do_update(index_elements=[*keys, "hour"], set_={"count": target.c.count + stmt.excluded.count})
    conn.execute(stmt, rows)


class RollupsMixin:
    """Workspace methods for the monitor's hourly rollups."""

    @db("refresh the monitor's counts in")
    def refresh_rollups(self, now: datetime | None = None) -> dict[str, int]:
        """Count the decisions and outcomes added since the last refresh into the hourly tables; returns the rows
        counted per rollup. Safe to call from several processes at once (they take turns on the watermark's row)."""
        counted = {}
        for rollup in ROLLUPS:
            counted[rollup.name] = self._refresh_one(rollup, now or datetime.now(UTC))
        return counted

    def _refresh_one(self, rollup: _Rollup, now: datetime) -> int:
        with self.engine.begin() as conn:  # the watermark's row, so that the transactions below can lock it
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            conn.execute(insert(rollup_marks).values(name=rollup.name, last_id=0).on_conflict_do_nothing())
        total = 0
        src = rollup.source
        while True:
            with self.engine.begin() as conn:
                # a write first: SQLite takes its write lock now (waiting for another refresh's), PostgreSQL locks
                # the row; a second refresher then reads the watermark the first one committed, never an older one
                conn.execute(rollup_marks.update().where(rollup_marks.c.name == rollup.name)
                             .values(last_id=rollup_marks.c.last_id))
                mark = conn.execute(sa.select(rollup_marks).where(rollup_marks.c.name == rollup.name)).one()
                first = conn.execute(sa.select(sa.func.min(src.c.id)).where(src.c.id > mark.last_id)).scalar()
                if first is None:  # caught up
                    if mark.gap_since is not None:
                        conn.execute(rollup_marks.update().where(rollup_marks.c.name == rollup.name).values(gap_since=None))
                    return total
                if first != mark.last_id + 1 and mark.last_id > 0:  # a missing id right after the watermark
                    if mark.gap_since is None:
                        conn.execute(rollup_marks.update().where(rollup_marks.c.name == rollup.name).values(gap_since=now))
                        return total
                    if now - utc(mark.gap_since) < timedelta(seconds=GAP_GRACE_SECONDS):
                        return total  # perhaps still in flight: wait for it
                # the end of the unbroken run of ids from ``first`` (at most BATCH of them)
                successor = src.alias("successor")
                run_end = conn.execute(sa.select(sa.func.min(src.c.id)).where(
                    (src.c.id >= first) & (src.c.id < first + BATCH)
                    & ~sa.exists().where(successor.c.id == src.c.id + 1))).scalar()
                upto = run_end if run_end is not None else first + BATCH - 1
                hour = _hour(conn, src.c[rollup.time]).label("hour")
                keys = [src.c[k] for k in rollup.keys]
                rows = [{**{k: getattr(r, k) for k in rollup.keys}, "hour": _as_hour(r.hour), "count": int(r.n)}
                        for r in conn.execute(sa.select(*keys, hour, sa.func.count().label("n"))
                                              .where((src.c.id >= first) & (src.c.id <= upto)).group_by(*keys, hour))]
                if rows:
                    _upsert(conn, rollup.target, rollup.keys, rows)
                conn.execute(rollup_marks.update().where(rollup_marks.c.name == rollup.name)
                             .values(last_id=upto, gap_since=None))
                total += sum(r["count"] for r in rows)

    @db("read the monitor's counts in")
    def decision_hours(self, policy: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Decisions per policy version, arm and hour (``hour`` aware, UTC, start of the hour), oldest hour first,
        as of the worker's last refresh."""
        query = sa.select(decision_hours)
        if policy is not None:
            query = query.where(decision_hours.c.policy == policy)
        if since is not None:
            query = query.where(decision_hours.c.hour >= _stored(since))
        query = query.order_by(decision_hours.c.hour, decision_hours.c.policy, decision_hours.c.version,
                               decision_hours.c.arm)
        with self._read() as conn:
            return [{"policy": r.policy, "version": r.version, "arm": r.arm, "hour": utc(r.hour), "count": r.count}
                    for r in conn.execute(query)]

    @db("read the monitor's counts in")
    def outcome_hours(self, experiment: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Outcomes per experiment, metric and hour (``hour`` aware, UTC), oldest hour first, as of the last refresh."""
        query = sa.select(outcome_hours)
        if experiment is not None:
            query = query.where(outcome_hours.c.experiment == experiment)
        if since is not None:
            query = query.where(outcome_hours.c.hour >= _stored(since))
        query = query.order_by(outcome_hours.c.hour, outcome_hours.c.experiment, outcome_hours.c.metric)
        with self._read() as conn:
            return [{"experiment": r.experiment, "metric": r.metric, "hour": utc(r.hour), "count": r.count}
                    for r in conn.execute(query)]

    @db("read the monitor's counts in")
    def rollup_marks(self) -> dict[str, int]:
        """The id of the last decision / outcome each rollup has counted."""
        with self._read() as conn:
            return {r.name: r.last_id for r in conn.execute(sa.select(rollup_marks))}


def _stored(moment: datetime) -> datetime:
    """A bound for a comparison with stored hours: UTC (SQLite compares the text pex stored, which is UTC)."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
