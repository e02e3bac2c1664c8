"""The policies page of the web UI (``/ui/experiments/<name>/policies`` and its ``.json`` twin): the latest run's
recommendation, the comparison of its policies, the Pareto plot and the tree, what is live, the audit trail of
publishes and rollbacks, and what an admin may publish or roll back (with the exact change each would make).

Everything the page shows is in the dict :func:`policies_page` returns (display text next to the raw numbers), so
the page and its twin cannot disagree. :func:`publish_check` asks the publish gate
(:func:`pex.services.publishing.gate`, the one rule behind `pex publish` and the API too) whether a publish needs the
owner's extra confirmation: a version the gate does not pass goes live only as a forced publish, which the audit trail
records with who confirmed it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pex.errors import NotFoundError, PexError
from pex.evaluation.recommendation import CANNOT_CERTIFY
from pex.experiment.guardrail import Harm
from pex.report import charts
from pex.report.cells import base_kind, candidate_policies, tree_of
from pex.report.html import VERDICTS
from pex.report.numbers import fmt_num, fmt_pct, fmt_signed
from pex.report.summary import HarmCell, Interval, PolicyRow, RunSummary
from pex.services.pages.times import when
from pex.services.publishing import Judge
from pex.services.settings import DEFAULTS
from pex.store.releases import Release
from pex.store.workspace import Workspace

# How each guardrail verdict reads in the comparison table (words, never colour alone).
GUARDRAIL_WORDS = {"pass": "kept", "fail": "broken", "inconclusive": "inconclusive"}
STANDING_TONE = {"certified": "good", "fallback": "good", "not certified": "bad", "screened out": "bad",
                 "not tested": "unclear", "not a candidate": "unclear", "never tested": "unclear"}
STANDING_MEANING = {
    "certified": "every guardrail's upper bound is within its limit on units no model saw",
    "fallback": "everyone keeps control: it harms nothing, so it needs no certificate",
    "not certified": "tested on the held-out units, but a guardrail's upper bound is over its limit",
    "screened out": "dropped before the held-out test: its harm on the building units could not pass",
    "not tested": "the test sequence stopped before it, so it is neither certified nor rejected",
    "not a candidate": "shown for comparison; it was not offered to the recommendation",
    "never tested": "no run of this experiment tested this version",
}
NOTHING_LIVE = "nothing live"

# A run's summary never changes, so its charts (most of the page's time: matplotlib takes about a second for the
# Pareto plot) are drawn once per process, keyed by workspace folder, experiment, run and when it was written.
CHART_CACHE_ENTRIES = 8
_charts_cache: OrderedDict[tuple[str, str, str, str], dict[str, Any]] = OrderedDict()
_charts_lock = threading.Lock()


@dataclass(frozen=True)
class PublishCheck:
    """Whether publishing ``policy`` needs the owner's extra confirmation, and why (the run's standing of it)."""

    policy: str
    standing: str
    needs_confirmation: bool
    why: str


def _short(name: str, experiment: str) -> str:
    prefix = f"{experiment}-"
    return name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else name


def _version(v: int | None) -> str:
    return NOTHING_LIVE if v is None else f"v{v}"


def _summary(ws: Workspace, experiment: str) -> RunSummary | None:
    """The latest run's typed summary, or None when the experiment has no run yet (an unknown one: NotFoundError)."""
    ws.dataset_version(experiment)  # NotFoundError for an unknown experiment
    try:
        return RunSummary.load(ws.latest_run(experiment))
    except NotFoundError:
        return None


def _standing(s: RunSummary, name: str) -> str:
    """Where policy ``name`` stands in the run's recommendation; the recommendation carried over from an earlier run
    is certified by that run's certificate."""
    if name == s.recommendation.policy and name in s.recommendation.certification.certified:
        return "certified"
    row = s.by_name.get(name)
    return s.standing(row) if row is not None else "not a candidate"


def own_policy(ws: Workspace, experiment: str, policy: str) -> None:
    """NotFoundError unless ``policy`` is one of ``experiment``'s (an action on its page acts on its policies only)."""
    if policy not in {r.name for r in ws.list_policies(experiment)}:
        raise NotFoundError(f"experiment {experiment!r} has no policy {policy!r}",
                            "use the buttons of the experiment's policies page")


