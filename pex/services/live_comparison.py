"""Live vs offline for the run report: what live traffic measured against the offline estimate that justified it.

A staged rollout's check (:func:`pex.services.rollout.check`) keeps, per metric, the agreement of the canary's lift
over the holdout with the recommending run's offline lift (:mod:`pex.monitor.agreement`) in the rollout's
``last_check``; an online round's completion (:func:`pex.services.online.offline_agreement`) keeps, per arm, the
agreement of its live lift and guardrail harm with the offline search's estimate in the round's results. The next
run on the experiment reports them (:class:`pex.report.summary.LiveComparison`) as they were stored: nothing is
measured again here, so a run never waits on the decision log.
"""

from __future__ import annotations

from typing import Any

from pex.errors import NotFoundError
from pex.store.rollouts import Rollout
from pex.store.workspace import Workspace

ROLLOUT_NOTE = ("Rollout: the canary's lift over the all-control holdout at its newest check, against the lift over "
                "control the run that judged the rolled-out version estimated offline.")
ONLINE_NOTE = ("Online loop: each arm's live lift over the holdout (goal-signed: positive is better) and guardrail "
               "harm at its round's completion, against the offline search's in-sample estimate that put the arm in "
               "the round (an optimistic one: the best of many points, measured on the units that chose it).")


def live_comparison(ws: Workspace, experiment: str) -> dict[str, Any] | None:
    """The stored live vs offline comparisons of ``experiment`` (the newest rollout of each of its policies, every
    completed round of its online loop) as :class:`pex.report.summary.LiveComparison` JSON; None when none is
    stored."""
    notes: dict[str, str] = {}
    rows = []
    for rollout in _newest_per_policy(ws.experiment_rollouts(experiment)):
        rows += _rollout_rows(rollout)
    if rows:
        notes["rollout"] = ROLLOUT_NOTE
    online = _online_rows(ws, experiment)
    if online:
        notes["online"] = ONLINE_NOTE
    rows += online
    return {"rows": rows, "notes": notes} if rows else None


def _newest_per_policy(rollouts: list[Rollout]) -> list[Rollout]:
    # an earlier rollout of the same policy was superseded by the newer one (its version was replaced or rolled back)
    newest = {r.policy: r for r in sorted(rollouts, key=lambda r: r.id)}
    return sorted(newest.values(), key=lambda r: r.id)


def _rollout_rows(rollout: Rollout) -> list[dict[str, Any]]:
    check = rollout.last_check or {}
    at = rollout.updated_at.isoformat()  # the newest check wrote last_check (a later stop keeps its figures)
    return [{"source": "rollout", "policy": rollout.policy, "version": rollout.new_version, "status": rollout.status,
             "step": check.get("step"), "share": check.get("share"), "metric": metric, "kind": "lift",
             **_figures(a), "measured_at": at}
            for metric, a in (check.get("agreement") or {}).items() if a]


def _online_rows(ws: Workspace, experiment: str) -> list[dict[str, Any]]:
    try:
        ws.get_loop(experiment)
    except NotFoundError:
        return []
    rows = []
    for r in ws.rounds(experiment):
        if r.status != "complete" or not r.results or r.completed_at is None:
            continue
        measured = r.results.get("arms") or {}
        for arm in r.arms:
            found = (measured.get(arm["route"]) or {}).get("agreement") or {}
            if not found.get("available"):
                continue  # an Ax proposal or a champion served again: no offline estimate put it there
            for metric, a in (found.get("metrics") or {}).items():
                rows.append({"source": "online", "policy": arm["policy"], "version": arm.get("version"),
                             "status": r.status, "round": r.round, "route": arm["route"], "metric": metric,
                             "kind": a["kind"], **_figures(a), "measured_at": r.completed_at.isoformat()})
    return rows


def _figures(a: dict[str, Any]) -> dict[str, Any]:
    """An :class:`pex.monitor.agreement.Agreement`'s JSON as the row keeps it."""
    return {"online_estimate": a["online_estimate"], "online_se": a["online_se"],
            "offline_estimate": a["offline_estimate"], "offline_se": a["offline_se"], "z": a["z"], "band": a["band"],
            "flag": bool(a["flag"])}
