"""The live monitor of the web UI: ``/ui/monitor`` (every live policy) and ``/ui/monitor/<policy>`` (one policy's
decisions per hour stacked by arm over the last 48 hours, with its publishes and rollbacks marked, and the arrival of
its experiment's outcomes), each with its ``.json`` twin.

Counts come from the hourly rollups the worker keeps (:mod:`pex.services.rollups`), never from the decision log: a
page view reads at most 48 rows per arm and metric however much traffic the policy serves. So the page is as fresh as
the worker's last refresh, which it says. The same holds for drift, staleness, rollouts and alerts: the page reads the
stored monitor reports and each rollout's newest check (:func:`pex.services.checks.check` with ``measure=False``),
never computing drift or measuring a canary on a page view.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pex.errors import NotFoundError
from pex.report import charts
from pex.report.numbers import fmt_num
from pex.services import checks, monitoring, rollups
from pex.services.pages.times import when
from pex.store.workspace import Workspace

WINDOW_HOURS = 48
FRESHNESS = ("Counts come from hourly totals that the background worker (`pex worker`, or the one `pex ui` starts) "
             "brings up to date every few seconds; with no worker running they stop at its last refresh.")
ALERTS = ("The alert rules of `pex check` (docs/operations.md), judged on the stored monitor reports, the rollouts' "
          "newest checks and the hourly counts; `pex check` itself also measures running canaries and reads the server.")
VERDICTS = {"drifted": "drifted", "ok": "as in training"}


def _window(now: datetime | None) -> list[datetime]:
    """The starts of the last :data:`WINDOW_HOURS` UTC hours, the current one last."""
    top = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [top - timedelta(hours=WINDOW_HOURS - 1 - i) for i in range(WINDOW_HOURS)]


def _age(since: datetime, now: datetime) -> str:
    """How long a version has been live, in words ("3 d 4 h", "2 h 5 min", "under a minute")."""
    seconds = max(0, int((now - since).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    # never seconds: a page and its .json twin are built moments apart and must show the same words
    return f"{minutes} min" if minutes else "under a minute"


def _live_since(ws: Workspace, policy: str) -> tuple[datetime | None, str]:
    """When the live version became live and who made it so (its newest publish or rollback)."""
    events = ws.releases(policy)
    return (events[-1].created_at, events[-1].actor) if events else (None, "")


def _experiment_of(ws: Workspace, policy: str, version: int) -> tuple[str, list[str], str]:
    """The policy's experiment, its arms and default arm (as its live document states them)."""
    doc = ws.get_policy(policy, version).document
    return str(doc.get("experiment") or ""), [str(a) for a in doc.get("arms") or []], str(doc.get("default_arm") or "")


def monitor_page(ws: Workspace, now: datetime | None = None) -> dict[str, Any]:
    """Every live policy: its live version and age, its decisions and its experiment's outcomes in the last 48 h."""
    now = now or datetime.now(UTC)
    start = _window(now)[0]
    rows = []
    reports = monitoring.latest_reports(ws)
    drift_rows: list[dict[str, Any]] = []
    rollout_rows = [_rollout_row(r.to_dict()) for r in ws.running_rollouts()]
    for policy, version in sorted(ws.live_versions().items()):
        experiment, _, _ = _experiment_of(ws, policy, version)
        since, by = _live_since(ws, policy)
        decided = sum(r["count"] for r in rollups.decision_hours(ws, policy, start))
        arrived = sum(r["count"] for r in rollups.outcome_hours(ws, experiment, start)) if experiment else 0
        live = f"v{version}" + (f" for {_age(since, now)}, by {by}" if since else "")
        rows.append({"policy": policy, "experiment": experiment, "live": live, "live_version": version,
                     "since": when(since) if since else "", "age": _age(since, now) if since else "", "by": by,
                     "decisions": fmt_num(decided) if decided else "none", "decisions_count": decided,
                     "outcomes": fmt_num(arrived) if arrived else "none", "outcomes_count": arrived,
                     "activity": "serving" if decided else f"no decisions in the last {WINDOW_HOURS} h"})
        report = reports.get(policy)
        if report is not None and report.get("version") != version:
            report = None  # a report of an earlier version says nothing about what is live now
        ages = (report or {}).get("staleness") or (monitoring.staleness(ws, experiment, now=now).get("policies") or {}
                                                   ).get(policy)
        rows[-1].update(staleness=_staleness_text(ages), stale=bool((ages or {}).get("stale")),
                        monitored=when(_time(report["created_at"])) if report else "never")
        drift_rows += _drift_rows(policy, report)
    fired = checks.check(ws, now=now, measure=False)
    alerts = [{"rule": a.rule, "experiment": a.experiment, "policy": a.policy, "message": a.message,
               "owner": a.owner, "oncall": a.oncall} for a in fired.alerts]
    return {"window_hours": WINDOW_HOURS, "from": when(start), "policies": rows, "freshness": FRESHNESS,
            "drift": drift_rows, "rollouts": rollout_rows, "alerts": alerts, "not_checked": fired.not_checked,
            "alerts_note": ALERTS}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _staleness_text(ages: dict[str, Any] | None) -> str:
    """A live policy's staleness in words: which age is beyond the limit, or both ages and the limit."""
    if not ages:
        return "unknown"
    limit = ages.get("max_age_days")
    shown = ", ".join(f"{what} {ages[key]:.0f} d" for what, key in (("policy", "policy_age_days"),
                                                                  ("data", "data_age_days")) if ages.get(key) is not None)
    if ages.get("stale"):
        why = " and ".join(ages.get("why") or []) or "policy or data"
        return f"stale: {why} older than {limit} days ({shown})"
    return f"fresh ({shown}; limit {limit} d)"


