"""The online loop page of the web UI (``/ui/experiments/<name>/online`` and its ``.json`` twin): per round and arm
its role, units, lift over the holdout with its 95% CI and guardrail certification under the loop's error control;
the pick and why; offline estimates labelled in-sample; what an admin can do next (start the loop, complete a round,
open the next, promote the pick). Built from :func:`pex.services.online.status`, the same data as
``pex online status``.
"""

from __future__ import annotations

from typing import Any

from pex.errors import NotFoundError
from pex.report.numbers import fmt_num, fmt_pct, fmt_signed
from pex.services import jobs, online
from pex.services.pages.times import when
from pex.services.settings import DEFAULTS
from pex.store.workspace import Workspace

WHAT = ("The online loop tests candidate policies live, in rounds. Each round serves a holdout that keeps control and "
        "a few candidate policies, all under one policy name the decision API answers for; when enough outcomes have "
        "come back, completing the round measures every candidate against the holdout and asks Ax (Bayesian "
        "optimisation) for the next candidates. Promoting publishes the best arm certified so far under the same name.")
HOW_TO_START = ("Start the loop: round 1 is opened and published at once as {policy}; callers of the decision API ask "
                "that name. Then let traffic and outcomes arrive, and complete the round.")
# a role in one word for the table (the terms above the table explain them), and what it means for the twin
ROLES = {"holdout": "holdout", "candidate": "candidate", "champion": "champion"}
ROLE_MEANING = {"holdout": "keeps control: the comparison of every arm", "candidate": "proposed for this round"}
ONLINE_KINDS = ("online_start", "online_complete")
ACTIVE = ("queued", "running")
EMPTY = "–"


def _short(route: str, policy: str) -> str:
    return route[len(policy) + 1:] if route.startswith(policy + "-") else route


def _role_meaning(arm: dict[str, Any], round_: int) -> str:
    if arm["role"] != "champion":
        return ROLE_MEANING.get(arm["role"], "")
    # round 1's champion is what the offline search alone would ship; later, the previous round's pick served again
    return "the offline pick" if round_ == 1 else f"round {round_ - 1}'s pick, served again to fresh units"


