"""The monitor's hourly counts (decisions per policy version and arm, outcomes per metric), kept by the worker.

The counting itself, and why it never counts a row twice nor skips one committed late, is
:mod:`pex.store.rollups`; the background worker calls :func:`refresh` every loop and every few seconds while a job
runs, so the monitor page reads counts at most a few seconds old (``pex worker --once`` refreshes them too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pex.store.workspace import Workspace


def refresh(ws: Workspace) -> dict[str, int]:
    """Add the decisions and outcomes stored since the last refresh to the hourly counts; the rows counted per
    rollup (``decision_hours``, ``outcome_hours``)."""
    return ws.refresh_rollups()


def decision_hours(ws: Workspace, policy: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    """Decisions per policy, version, arm and hour (UTC, start of the hour), oldest first, as of the last refresh."""
    return ws.decision_hours(policy, since)


def outcome_hours(ws: Workspace, experiment: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    """Outcomes per experiment, metric and hour (UTC), oldest first, as of the last refresh."""
    return ws.outcome_hours(experiment, since)