def _drift_rows(policy: str, report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per feature of a stored monitor report: the feature, its figures and the verdict in words."""
    if report is None:
        return [{"policy": policy, "feature": "–", "figure": "–",
                 "verdict": "no monitor report of the live version yet (`pex monitor`)", "drifted": False}]
    rows = []
    for f in (report.get("drift") or {}).get("features") or []:
        figures = []
        if f.get("psi") is not None:
            figures.append(f"PSI {f['psi']:.3g}")
        if f.get("js") is not None:
            figures.append(f"JS {f['js']:.3g}")
        if f.get("missing_rate") is not None:
            figures.append(f"missing {100 * f['missing_rate']:.1f}% (training "
                           f"{100 * (f.get('training_missing_rate') or 0):.1f}%)")
        if f.get("unseen_rate"):
            figures.append(f"unseen {100 * f['unseen_rate']:.1f}%")
        flags = f.get("flags") or []
        verdict = VERDICTS.get(str(f.get("verdict")), str(f.get("verdict") or ""))
        if flags:
            verdict = f"drifted: {', '.join(flags)} beyond the limit"
        rows.append({"policy": policy, "feature": f["feature"], "figure": "; ".join(figures) or "–",
                     "verdict": verdict, "drifted": bool(f.get("drifted"))})
    return rows


def fmt(value: Any) -> str:
    """A harm figure (a relative change) with its sign, or "n/a"."""
    return "n/a" if value is None else f"{value:+.3g}"


def _rollout_row(rollout: dict[str, Any]) -> dict[str, Any]:
    """A running rollout as its newest check left it: step, share, guardrail bounds, agreement, last action."""
    last = rollout.get("last_check") or {}
    steps = rollout["steps"]
    harms = []
    for metric, h in sorted((last.get("sequential") or {}).items()):
        bound, estimate, limit = (fmt(h.get(k)) for k in ("upper", "estimate", "limit"))
        harms.append(f"{metric}: harm {estimate}, upper bound {bound}, limit {limit}: {h.get('verdict')}")
    agreement = [f"{m}: z = {a['z']:.2f}" + (" (disagree)" if a.get("flag") else "")
                 for m, a in sorted((last.get("agreement") or {}).items()) if a and a.get("z") is not None]
    action = last.get("action") or {}
    return {"policy": rollout["policy"], "step": f"{rollout['step'] + 1} of {len(steps)}",
            "share": f"{100 * steps[rollout['step']]:g}%",
            "guardrails": "; ".join(harms) or "not measured yet",
            "agreement": "; ".join(agreement) or "no offline estimate to compare yet",
            "last_action": (f"{action.get('action')}: {action.get('reason')}" if action else "no check yet")}


def policy_monitor_page(ws: Workspace, policy: str, now: datetime | None = None) -> dict[str, Any]:
    """One live policy over the last 48 h: decisions per hour by arm (chart and table), publish and rollback markers,
    its experiment's outcomes per hour by metric, the live version and its age."""
    now = now or datetime.now(UTC)
    live = ws.live_versions()
    if policy not in live:
        raise NotFoundError(f"policy {policy!r} is not live", "the monitor lists every live policy at /ui/monitor; "
                                                              "publish one from its experiment's policies page")
    version = live[policy]
    experiment, arms, default = _experiment_of(ws, policy, version)
    hours = _window(now)
    start = hours[0]
    index = {h: i for i, h in enumerate(hours)}
    decided = rollups.decision_hours(ws, policy, start)
    arrived = rollups.outcome_hours(ws, experiment, start) if experiment else []
    arms = arms + sorted({r["arm"] for r in decided} - set(arms))  # an arm of an earlier version stays visible
    metrics = sorted({r["metric"] for r in arrived})
    by_arm: dict[str, list[int]] = {a: [0] * len(hours) for a in arms}
    by_metric: dict[str, list[int]] = {m: [0] * len(hours) for m in metrics}
    versions: dict[int, set[int]] = defaultdict(set)
    for r in decided:
        if r["hour"] in index:
            by_arm[r["arm"]][index[r["hour"]]] += r["count"]
            versions[index[r["hour"]]].add(r["version"])
    for r in arrived:
        if r["hour"] in index:
            by_metric[r["metric"]][index[r["hour"]]] += r["count"]
    events = [e for e in ws.releases(policy) if e.created_at >= start]
    markers = [{"when": when(e.created_at), "at": e.created_at.isoformat(), "action": e.action,
                "from": "nothing live" if e.from_version is None else f"v{e.from_version}", "to": f"v{e.to_version}",
                "who": e.actor, "note": e.note or ""} for e in events]
    labels = [(e.created_at, f"{e.action} v{e.to_version}") for e in events]
    since, by = _live_since(ws, policy)
    table = []  # newest hour first: what happened last is what an owner looks for
    for i, hour in reversed(list(enumerate(hours))):
        total = sum(by_arm[a][i] for a in arms)
        outcomes = sum(by_metric[m][i] for m in metrics)
        if not total and not outcomes:
            continue  # the chart shows the empty hours; the table lists the hours with something in them
        row: dict[str, Any] = {"hour": hour.strftime("%Y-%m-%d %H:00"), "at": hour.isoformat(),
                               "versions": ", ".join(f"v{v}" for v in sorted(versions[i])) or "–",
                               "decisions": total, "outcomes": outcomes}
        row.update({f"arm__{a}": by_arm[a][i] for a in arms})
        table.append(row)
    total_decisions = sum(sum(v) for v in by_arm.values())
    total_outcomes = sum(sum(v) for v in by_metric.values())
    colors = charts.arm_colors(arms, default or None)
    return {
        "policy": policy, "experiment": experiment, "live_version": version, "live": f"v{version}",
        "since": when(since) if since else "", "age": _age(since, now) if since else "", "by": by,
        "window_hours": WINDOW_HOURS, "from": when(hours[0]), "to": when(hours[-1] + timedelta(hours=1)),
        "arms": arms, "metrics": metrics,
        "decisions": total_decisions, "outcomes": total_outcomes,
        "decisions_text": (f"{fmt_num(total_decisions)} decisions in the last {WINDOW_HOURS} h" if total_decisions
                           else f"No decisions in the last {WINDOW_HOURS} h."),
        "outcomes_text": (f"{fmt_num(total_outcomes)} outcomes of {experiment} reported in the last {WINDOW_HOURS} h"
                          if total_outcomes else f"No outcomes of {experiment} reported in the last {WINDOW_HOURS} h."),
        "hours": table,
        "hours_columns": ([["hour", "Hour (UTC)"], ["versions", "Version"]] + [[f"arm__{a}", a] for a in arms]
                          + [["decisions", "All decisions"], ["outcomes", "Outcomes"]]),
        "releases": markers,
        "charts": {
            "decisions": charts.labelled(charts.without_inline_styles(charts.decisions_chart(
                hours, by_arm, colors, labels, what="decisions", key="monitor-decisions")),
                f"Decisions of {policy} per hour by arm, last {WINDOW_HOURS} hours"),
            "outcomes": charts.labelled(charts.without_inline_styles(charts.decisions_chart(
                hours, by_metric, charts.arm_colors(metrics, None), labels, what="outcomes", key="monitor-outcomes")),
                f"Outcomes of {experiment} reported per hour by metric, last {WINDOW_HOURS} hours"),
        },
        "freshness": FRESHNESS, "alerts_note": "The alerts of every live policy are on the monitor's overview page.",
    }