def _lift(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "no outcomes"
    # two significant digits keep the table narrow; the raw lifts are in the round's results in the twin
    return f"{fmt_signed(cell['estimate'], 2)} ({fmt_signed(cell['ci_low'], 2)} to {fmt_signed(cell['ci_high'], 2)})"


def _harm(h: dict[str, Any], relative: bool) -> str:
    show = fmt_pct if relative else fmt_signed
    limit = fmt_pct(h["limit"], signed=False) if relative else fmt_num(h["limit"])
    word = {"pass": "kept", "fail": "broken", "inconclusive": "inconclusive"}[h["verdict"]]
    return f"{word} (bound {show(h['upper'])}, limit {limit})"


def _offline(arm: dict[str, Any]) -> str:
    off = arm.get("offline")
    if not off:
        return EMPTY
    parts = ", ".join(f"{m} {fmt_signed(v, 3)}" for m, v in (off.get("objectives") or {}).items())
    return f"in-sample (offline): {parts}" + (" (the offline pick)" if off.get("offline_pick") else "")


def _arm_rows(status: dict[str, Any]) -> tuple[list[dict[str, Any]], list[list[str]]]:
    s, policy = status["settings"], status["policy"]
    objectives, rails = list(s["objectives"]), list(s["guardrails"])
    relative = {g: (s["guardrails"][g] or {}).get("basis", "relative") == "relative" for g in rails}
    judged = {(j["round"], j["route"]): j for j in status["judged"]}
    rows = []
    for r in status["rounds"]:
        results = r.get("results") or {}
        for arm in r["arms"]:
            got = (results.get("arms") or {}).get(arm["route"])
            verdict = judged.get((r["round"], arm["route"]))
            row: dict[str, Any] = {
                "round": r["round"], "arm": _short(arm["route"], policy), "route": arm["route"],
                "role": ROLES.get(arm["role"], arm["role"]), "role_meaning": _role_meaning(arm, r["round"]),
                "share": fmt_pct(arm.get("share"), signed=False),
                "units": fmt_num(got["units"]) if got else ("waiting for traffic" if r["status"] == "open" else EMPTY),
                "offline": _offline(arm),
            }
            for m in objectives:
                row[f"lift__{m}"] = _lift(got["metrics"][m].get("lift")) if got else EMPTY
            for g in rails:
                if verdict is not None and g in verdict["harms"]:
                    row[f"guardrail__{g}"] = _harm(verdict["harms"][g], relative[g])
                elif got and g in (got.get("harms") or {}):
                    row[f"guardrail__{g}"] = _harm(got["harms"][g], relative[g])
                else:
                    row[f"guardrail__{g}"] = EMPTY
            if arm["role"] == "holdout":
                row["certified"] = "not needed (the comparison)"
            elif got and got.get("abandoned"):
                row["certified"] = "abandoned (no outcomes to measure)"
            elif verdict is not None:
                row["certified"] = (f"certified at {fmt_pct(verdict['level'], signed=False)}" if verdict["certified"]
                                    else f"not certified at {fmt_pct(verdict['level'], signed=False)}")
            else:
                row["certified"] = "not measured yet"
            rows.append(row)
    # the round is in the arm's name (r1-a2), its share in the round's settings; the offline estimates have a table
    columns = ([["arm", "Arm"], ["role", "Role"], ["units", "Units"]]
               + [[f"lift__{m}", f"{m} lift"] for m in objectives]
               + [[f"guardrail__{g}", f"{g} guardrail"] for g in rails]
               + [["certified", "Certified?"]])
    return rows, columns


def _rounds(status: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in status["rounds"]:
        res = r.get("results") or {}
        returning = (res.get("log") or {}).get("returning_units") or 0
        serving = status["live_version"] == r["policy_version"]
        out.append({"round": r["round"], "version": f"v{r['policy_version']}",
                    "status": r["status"] + (", serving now" if serving else ""), "serving": serving,
                    "units": fmt_num(res["rows"]) if res else "waiting for traffic and outcomes",
                    "left_out": fmt_num(returning) if res else EMPTY,
                    "opened": r["opened_at"][:16].replace("T", " "),
                    "completed": r["completed_at"][:16].replace("T", " ") if r["completed_at"] else EMPTY})
    return out


def _jobs(ws: Workspace, experiment: str) -> list[dict[str, Any]]:
    return [{"id": j.id, "kind": j.kind, "status": j.status, "actor": j.actor, "active": j.status in ACTIVE,
             "created": when(j.created_at), "message": j.message or ""}
            for j in jobs.list_jobs(ws, experiment, limit=20) if j.kind in ONLINE_KINDS][:5]


def _busy(recent: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The loop's job that is queued or running, if any: while it works, the page offers no other round action (a
    second one would only fail, or act on a state about to change)."""
    return next((j for j in recent if j["active"]), None)


def online_page(ws: Workspace, experiment: str) -> dict[str, Any]:
    """The online loop page's dict: see the module's docstring."""
    ws.dataset_version(experiment)  # NotFoundError for an unknown experiment
    policy = experiment + online.SUFFIX
    recent = _jobs(ws, experiment)
    busy = _busy(recent)
    base = {"experiment": experiment, "policy": policy, "what": WHAT, "jobs": recent, "busy": busy,
            "refresh_seconds": DEFAULTS["REFRESH_SECONDS"]}
    try:
        status = online.status(ws, experiment)
    except NotFoundError:
        return {**base, "has_loop": False, "how_to_start": HOW_TO_START.format(policy=policy), "rounds": [], "arms": [],
                "arms_columns": [], "offline": [], "actions": {"start": busy is None, "complete": False, "next": False, "promote": None}}
    s, plan = status["settings"], status["spending"]
    rounds = status["rounds"]
    newest = rounds[-1]
    arms, columns = _arm_rows(status)
    best = status["best"]
    chosen = best.get("chosen")
    pick = _short(chosen["route"], policy) if chosen else "control"
    live = status["live_version"]
    try:
        next_version = ws.get_policy(policy).version + 1
    except NotFoundError:
        next_version = 1
    done = [r for r in rounds if r["status"] == "complete"]
    promote = None
    if done:
        promote = {"pick": pick, "label": f"Promote the pick ({pick})",
                   "confirm": (f"{policy}: " + (f"v{next_version} becomes live (nothing is live now)" if live is None
                                                else f"v{live} -> v{next_version}") + " "
                               f"({pick}, promoted) on every server within seconds: every unit gets {pick}'s decisions "
                               "and the loop's rounds stop being served.")}
    live_text = ("nothing live" if live is None else
                 f"v{live}, round {status['live_round']}" if status.get("live_round") else f"v{live} (a promoted arm)")
    return {
        **base, "has_loop": True,
        "settings": {"arms": s["arms"], "holdout": fmt_pct(s["holdout"], signed=False),
                     "exploration": fmt_pct(s["exploration"], signed=False), "rounds": plan["rounds"],
                     "alpha": f"{plan['alpha']:g}", "per_round": f"{plan['per_round']:.4g}",
                     "completed": plan["completed"], "objectives": ", ".join(s["objectives"]),
                     "guardrails": ", ".join(s["guardrails"]) or "none"},
        "live": live_text, "live_version": live,
        "rounds": _rounds(status), "arms": arms, "arms_columns": columns,
        "offline": [{"arm": a["arm"], "role": a["role"], "offline": a["offline"]} for a in arms if a["offline"] != EMPTY],
        "pick": {"arm": pick, "why": best["why"], "code": best.get("code", ""),
                 "front": ", ".join(f"{_short(p['route'], policy)} (round {p['round']})" for p in status["pareto"])},
        "actions": {"start": False, "complete": busy is None and newest["status"] == "open",
                    "next": busy is None and newest["status"] == "complete" and newest["round"] < plan["rounds"],
                    "round": newest["round"], "promote": promote if busy is None else None},
    }
