"""The watcher: one pass over the live lifecycle, run by `pex monitor --watch` and by the worker when idle.

Each :func:`tick` checks every running rollout (:func:`pex.services.rollout.check`: advance, complete, roll back
or hold) and refreshes the stored monitor report of every live policy at most every :data:`MONITOR_EVERY`
seconds. One rollout's failure (a workspace busy, a version published by hand in between) is reported and the
others still get checked: a watcher must not stop watching.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pex.errors import PexError
from pex.services import rollout
from pex.store.workspace import Workspace

MONITOR_EVERY = 300.0  # seconds between two monitor reports of one live policy


def tick(ws: Workspace, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Check every running rollout, then refresh stale monitor reports; returns what was done per policy."""
    say = say or (lambda m: None)
    checked: dict[str, Any] = {}
    for name in rollout.running(ws):
        try:
            found = rollout.check(ws, name)
        except PexError as exc:
            checked[name] = {"error": exc.message}
            say(f"rollout of {name}: {exc.message}")
            continue
        action = (found.get("last_check") or {}).get("action") or {}
        checked[name] = {"status": found["status"], "step": found["step"], "action": action}
        if action.get("action") not in (None, "hold"):
            say(f"rollout of {name}: {action['action']} ({action.get('reason', '')})")
    return {"rollouts": checked, "monitored": _monitor(ws, say)}


def _monitor(ws: Workspace, say: Callable[[str], None]) -> dict[str, Any]:
    try:  # the drift monitor lives in its own service; a workspace without it only checks rollouts
        from pex.services.monitoring import latest_reports, monitor
    except ImportError:
        return {}
    done: dict[str, Any] = {}
    try:
        latest = latest_reports(ws)
    except PexError as exc:
        say(f"could not read the monitor reports: {exc.message}")
        return {}
    now = datetime.now(UTC)
    for name in ws.live_versions():
        report = latest.get(name)
        if report is not None and (now - _when(report["created_at"])).total_seconds() < MONITOR_EVERY:
            continue
        try:
            monitor(ws, name)
            done[name] = "refreshed"
        except PexError as exc:  # e.g. no decisions since the version went out
            done[name] = exc.message
    return done


def _when(value: Any) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