def publish_check(ws: Workspace, experiment: str, policy: str, version: int | None = None,
                  judge: Judge | None = None) -> PublishCheck:
    """Whether a publish of ``version`` of ``policy`` (of ``experiment``; default: the version a publish picks) needs
    an explicit extra confirmation: yes unless the publish gate passes it. A policy of another experiment is a
    NotFoundError."""
    own_policy(ws, experiment, policy)
    version = version if version is not None else ws.publish_target(policy)
    verdict = (judge or Judge(ws)).gate(policy, version)
    return PublishCheck(policy, verdict.standing, not verdict.certified, verdict.why)


def _interval_text(iv: Interval | None) -> str:
    if iv is None:
        return "–"
    if iv.estimate == 0 and iv.ci_low == 0 and iv.ci_high == 0:
        return "baseline (control itself)"
    # two significant digits keep the table within 800 px; the twin has the raw numbers next to the text
    return f"{fmt_signed(iv.estimate, 2)} ({fmt_signed(iv.ci_low, 2)} to {fmt_signed(iv.ci_high, 2)})"


def _guardrail_text(cell: HarmCell | None) -> str:
    """A guardrail cell in words: the one-sided upper bound of the harm against its limit, and the verdict."""
    if cell is None:
        return "–"
    show = fmt_pct if cell.relative else fmt_signed
    limit = fmt_pct(cell.limit, signed=False) if cell.relative else fmt_num(cell.limit)
    return f"{GUARDRAIL_WORDS[cell.verdict]} (bound {show(cell.upper)}, limit {limit})"


def _detail(p: PolicyRow) -> str:
    kind = p.base_kind
    text = {"tree": f"tree, depth {p.complexity}", "constant": f"everyone: {p.arm}" if p.arm else "random arm",
            "value": "value model"}.get(kind, kind)
    return f"{text}, cross-fitted" if p.kind == "routing" else text


def _comparison(s: RunSummary) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """One row per policy: lift over control per metric with its 95% CI, each guardrail's upper bound against its
    limit, and the standing in words; the columns as (field, label) pairs."""
    metrics = [m.name for m in s.metrics if m.role != "guardrail"]
    rails = list(dict.fromkeys(g for p in s.policies for g in p.guardrails))
    rows = []
    for p in s.policies:
        standing = s.standing(p)
        recommended = p.name == s.recommendation.policy and not s.carried_over
        row: dict[str, Any] = {
            "policy": _short(p.name, s.experiment) + (" (recommended)" if recommended else ""), "name": p.name,
            "version": p.version, "recommended": recommended, "kind": _detail(p), "standing": standing,
            "standing_tone": STANDING_TONE[standing], "standing_meaning": STANDING_MEANING[standing],
            "lift": {m: iv.model_dump() for m, iv in p.lift_vs_control.items()},
            "guardrails": {g: {"upper": c.upper, "limit": c.limit, "verdict": c.verdict, "basis": c.basis}
                           for g, c in p.guardrails.items()},
        }
        for m in metrics:
            row[f"lift__{m}"] = _interval_text(p.lift_vs_control.get(m))
        for g in rails:
            row[f"guardrail__{g}"] = _guardrail_text(p.guardrails.get(g))
        rows.append(row)
    # the kind stays in the twin; the table keeps to what decides (standing, lifts, guardrails), so it fits 800 px
    columns = ([["policy", "Policy"], ["standing", "Standing"]]
               + [[f"lift__{m}", f"{m} lift"] for m in metrics]
               + [[f"guardrail__{g}", f"{g} guardrail"] for g in rails])
    return rows, columns


