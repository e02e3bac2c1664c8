"""The monitor's hourly rollups equal a direct count of the decision log and the outcomes, refresh after refresh,
never counting a row twice (also with refreshes racing) and waiting for ids that may still commit."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from pex.services.rollups import refresh
from pex.store import rollups
from pex.store.schema import decisions, outcomes
from pex.store.workspace import Workspace

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def add_decisions(ws: Workspace, n: int, start: int, ids: list[int] | None = None) -> None:
    """``n`` decisions spread over three hours, two policies' versions and two arms (``ids``: explicit row ids)."""
    rows = [{"decision_id": f"d{start + i}", "decided_at": T0 + timedelta(minutes=37 * (start + i) % 180),
             "experiment": "exp", "policy": "p" if (start + i) % 3 else "q", "version": 1 + (start + i) % 2,
             "unit": f"u{start + i}", "arm": "treat" if (start + i) % 5 < 2 else "control", "propensity": 0.5,
             "features": {}} for i in range(n)]
    if ids is not None:
        rows = [{**row, "id": i} for row, i in zip(rows, ids, strict=True)]
    if rows:
        with ws.engine.begin() as conn:
            conn.execute(decisions.insert(), rows)


def add_outcomes(ws: Workspace, n: int, start: int) -> None:
    if n == 0:
        return
    with ws.engine.begin() as conn:
        conn.execute(outcomes.insert(), [
            {"experiment": "exp", "unit": f"u{start + i}", "metric": "sessions" if i % 4 else "revenue",
             "value": 1.0, "recorded_at": T0 + timedelta(minutes=23 * (start + i) % 240)} for i in range(n)])


def direct_decisions(ws: Workspace) -> Counter:
    with ws._read() as conn:
        rows = conn.execute(sa.select(decisions.c.policy, decisions.c.version, decisions.c.arm,
                                      decisions.c.decided_at)).all()
    def hour(at: datetime) -> datetime:  # SQLite hands back naive UTC, PostgreSQL aware times
        at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        return at.replace(minute=0, second=0, microsecond=0)

    return Counter((r.policy, r.version, r.arm, hour(r.decided_at)) for r in rows)


def rolled_decisions(ws: Workspace, **kw) -> Counter:
    return Counter({(r["policy"], r["version"], r["arm"], r["hour"]): r["count"] for r in ws.decision_hours(**kw)})


def test_counts_equal_a_direct_count_after_every_refresh_with_new_rows_in_between(ws_home):
    with Workspace(ws_home) as ws:
        assert refresh(ws) == {"decision_hours": 0, "outcome_hours": 0} and ws.decision_hours() == []
        start = 0
        for batch in (50, 1, 0, 333, 20):
            add_decisions(ws, batch, start)
            add_outcomes(ws, batch // 2, start)
            start += batch
            counted = refresh(ws)
            assert counted["decision_hours"] == batch
            assert rolled_decisions(ws) == direct_decisions(ws)
            assert refresh(ws) == {"decision_hours": 0, "outcome_hours": 0}  # again at once: nothing new, nothing twice
            assert rolled_decisions(ws) == direct_decisions(ws)
        assert sum(r["count"] for r in ws.decision_hours()) == start
        assert sum(r["count"] for r in ws.outcome_hours()) == sum(b // 2 for b in (50, 1, 0, 333, 20))
        assert ws.rollup_marks()["decision_hours"] == start
        # the readers' filters, and aware hours at the start of the hour
        p_only = rolled_decisions(ws, policy="p")
        assert p_only and all(k[0] == "p" for k in p_only)
        late = ws.decision_hours(since=T0 + timedelta(hours=2))
        assert late and all(r["hour"] >= T0 + timedelta(hours=2) and r["hour"].tzinfo is not None for r in late)
        assert all(r["hour"].minute == 0 for r in ws.decision_hours())
        revenue = ws.outcome_hours(experiment="exp")
        assert {r["metric"] for r in revenue} == {"sessions", "revenue"} and ws.outcome_hours(experiment="other") == []


def test_refreshes_racing_never_count_a_row_twice(ws_home):
    with Workspace(ws_home) as ws:
        add_decisions(ws, 2_000, 0)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def go() -> None:
        with Workspace(ws_home) as own:
            start.wait()
            for _ in range(3):
                try:
                    own.refresh_rollups()
                except Exception as exc:  # a busy workspace is fine (the worker retries); a double count is not
                    errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with Workspace(ws_home) as ws:
        ws.refresh_rollups()
        assert rolled_decisions(ws) == direct_decisions(ws)
        assert sum(r["count"] for r in ws.decision_hours()) == 2_000
    assert all("busy" in str(e) for e in errors), errors


def test_a_missing_id_is_waited_for_then_stepped_over(ws_home, monkeypatch):
    """Rows 1-10 counted; 11 missing (on PostgreSQL: a transaction still in flight), 12-15 present. The refresh stops
    before 11; when 11 commits it is counted; a gap that never fills is stepped over after the grace period."""
    with Workspace(ws_home) as ws:
        add_decisions(ws, 10, 0, ids=list(range(1, 11)))
        assert ws.refresh_rollups()["decision_hours"] == 10
        add_decisions(ws, 4, 11, ids=[12, 13, 14, 15])
        assert ws.refresh_rollups()["decision_hours"] == 0  # waits for 11
        add_decisions(ws, 1, 10, ids=[11])  # "commits late"
        assert ws.refresh_rollups()["decision_hours"] == 5
        assert rolled_decisions(ws) == direct_decisions(ws)
        add_decisions(ws, 2, 20, ids=[17, 18])  # 16 never comes (a rolled-back insert)
        now = datetime.now(UTC)
        assert ws.refresh_rollups(now)["decision_hours"] == 0
        assert ws.refresh_rollups(now + timedelta(seconds=rollups.GAP_GRACE_SECONDS / 2))["decision_hours"] == 0
        assert ws.refresh_rollups(now + timedelta(seconds=rollups.GAP_GRACE_SECONDS + 1))["decision_hours"] == 2
        assert rolled_decisions(ws) == direct_decisions(ws) and ws.rollup_marks()["decision_hours"] == 18


@pytest.mark.parametrize("batch", [7])
def test_a_long_backlog_is_counted_in_bounded_transactions(ws_home, monkeypatch, batch):
    monkeypatch.setattr(rollups, "BATCH", batch)
    with Workspace(ws_home) as ws:
        add_decisions(ws, 100, 0)
        assert ws.refresh_rollups()["decision_hours"] == 100
        assert rolled_decisions(ws) == direct_decisions(ws)


@pytest.mark.postgres
def test_counts_equal_a_direct_count_on_postgresql(tmp_path, empty_postgres_url):
    with Workspace(tmp_path / "ws", database_url=empty_postgres_url) as ws:
        from pex.store.schema import experiments

        with ws.engine.begin() as conn:  # outcomes name their experiment (a foreign key)
            conn.execute(experiments.insert().values(name="exp", description="", owner="", spec={},
                                                     created_at=T0, updated_at=T0))
        start = 0
        for batch in (40, 3, 120):
            add_decisions(ws, batch, start)
            add_outcomes(ws, batch, start)
            start += batch
            assert refresh(ws) == {"decision_hours": batch, "outcome_hours": batch}
            assert rolled_decisions(ws) == direct_decisions(ws)
        assert all(r["hour"].tzinfo is not None and r["hour"].minute == 0 for r in ws.decision_hours())
        assert sum(r["count"] for r in ws.outcome_hours("exp")) == start
