"""The decision log and the outcomes reported back: append-only tables that many serving processes write at once.

Nothing here takes the workspace lock or allocates a number: a decision is identified by the id its response
carried, so appends from several workers (and, with PostgreSQL, several hosts) never contend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from pex.errors import DataError, NotFoundError
from pex.store.engine import db
from pex.store.schema import decisions, experiments, outcomes

# what a store raises for a value it cannot hold (the row's fault, not the store's): the driver's data and integrity
# errors, and the encoding of a parameter (a lone surrogate in text is a UnicodeEncodeError, a ValueError, raised
# by sqlite3 before SQLAlchemy sees it); OperationalError and the like mean the store is down and stay StoreErrors
REFUSED = (sa.exc.DataError, sa.exc.IntegrityError, ValueError, TypeError)

# rows per INSERT statement: large enough to amortise the round trip, small enough to keep each statement short
INSERT_CHUNK = 5_000


class DecisionsMixin:
    """Workspace methods for the decision log and outcomes."""

    @db("append to the decision log of")
    def append_decisions(self, rows: Sequence[dict[str, Any]]) -> int:
        """Append decisions (dicts with the columns of ``decisions`` but ``id``) in one transaction; returns the count.

        All or nothing, and the two ways to fail differ: a :class:`~pex.errors.DataError` when the store refuses a
        row of this batch (a value it cannot hold: the same rows fail again, so the caller isolates the bad ones),
        a :class:`~pex.errors.StoreError` when the store cannot be written at all (down, locked, disk full, or the
        workspace replaced under this process: the same rows may succeed later).
        """
        self.check_identity()
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    _append_sqlite(conn, rows)
                else:
                    for start in range(0, len(rows), INSERT_CHUNK):
                        conn.execute(decisions.insert(), [{"route": None, "fallback": None, **r}
                                                          for r in rows[start:start + INSERT_CHUNK]])
        except REFUSED as exc:
            raise DataError(f"the decision log refused a row of this batch ({exc.__class__.__name__}: {_first_line(exc)})"[:500],
                            "the row holds a value the database cannot store") from None
        return len(rows)

    @db("read the decision log of")
    def read_decisions(self, experiment: str | None = None, policy: str | None = None) -> pd.DataFrame:
        """Logged decisions (optionally of one experiment and/or policy), oldest first, as a frame; ``fallback`` is
        True for a decision answered with the policy's fallback arm because its live version could not be loaded."""
        query = sa.select(decisions.c.decision_id, decisions.c.decided_at, decisions.c.experiment, decisions.c.policy,
                          decisions.c.version, decisions.c.unit, decisions.c.arm, decisions.c.propensity,
                          decisions.c.features, decisions.c.route, decisions.c.fallback)
        if experiment is not None:
            query = query.where(decisions.c.experiment == experiment)
        if policy is not None:
            query = query.where(decisions.c.policy == policy)
        with self._read() as conn:
            rows = conn.execute(query.order_by(decisions.c.id)).all()
        frame = pd.DataFrame(rows, columns=["decision_id", "decided_at", "experiment", "policy", "version", "unit", "arm",
                                            "propensity", "features", "route", "fallback"])
        frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)  # SQLite hands them back without a zone
        frame["fallback"] = frame["fallback"].eq(True)  # stored only when true (NULL for every decision served normally)
        return frame

    @db("count the decision log of")
    def count_decisions(self, policy: str | None = None) -> int:
        """How many decisions are logged (of one policy, when given)."""
        query = sa.select(sa.func.count()).select_from(decisions)
        if policy is not None:
            query = query.where(decisions.c.policy == policy)
        with self._read() as conn:
            return int(conn.execute(query).scalar())

    @db("record outcomes in")
    def put_outcomes(self, experiment: str, records: Iterable[tuple[str, str, float]]) -> int:
        """Append (unit, metric, value) outcomes of an experiment in one transaction; returns the count."""
        self.check_identity()  # a server whose workspace was removed must not answer success for outcomes
        now = datetime.now(UTC)
        rows = [{"experiment": experiment, "unit": u, "metric": m, "value": v, "recorded_at": now} for u, m, v in records]
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(experiments.c.name).where(experiments.c.name == experiment)).first() is None:
                    raise NotFoundError(f"no experiment {experiment!r} in this workspace",
                                        "ingest it first with `pex ingest SPEC`")
                for start in range(0, len(rows), INSERT_CHUNK):
                    conn.execute(outcomes.insert(), rows[start:start + INSERT_CHUNK])
        except REFUSED as exc:  # the caller's values (all or none are stored): a 422, not a failing store
            raise DataError(f"the store refused these outcomes ({exc.__class__.__name__}: {_first_line(exc)})"[:500],
                            "send unit ids and metric names as plain text") from None
        return len(rows)

    @db("read the outcomes of")
    def read_outcomes(self, experiment: str) -> pd.DataFrame:
        """Every outcome recorded for an experiment, oldest first: unit, metric, value, recorded_at."""
        query = (sa.select(outcomes.c.unit, outcomes.c.metric, outcomes.c.value, outcomes.c.recorded_at)
                 .where(outcomes.c.experiment == experiment).order_by(outcomes.c.id))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame(rows, columns=["unit", "metric", "value", "recorded_at"])


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


_COLUMNS = ("decision_id", "decided_at", "experiment", "policy", "version", "unit", "arm", "propensity", "features", "route",
            "fallback")
_SQLITE_INSERT = f"INSERT INTO decisions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _append_sqlite(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """The rows as SQLAlchemy would store them (its SQLite text for timestamps in UTC, JSON text), through the
    driver's executemany: SQLAlchemy's own per-row processing costs 17 us a row here against 8 us, and a server
    logs up to 100,000 decisions a second. tests/store/test_serving_store.py reads such rows back through SQLAlchemy."""
    conn.exec_driver_sql(_SQLITE_INSERT, [
        (r["decision_id"], r["decided_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), r["experiment"],
         r["policy"], r["version"], r["unit"], r["arm"], r["propensity"], _dumps(r["features"]), r.get("route"),
         True if r.get("fallback") else None) for r in rows])