def _units_to_certify(s: RunSummary) -> dict[str, Any] | None:
    """The experiment size that would certify the candidate that missed, if its harm is as estimated (from the
    engine's cannot-certify reason), or None when more units would not help or nothing missed."""
    reason = s.recommendation.reason(CANNOT_CERTIFY)
    if reason is None:
        return None
    needs = [n for h in (reason.params.get("harms") or {}).values()
             if not (harm := Harm.from_dict(h)).passed and (n := harm.units_to_certify())]
    if not needs:
        return None
    held_out = max(needs)
    share = reason.params.get("holdout_share")
    total = -(-held_out // share) if share and share < 1 else held_out
    return {"policy": reason.params.get("policy"), "held_out_units": int(held_out), "experiment_units": int(total),
            "text": f"about {fmt_num(int(total))} units in the experiment would certify {reason.params.get('policy')} "
                    "if its harm is as estimated"}


def _recommendation(s: RunSummary) -> dict[str, Any]:
    rec = s.recommendation
    cert = rec.certification
    alert, reasons = rec.alert_and_reasons()
    label, _ = VERDICTS[rec.verdict]
    certified = rec.policy in cert.certified
    return {"policy": rec.policy, "short": _short(rec.policy, s.experiment), "kind": rec.kind, "verdict": rec.verdict,
            "label": label, "headline": rec.headline, "certified": certified,
            "standing": _standing(s, rec.policy), "cannot_certify": bool(alert), "alert": alert, "reasons": reasons,
            "units_to_certify": _units_to_certify(s), "certification": cert.text,
            "from_run": rec.from_run.text if rec.from_run is not None else ""}


def _cached_charts(ws: Workspace, s: RunSummary) -> dict[str, Any]:
    """:func:`_charts` of a run, drawn once per process."""
    key = (str(ws.home.resolve()), s.experiment, str(s.history.id if s.history else ""), s.generated_at)
    with _charts_lock:
        if key in _charts_cache:
            _charts_cache.move_to_end(key)
            return dict(_charts_cache[key])
    drawn = _charts(s)
    with _charts_lock:
        _charts_cache[key] = drawn
        while len(_charts_cache) > CHART_CACHE_ENTRIES:
            _charts_cache.popitem(last=False)
    return dict(drawn)


def _charts(s: RunSummary) -> dict[str, Any]:
    """The Pareto plot of the weight search and a tree policy as a diagram (inline SVG with no inline style, for the
    UI's Content-Security-Policy), each with what it shows."""
    data = s.to_dict()
    colors = charts.arm_colors(s.arms, s.control)
    out: dict[str, Any] = {"pareto": "", "tree": "", "tree_policy": "", "tree_note": ""}
    pareto = data.get("pareto") or {}
    if pareto:
        candidates = list(pareto.get("candidates") or [])
        matched = candidate_policies(candidates, data["policies"], s.experiment)
        labels = {i: _short(p.get("name", ""), s.experiment) for i, p in matched.items()}
        rec = next((i for i, p in matched.items() if p.get("name") == s.recommendation.policy), None)
        out["pareto"] = charts.labelled(charts.without_inline_styles(charts.pareto_chart(pareto, labels, rec)),
                                        "Pareto front of the weight search over the goals")
    # the recommended policy's tree when it has one; else the distilled tree the run chose, which explains the value
    # model in a few questions; else any tree policy of the run
    rec = next((p for p in data["policies"] if p["name"] == s.recommendation.policy), None)
    chosen = [p for p in data["policies"] if (p.get("fidelity") or {}).get("chosen")]
    trees = [p for p in data["policies"] if base_kind(p) == "tree"]
    for candidate, note in [(rec, ""), *((p, "a tree distilled from the value model: its decisions in a few questions")
                                         for p in chosen), *((p, "") for p in trees)]:
        found = _split_tree(candidate) if candidate is not None else None
        if found is not None:
            tree, half = found
            out["tree"] = charts.labelled(charts.without_inline_styles(charts.tree_diagram(tree, colors)),
                                          f"The decision tree of {candidate['name']}")
            halves = (f"its half {half}: each half of this cross-fitted policy serves the units its own models never "
                      "saw") if half else ""
            out["tree_policy"], out["tree_note"] = candidate["name"], "; ".join(x for x in (note, halves) if x)
            break
    return out


def _split_tree(policy: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """A policy row's tree with at least one question and, for a cross-fitted policy, the name of the half it is
    (its first with a question; "" for a plain tree); None when it has none (a single leaf gives everyone one arm:
    the table says so in words)."""
    own = tree_of({"tree": policy.get("tree")})
    if isinstance(own, dict) and "feature" in own:
        return own, ""
    for route in policy.get("routes") or []:
        tree = route.get("tree")
        if isinstance(tree, dict) and "feature" in tree:
            return tree, str(route.get("name") or "")
    return None


def _audit(ws: Workspace, names: list[str], experiment: str) -> list[dict[str, Any]]:
    events: list[Release] = [r for n in names for r in ws.releases(n)]
    events.sort(key=lambda r: r.created_at, reverse=True)
    return [{"when": when(r.created_at), "at": r.created_at.isoformat(), "who": r.actor, "action": r.action,
             "policy": _short(r.policy, experiment), "name": r.policy, "from": _version(r.from_version),
             "to": _version(r.to_version), "note": r.note or ""} for r in events]


def _confirm(policy: str, live: int | None, version: int) -> str:
    seconds = DEFAULTS["REFRESH_SECONDS"]
    change = f"v{version} becomes live (nothing is live now)" if live is None else f"v{live} -> v{version}"
    return (f"{policy}: {change} on every server within seconds "
            f"(each server checks for a new version every {seconds:g} s by default).")


def policies_page(ws: Workspace, experiment: str) -> dict[str, Any]:
    """The policies page's dict: see the module's docstring."""
    s = _summary(ws, experiment)
    stored = ws.list_policies(experiment)
    names = [r.name for r in stored]
    newest = {r.name: r.version for r in stored}
    live_all = ws.live_versions()
    live_rows, rollbacks = [], []
    audit = _audit(ws, names, experiment)
    latest: dict[str, dict[str, Any]] = {}
    for r in audit:
        latest.setdefault(r["name"], r)
    for name in names:
        if name not in live_all:
            continue
        target = ws.rollback_target(name)
        event = latest.get(name) or {}
        live_rows.append({"policy": _short(name, experiment), "name": name, "live": f"v{live_all[name]}",
                          "live_version": live_all[name], "newest": f"v{newest[name]}", "since": event.get("when", ""),
                          "by": event.get("who", ""),
                          "rollback_to": _version(target) if target is not None else "nothing to roll back to"})
        if target is not None:
            rollbacks.append({"policy": name, "short": _short(name, experiment), "to_version": target,
                              "label": f"Roll back {_short(name, experiment)} to v{target}",
                              "confirm": f"{name} v{live_all[name]} -> v{target} (roll back) on every server within seconds."})
    publish = []
    judge = Judge(ws)
    if s is not None:
        rec = s.recommendation
        # the recommended version first: a carried-over recommendation is the earlier run's stored version
        carried = rec.from_run.version if rec.from_run is not None else None
        row = s.by_name.get(rec.policy)
        offer = [(rec.policy, carried or (row.version if row is not None else None))]
        offer += [(p.name, p.version) for p in s.policies if p.name != rec.policy]
        for name, version in offer:
            if name not in newest:
                continue  # a row the run did not store (nothing to publish)
            version = version or newest[name]
            if live_all.get(name) == version:
                continue
            check = publish_check(ws, experiment, name, version, judge)
            publish.append({"policy": name, "short": _short(name, experiment), "version": version,
                            "recommended": name == rec.policy, "standing": check.standing,
                            "needs_confirmation": check.needs_confirmation,
                            "label": f"Publish {_short(name, experiment)} v{version}"
                                     + (" (recommended)" if name == rec.policy else ""),
                            "confirm": _confirm(name, live_all.get(name), version),
                            "extra_confirm": (f"{name} v{version} is not certified: {check.why}. Publish it anyway? "
                                              "The audit trail records a forced publish, confirmed by you.")
                            if check.needs_confirmation else ""})
    rows, columns = _comparison(s) if s is not None else ([], [])
    return {
        "experiment": experiment,
        "has_run": s is not None,
        "run": {"generated_at": s.generated_at, "n_units": s.n_units, "history": s.history.text if s.history else ""}
        if s is not None else None,
        "recommendation": _recommendation(s) if s is not None else None,
        "comparison": rows, "comparison_columns": columns,
        "charts": _cached_charts(ws, s) if s is not None else {"pareto": "", "tree": "", "tree_policy": "", "tree_note": ""},
        "live": live_rows, "releases": audit,
        "publish": publish, "rollback": rollbacks,
        "refresh_seconds": DEFAULTS["REFRESH_SECONDS"],
    }


def refuse_uncertified(check: PublishCheck) -> PexError:
    """The error of a publish of an uncertified policy sent without the extra confirmation (400)."""
    return PexError(f"{check.policy} is not certified ({check.why}); it was not published",
                    "publish it from the policies page and tick the dialog's box that confirms you want an "
                    "uncertified policy live (the dialog needs JavaScript); or publish a certified policy")
