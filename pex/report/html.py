"""The offline evaluation report: one self-contained HTML page rendered from a run's summary.

:func:`render_report` turns the JSON summary written by :func:`pex.services.run.run`
into a page an experiment owner reads top-down: the verdict first, then the
evidence behind it (data health, average effects, heterogeneity, segments,
policy comparison, the Pareto search, the policy itself), the caveats and, when
the experiment's policies were measured live (a staged rollout, an online
round), how those measurements compare with the offline estimates.
The page has no network dependencies: CSS is inline and charts are inline SVG
(:mod:`pex.report.charts`), so it can be mailed, archived or opened offline.
This module only assembles sections; the layout lives in
``pex/report/templates/report.html.j2``.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import jinja2
from markupsafe import Markup

from pex.evaluation.recommendation import CONSTANT_EQUIVALENT
from pex.experiment.guardrail import POWER
from pex.hte.heterogeneity import DIFFER
from pex.hte.learners import LEARNER_NAMES
from pex.report import charts
from pex.report.cells import base_kind, candidate_policies, tree_of
from pex.report.numbers import finite, fmt_num, fmt_p, fmt_pct, fmt_seconds, fmt_signed
from pex.report.summary import (
    ArmEffect,
    ArmGuardrail,
    Balance,
    Bounds,
    Certification,
    DatasetInfo,
    LiveRow,
    PolicyRow,
    RunSummary,
    Segment,
    Srm,
    as_summary,
)

METHOD_NAMES = {"ax": "Bayesian optimisation (Ax)", "dense": "dense random search", "kept": "kept front (all methods)"}
VERDICTS = {
    "personalize": ("Personalize", "personalize"),
    "ship_arm": ("Ship one arm to everyone", "ship"),
    "keep_control": ("Keep control", "keep"),
}
MAX_SEGMENTS = 6
MAX_BALANCE_ROWS = 6

_env: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        env = jinja2.Environment(loader=jinja2.PackageLoader("pex.report", "templates"), autoescape=True,
                                 undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.filters.update(num=fmt_num, signed=fmt_signed, pct=fmt_pct, pval=fmt_p, secs=fmt_seconds)
        _env = env
    return _env


# --------------------------------------------------------------------------- helpers


def _direction(metric_goal: str | None, lo: Any, hi: Any) -> str:
    """'good' / 'bad' when the whole interval is on one side of zero (given the goal), else ''."""
    if not (finite(lo) and finite(hi)):
        return ""
    sign = -1.0 if metric_goal == "decrease" else 1.0
    a, b = sorted((sign * lo, sign * hi))
    return "good" if a > 0 else "bad" if b < 0 else ""


def _interval(d: dict | None, goal: str | None = None, relative_to: Any = None, sig: int = 4) -> dict:
    """An estimate with its CI ready for the template (formatted strings + a good/bad class); ``sig`` digits for the CI."""
    d = d or {}
    est, lo, hi = d.get("estimate"), d.get("ci_low"), d.get("ci_high")
    if est == 0 and lo == 0 and hi == 0:  # a policy compared with itself
        return {"est": "baseline", "ci": "", "cls": "", "rel": ""}
    out = {"est": fmt_signed(est), "ci": f"{fmt_num(lo, sig)} to {fmt_num(hi, sig)}" if finite(lo) and finite(hi) else "",
           "cls": _direction(goal, lo, hi), "rel": ""}
    if finite(relative_to) and relative_to != 0 and finite(est):
        out["rel"] = fmt_pct(est / relative_to)
    return out


def _value_cell(d: dict | None, sig: int = 4) -> dict:
    d = d or {}
    lo, hi = d.get("ci_low"), d.get("ci_high")
    return {"est": fmt_num(d.get("estimate")), "ci": f"{fmt_num(lo, sig)} to {fmt_num(hi, sig)}" if finite(lo) and finite(hi) else "",
            "cls": "", "rel": ""}


def _short(name: str, experiment: str) -> str:
    prefix = f"{experiment}-"
    return name[len(prefix):] if experiment and name.startswith(prefix) and len(name) > len(prefix) else name


# What each guardrail verdict means, in the words of pex.experiment.guardrail's rule (one-sided bounds, not a two-sided CI).
VERDICT_MEANING = {
    "pass": "the upper bound is within the limit, so the guardrail is kept",
    "fail": "even the lower bound is beyond the limit, so the harm is established",
    "inconclusive": "the limit lies between the lower and upper bounds, so neither can be shown yet",
}


def _harm_fmt(g: dict):
    """How a cell's harms read: percent when relative to the control mean, the metric's units when absolute."""
    return fmt_pct if g["basis"] == "relative" else fmt_signed


def _limit_text(g: dict) -> str:
    """The limit the engine's rule judged the harm against (its ``limit``), in the cell's units."""
    return fmt_pct(g["limit"], signed=False) if g["basis"] == "relative" else fmt_num(g["limit"])


def _bound_name(level: Any) -> str:
    """'one-sided 95% upper bound' (no level when the cells shown were judged at different levels)."""
    return f"one-sided {fmt_pct(level, signed=False)} upper bound" if finite(level) else "upper bound"


def _arm_cell(g: dict) -> dict:
    """An arm's average-effect guardrail verdict (``pex analyze``) in the keys of a policy's cell (the engine's Harm)."""
    return {"metric": g["metric"], "estimate": g["harm"], "upper": g["harm_upper"], "limit": g["limit"],
            "basis": "relative" if g["basis"] == "relative" else "absolute", "level": g["level"], "verdict": g["verdict"],
            "units_to_certify": g["units_to_certify"]}


def _guardrail_cell(metric: str, g: dict) -> dict:
    """One guardrail of one policy or arm: harm, its one-sided upper bound against the limit, and the verdict."""
    verdict = g["verdict"]
    show = _harm_fmt(g)
    limit = _limit_text(g)
    detail = (f"harm {show(g['estimate'])}; {_bound_name(g['level'])} {show(g['upper'])} vs limit {limit}: "
              f"{VERDICT_MEANING[verdict]}")
    need = g["units_to_certify"]
    if verdict == "inconclusive" and finite(need):
        detail += f" (about {fmt_num(need)} units would certify it if the harm stayed as estimated)"
    return {"metric": metric, "verdict": verdict, "cls": verdict, "detail": detail, "harm": show(g["estimate"]),
            "upper": show(g["upper"]), "limit": limit}


def _guardrail_badges(rails: dict) -> list[dict]:
    return [_guardrail_cell(metric, g) for metric, g in rails.items()]


def _family_bounds(cert: Certification, name: str) -> str:
    """The family-level upper bounds of one candidate, e.g. 'at 97.5%: unsubscribes ≤ +2.26%'."""
    harms = cert.harms.get(name) or {}
    parts = [(f"{m} " if len(harms) > 1 else "") + f"upper {(fmt_pct if h.relative else fmt_signed)(h.upper)}"
             for m, h in harms.items()]
    # each bound at the level it was judged at (step-down raises it above the family's), else the family's
    level = next((h.level for h in harms.values()), cert.level)
    return ", ".join(parts) + f" at {fmt_pct(level, signed=False)}" if parts else ""


def _screen_text(screen: dict | None) -> str:
    """The building-units check of a policy row in words (its failing guardrails first)."""
    parts = []
    for m, c in sorted((screen or {}).items(), key=lambda kv: bool((kv[1] or {}).get("passed", True))):
        if not isinstance(c, dict):
            continue
        show = fmt_pct if finite(c.get("limit")) and c.get("limit") != 0 else fmt_signed
        parts.append(f"{m} harm {show(c.get('harm'))}, bound {show(c.get('bound'))} "
                     f"{'within' if c.get('passed', True) else 'over'} the {show(c.get('limit')).lstrip('+')} limit")
    return "on the building units: " + "; ".join(parts) if parts else ""


def _status(p: PolicyRow, s: RunSummary) -> dict:
    """A policy's standing in this run's certification (:meth:`RunSummary.standing`) as a badge with its reasons."""
    name, rec = p.name, s.judged
    cert = rec.certification
    standing = s.standing(p)
    if standing == "certified":
        return {"label": "certified", "cls": "yes", "key": "certified", "note": _family_bounds(cert, name),
                "title": f"every guardrail's one-sided upper bound is within its limit (tested {cert.procedure})"}
    if standing == "not tested":
        title = ("not tested: the sample-ratio check failed, so nothing was certified" if cert.srm_blocked else
                 "not tested: a candidate tested before it did not pass, and the procedure stops there")
        return {"label": "not tested", "cls": "no", "key": "family", "note": "", "title": title, "why": f"it was {title}"}
    if standing == "not certified":
        title = "tested on the held-out units, but some guardrail's upper bound, at the level it was tested at, is over its limit"
        return {"label": "not certified", "cls": "no", "key": "family", "note": _family_bounds(cert, name), "title": title,
                "why": f"it was {title} ({_family_bounds(cert, name)})"}
    if standing == "screened out":
        screen = f" ({_screen_text({m: c.model_dump() for m, c in p.screen.items()})})" if p.screen else ""
        return {"label": "screened out", "cls": "screened", "key": "screened", "note": "",
                "title": "dropped before the held-out test: its harm on the building units could not pass "
                         "even if the estimate were exact" + screen,
                "why": "it was screened out before the held-out test, because its harm on the building units could not pass "
                       "even if the estimate were exact" + screen}
    if standing == "fallback":
        return {"label": "fallback", "cls": "fallback", "key": "fallback", "note": "",
                "title": "everyone keeps control: it harms nothing, so it needs no certificate "
                         "and is chosen when nothing certified beats it"}
    same = rec.reason(CONSTANT_EQUIVALENT, policy=name)
    why = same.text if same is not None else (
        "a baseline for comparison" if p.kind == "constant" else
        "only the tree depth the distillation chose competes" if p.fidelity is not None else "not offered to the recommendation")
    return {"label": "not a candidate", "cls": "unknown", "key": "none", "note": "", "title": why}


def _arm_share_bar(shares: dict | None, colors: dict[str, str]) -> list[dict]:
    out = []
    for arm, share in (shares or {}).items():
        if finite(share) and share > 0:
            out.append({"arm": arm, "share": share, "pct": fmt_pct(share, signed=False), "color": colors.get(arm, charts.UNCLEAR),
                        "width": f"{100 * share:.2f}"})
    return out


# --------------------------------------------------------------------------- sections


def _verdict_section(s: RunSummary, colors: dict[str, str]) -> dict:
    rec = s.recommendation
    cert = rec.certification
    name = rec.policy
    # a recommendation carried over from an earlier run is that run's stored version: this run's row of the same name
    # is another version, so its numbers are not shown as the recommended policy's (the certificate below is that run's)
    entry = None if s.carried_over else s.by_name.get(name)
    label, cls = VERDICTS[rec.verdict]
    primary = rec.primary
    goal = next((m.goal for m in s.metrics if m.name == primary), None)
    rows = []
    for m in s.metrics:
        value = _plain(entry.value.get(m.name)) if entry else None
        vs_control = _plain(entry.lift_vs_control.get(m.name)) if entry else None
        control_value = value["estimate"] - vs_control["estimate"] if value and vs_control else None
        best = _plain(entry.lift_vs_best_arm.get(m.name)) if entry else None
        rows.append({"metric": m.name, "role": m.role, "goal": m.goal, "primary": m.name == primary,
                     "value": _value_cell(value), "vs_control": _interval(vs_control, m.goal, control_value),
                     "vs_best": _interval(best, m.goal, None)})
    best_note = ""
    best_arm = entry.best_arm if entry else None
    best_policy = next((p for p in s.policies if p.kind == "constant" and p.arm == best_arm), None)
    if best_arm and best_policy is not None and best_policy.name != name:
        status = _status(best_policy, s)
        if status["key"] in ("family", "screened"):
            best_note = f"Giving everyone {best_arm} is not an option: {status['why']} (see section 6)."
    objective = None
    if entry is not None and primary not in {m.name for m in s.metrics}:
        objective = _value_cell(_plain(entry.objective))
    alert, reasons = rec.alert_and_reasons()
    # the recommended policy's guardrails at the level that certified it, else its own 95% row
    family = cert.harms.get(name)
    cells = family or (entry.guardrails if entry else {})
    rails = _guardrail_badges({m: c.model_dump() for m, c in cells.items()})
    rails_level = next((c.level for c in cells.values()), cert.level if family else None)
    return {
        "policy": name, "short": _short(name, s.experiment), "kind": rec.kind,
        "verdict": rec.verdict, "label": label + (" · nothing certified" if rec.cannot_certify or cert.srm_blocked else ""), "cls": cls,
        "headline": rec.headline, "reasons": reasons, "primary": primary, "rows": rows, "objective": objective,
        "best_arm": best_arm, "file": entry.file if entry else f"policies/{name}.json",
        "guardrails": rails, "rails_bound": _bound_name(rails_level), "rails_family": bool(family),
        "shares": _arm_share_bar(entry.arm_shares if entry else {}, colors),
        "found": entry is not None, "exploration": entry.exploration if entry else None, "best_note": best_note,
        "cannot": bool(alert), "alert": alert,
        "cert": _certification_facts(s, entry, goal),
    }


def _plain(interval: Any) -> dict | None:
    """A typed interval as the plain values the cell helpers read."""
    return interval.model_dump() if interval is not None else None


def _certification_facts(s: RunSummary, entry: PolicyRow | None, goal: str | None) -> dict:
    """What "certified" means, which units and bounds the numbers rest on, and the recommended policy's value and lift
    with the family-level bounds."""
    rec = s.recommendation
    cert = rec.certification
    level = fmt_pct(cert.level, signed=False)
    if cert.k > 0:
        units = (f"The numbers in this box come from {cert.rows}. The {fmt_num(cert.k)} candidate{'s' if cert.k != 1 else ''} "
                 f"{'' if s.crossfit else 'that passed the building-units screen '}were tested there {cert.procedure}; "
                 "value and lift bounds are "
                 f"one-sided {fmt_pct(cert.lift_level, signed=False)}, so that they hold for every certified policy at once "
                 "(the choice among them is paid for).")
    elif cert.srm_blocked:
        units = (f"The numbers in this box come from {cert.rows}. The sample-ratio check failed, so no candidate was "
                 "tested there and the recommendation falls back to control.")
    else:
        units = (f"The numbers in this box come from {cert.rows}. No candidate was left to test there (none built, or all "
                 "screened out), so the recommendation falls back to control.")

    def bounded(d: Bounds, signed: bool) -> dict:
        show = fmt_signed if signed else fmt_num
        return {"est": show(d.estimate), "low": show(d.low), "high": show(d.high),
                "cls": _direction(goal, d.low, d.high) if signed else ""}

    primary = rec.primary
    metric = "the weighted objective" if primary == "objective" else primary
    is_control = entry is not None and entry.kind == "constant" and entry.arm is not None and entry.arm == s.control
    counts = {"certified": cert.certified, "not certified": [n for n in cert.tested if n not in cert.certified],
              "not tested": cert.untested, "screened out": cert.screened_out}
    return {"text": cert.text, "units": units, "metric": metric, "policy": _short(rec.policy, s.experiment),
            "value": bounded(cert.value, False), "lift": None if is_control else bounded(cert.lift_vs_control, True),
            "is_control": is_control, "level": level, "lift_note": cert.lift_vs_control_note,
            "groups": [{"label": k_, "names": ", ".join(_short(n, s.experiment) for n in v)} for k_, v in counts.items() if v]}


def health_section(srm: Srm, ds: DatasetInfo, bal: Balance, n: int) -> dict:
    """Data health for the page (formatted): the sample-ratio check, rows read and dropped, missing values, balance.

    Takes the parts rather than a whole summary so the web UI shows a stored analysis (before any run) the same way.
    """
    total = sum(srm.counts.values())
    srm_rows = [{"arm": arm, "n": fmt_num(count), "observed": fmt_pct(count / total, signed=False) if total else "–",
                 "expected": fmt_pct(srm.expected_shares.get(arm), signed=False)} for arm, count in srm.counts.items()]
    missing = [{"feature": f, "n": fmt_num(v), "share": fmt_pct(v / n, signed=False)}
               for f, v in sorted(ds.missing.items(), key=lambda kv: -kv[1]) if v]
    worst = sorted(bal.worst, key=lambda r: -abs(r.smd))[:MAX_BALANCE_ROWS]
    balance_rows = [{"column": r.column, "detail": r.detail, "arm": r.arm, "smd": fmt_signed(r.smd, 3),
                     "flag": abs(r.smd) > bal.threshold} for r in worst]
    kinds: dict[str, int] = {}
    for k in ds.features.values():
        kinds[k] = kinds.get(k, 0) + 1
    return {
        "srm_ok": srm.ok, "srm_p": fmt_p(srm.p_value), "srm_chi2": fmt_num(srm.chi2),
        "srm_threshold": srm.threshold, "srm_basis": srm.basis, "srm_rows": srm_rows,
        "n_rows_read": fmt_num(ds.n_rows_read), "n_units": fmt_num(n), "n_dropped": ds.n_dropped or 0,
        "dropped": [{"reason": k, "n": fmt_num(v)} for k, v in (ds.dropped or {}).items()],
        "missing": missing, "balance_ok": bal.ok, "balance_threshold": fmt_num(bal.threshold),
        "balance_rows": balance_rows, "warnings": ds.warnings,
        "features": ", ".join(f"{v} {k}" for k, v in kinds.items()), "n_features": len(ds.features),
    }


def effects_section(effects: list[ArmEffect], guardrails: list[ArmGuardrail], goals: dict[str, str], control: str,
                    chart: bool = True) -> dict:
    """Average effects for the page: one formatted row per metric and arm with its guardrail verdict, and the forest
    plot (``goals``: metric -> increase | decrease). Takes the parts so the web UI shows a stored analysis alike;
    ``chart=False`` skips drawing the plot (``""``), for a view that serves it separately."""
    rails = {(g.metric, g.arm): _arm_cell(g.model_dump()) for g in guardrails}
    # the forest plot draws a metric's limit (relative) when every arm's verdict was judged relative to the control mean
    limits = {}
    for (m, _arm), g in rails.items():
        if m not in limits and all(c["basis"] == "relative" for (cm, _a), c in rails.items() if cm == m):
            limits[m] = g["limit"]
    rows = []
    for e in effects:
        goal = goals.get(e.metric)
        g = rails.get((e.metric, e.arm))
        rows.append({
            "metric": e.metric, "arm": e.arm, "control_mean": fmt_num(e.control_mean), "arm_mean": fmt_num(e.arm_mean),
            "abs": _interval(e.model_dump(), goal),
            "rel": {"est": fmt_pct(e.relative),
                    "ci": f"{fmt_pct(e.relative_ci_low)} to {fmt_pct(e.relative_ci_high)}" if finite(e.relative_ci_low) else "",
                    "cls": _direction(goal, e.relative_ci_low, e.relative_ci_high), "rel": ""},
            "p": fmt_p(e.p_holm), "cuped": e.cuped,
            "guardrail": _guardrail_cell(e.metric, g) if g else None,
        })
    svg = charts.forest_plot([e.model_dump() for e in effects], goals, limits) if chart else ""
    no_relative = [f"{e.metric} · {e.arm}" for e in effects if not finite(e.relative)]
    levels = {g["level"] for g in rails.values()}
    return {"rows": rows, "chart": Markup(svg), "no_relative": no_relative, "control": control,
            "has_limits": bool(limits), "bound": _bound_name(levels.pop() if len(levels) == 1 else None)}


def hte_section(s: RunSummary, colors: dict[str, str], chart: bool = True) -> dict:
    """Per metric: do effects differ across units (the heterogeneity tests), the learner leaderboard, the drivers;
    ``chart=False`` skips drawing the Qini curves (``""``) for a view that does not show them."""
    hte = s.hte
    descriptions = {m.name: m.description for m in s.metrics}
    names = list(dict.fromkeys([*(m.name for m in s.metrics), *(t.metric for t in hte.heterogeneity),
                                *(r.metric for r in hte.leaderboard)]))
    blocks = []
    for metric in names:
        mt = [t for t in hte.heterogeneity if t.metric == metric]
        mb = [r for r in hte.leaderboard if r.metric == metric]
        if not mt and not mb:
            continue
        test_rows = [{
            "arm": t.arm, "verdict": t.verdict, "cls": "differ" if t.verdict == DIFFER else "same",
            "ate": fmt_signed(t.ate), "slope": fmt_num(t.slope, 3),
            "slope_ci": f"{fmt_num(t.slope_ci_low, 3)} to {fmt_num(t.slope_ci_high, 3)}" if finite(t.slope_ci_low) else "",
            "qini": fmt_signed(t.qini_area, 3), "qini_se": fmt_num(t.qini_area_se, 2), "p": fmt_p(t.p_holm),
        } for t in mt]
        chosen = hte.selected.get(metric)
        board_rows = [{
            "learner": LEARNER_NAMES.get(r.learner, r.learner),
            "selected": r.selected or (chosen is not None and r.learner == chosen),
            "score": fmt_num(r.score),
            "score_ci": f"{fmt_num(r.score_ci_low)} to {fmt_num(r.score_ci_high)}" if finite(r.score_ci_low) else "",
            "vs": fmt_signed(r.vs_selected, 3),
            "vs_ci": f"{fmt_signed(r.vs_selected_ci_low, 3)} to {fmt_signed(r.vs_selected_ci_high, 3)}"
            if finite(r.vs_selected_ci_low) and r.vs_selected else "",
            "seconds": fmt_seconds(r.fit_seconds),
        } for r in sorted(mb, key=lambda r: r.score if finite(r.score) else math.inf)]
        top = sorted((i for i in hte.importance if i.metric == metric and finite(i.importance)), key=lambda i: -i.importance)[:5]
        blocks.append({
            "metric": metric, "tests": test_rows, "board": board_rows, "description": descriptions.get(metric) or "",
            "selected": LEARNER_NAMES.get(chosen, chosen) if chosen else "",
            "drivers": [{"feature": i.feature, "share": fmt_pct(i.importance, signed=False)} for i in top],
            "chart": Markup(charts.qini_chart([t.model_dump() for t in mt], metric, colors) if chart else ""),
        })
    holdout = hte.holdout
    return {"blocks": blocks, "score": hte.score, "requested": hte.requested,
            "holdout_share": fmt_pct(holdout.get("share"), signed=False) if holdout else ""}


def segments_section(s: RunSummary) -> dict:
    """The segments whose effects differ most on the primary metric, with each arm's honest estimate per metric."""
    segments = s.hte.segments
    primary = s.judged.primary
    goals = {m.name: m.goal for m in s.metrics}

    def strength(seg: Segment) -> float:
        vals = [e.estimate for e in seg.effects if e.metric == primary and finite(e.estimate)]
        sign = -1.0 if goals.get(primary) == "decrease" else 1.0
        return max((sign * v for v in vals), default=-math.inf)

    ranked = sorted(segments, key=strength, reverse=True)[:MAX_SEGMENTS]
    arms = list(dict.fromkeys(e.arm for seg in segments for e in seg.effects))
    used_metrics = [m.name for m in s.metrics if any(e.metric == m.name for seg in segments for e in seg.effects)]
    rows = []
    for seg in ranked:
        cells = [[{"arm": e.arm, **_interval(e.model_dump(), goals.get(metric))} for e in seg.effects if e.metric == metric]
                 for metric in used_metrics]
        rows.append({"rule": seg.rule, "share": fmt_pct(seg.share, signed=False), "n": fmt_num(seg.n_estimation), "cells": cells})
    return {"rows": rows, "metrics": used_metrics, "total": len(segments), "arms": arms, "primary": primary}


def _policy_section(s: RunSummary) -> dict:
    primary = s.judged.primary  # the rows are this run's, judged by its own certification
    goal = next((m.goal for m in s.metrics if m.name == primary), None)
    cert = s.judged.certification
    rows = []
    best_arms = set()
    rail_names = list(dict.fromkeys(g for p in s.policies for g in p.guardrails))
    # one limit per guardrail column, from the first policy that states it
    limits = {g: next(_limit_text(p.guardrails[g].model_dump()) for p in s.policies if g in p.guardrails) for g in rail_names}
    levels = {g.level for p in s.policies for g in p.guardrails.values()}
    level = next(iter(levels)) if len(levels) == 1 else None
    for p in s.policies:
        badges = _guardrail_badges({m: c.model_dump() for m, c in p.guardrails.items()})
        value = _plain(p.value.get(primary))
        vs_control = _plain(p.lift_vs_control.get(primary))
        control_value = value["estimate"] - vs_control["estimate"] if value and vs_control else None
        if p.best_arm:
            best_arms.add(p.best_arm)
        kind = p.base_kind
        detail, detail_title = kind, ""
        if kind == "tree":
            detail = f"tree, depth {p.complexity}"
        elif kind == "constant":
            detail = f"everyone: {p.arm}" if p.arm else "random arm"
        elif kind == "value":
            detail = "value model"
            if p.planned_power is not None:  # a ladder step: the long form goes in the tooltip, the table stays narrow
                detail = "value, bolder step" if p.planned_power < POWER else "value, safer step"
                detail_title = (f"the value policy re-thresholded so that its held-out test would pass "
                                f"{p.planned_power:.0%} of the time if its building-units harm held (the default plans for {POWER:.0%})")
        if p.kind == "routing":
            n = len(p.routes or [])
            detail = f"{detail} ×{n}"
            detail_title = (f"{n} policies built the same way, one per part of the units by a hash of the unit id, each by a fit "
                            "that never saw the units it serves (cross-fitted)" + (f"; each is {detail_title}" if detail_title else ""))
        rows.append({
            "name": p.name, "short": _short(p.name, s.experiment), "detail": detail, "detail_title": detail_title,
            "recommended": p.name == s.recommendation.policy and not s.carried_over, "status": _status(p, s),
            # three digits for the interval ends keep this wide table within the page
            "vals": [_value_cell(_plain(p.value.get(m.name)), sig=3) for m in s.metrics],
            "vs_control": _interval(vs_control, goal, control_value, sig=3),
            "vs_best": _interval(_plain(p.lift_vs_best_arm.get(primary)), goal, sig=3),
            "rails": [next((b for b in badges if b["metric"] == g), None) for g in rail_names],
        })
    return {"rows": rows, "metrics": [m.name for m in s.metrics], "primary": primary, "guardrails": rail_names,
            "limits": limits, "bound": _bound_name(level) if level is not None else "upper bound",
            "best_arm": ", ".join(sorted(best_arms)), "n_eval": fmt_num(s.evaluation_rows.get("n_units")),
            "cert_text": cert.text, "procedure": cert.procedure, "family_level": fmt_pct(cert.level, signed=False), "k": cert.k}


def _pareto_section(model: RunSummary, s: dict, policies: list[dict], recommended: str) -> dict:
    pareto = s.get("pareto") or {}
    fronts = pareto.get("fronts") or {}
    candidates = list(pareto.get("candidates") or [])
    experiment = s.get("experiment", "")
    rails_meta = pareto.get("guardrails") or {}
    matched = candidate_policies(candidates, policies, experiment)
    labels = {i: _short(p.get("name", ""), experiment) if i in matched else f"#{i + 1}"
              for i, p in ((i, matched.get(i, {})) for i in range(len(candidates)))}
    rec_index = next((i for i, p in matched.items() if p.get("name") == recommended), None)
    methods = []
    for key in [k for k in ("ax", "dense", "kept") if k in fronts] + [k for k in fronts if k not in ("ax", "dense", "kept")]:
        f = fronts[key] or {}
        methods.append({"method": METHOD_NAMES.get(key, key), "evaluated": fmt_num(f.get("evaluated")),
                        "feasible": fmt_num(f.get("feasible")), "seconds": fmt_seconds(f.get("seconds")),
                        "hypervolume": fmt_num(f.get("hypervolume")), "points": len(f.get("pareto") or []),
                        "kept": key == "kept"})
    objectives = list(pareto.get("objectives") or [])
    guardrails = list(rails_meta.keys())
    goals = {m.get("name"): m.get("goal") for m in s.get("metrics") or [] if isinstance(m, dict)}
    show = {g: fmt_pct if (rails_meta.get(g) or {}).get("basis", "relative") == "relative" else fmt_signed for g in guardrails}
    cand_rows = []
    held_out: dict[int, dict] = {}
    for i, c in enumerate(candidates):
        policy = matched.get(i)
        bounds = []
        for g in guardrails:
            b, limit = (c.get("guardrail_bound") or {}).get(g), rails_meta[g]["limit"]  # the search's rule, as it serialized itself
            bounds.append({"text": show[g](b), "cls": "bad" if finite(b) and finite(limit) and b > limit else ""})
        row = {
            "label": labels.get(i, f"#{i + 1}"), "policy": (policy or {}).get("name", ""), "recommended": i == rec_index,
            "weights": ", ".join(f"{m} {fmt_num(w, 2)}" for m, w in (c.get("weights") or {}).items()),
            "budget": fmt_pct(c.get("budget"), signed=False),
            "objectives": [fmt_signed((c.get("objectives") or {}).get(o), 3) for o in objectives],
            "harm": [show[g]((c.get("guardrail_harm") or {}).get(g)) for g in guardrails],
            "bound": bounds if any(b["text"] != "–" for b in bounds) else [],
            "treated": fmt_pct(c.get("treated_share"), signed=False), "held": None, "trees": "",
        }
        if policy is not None:  # the same candidate valued on the held-out units: its policy row
            lifts = policy.get("lift_vs_control") or {}
            rails = policy.get("guardrails") or {}
            shares = policy.get("arm_shares") or {}
            treated = 1.0 - shares[s.get("control")] if finite(shares.get(s.get("control"))) else None
            row["held"] = {"objectives": [_interval(lifts.get(o), goals.get(o), sig=3) for o in objectives],
                           "treated": fmt_pct(treated, signed=False),
                           "rails": [_guardrail_cell(g, rails[g]) if isinstance(rails.get(g), dict) else None for g in guardrails],
                           "status": _status(model.by_name[policy["name"]], model)}
            held_out[i] = {"objectives": {o: (lifts.get(o) or {}).get("estimate") for o in objectives},
                           "guardrail_harm": {g: rails[g]["estimate"] if g in rails else None for g in guardrails}}
            trees = [p.get("name", "") for p in policies if base_kind(p) == "tree"
                     and str(p.get("name", "")).startswith(f"{policy.get('name')}-tree")]
            row["trees"] = ", ".join(_short(t, experiment) for t in trees)
        cand_rows.append(row)
    ref = pareto.get("reference_point") or {}
    if len(objectives) >= 2:
        axes = f"{objectives[0]} (across) and {objectives[1]} (up)"
    elif objectives and guardrails:
        axes = f"{objectives[0]} (across) and the estimated harm on {guardrails[0]} (up)"
    elif objectives:
        axes = f"{objectives[0]} (across), one row per search method"
    else:
        axes = ""
    samples = {k: len(((fronts.get(k) or {}).get("sample") or {}).get("objectives") or [])
               for k in fronts if k != "kept" and isinstance((fronts.get(k) or {}).get("sample"), dict)}
    n_sampled = sum(samples.values())
    n_evaluated = sum(fronts[k].get("evaluated") for k in samples if finite(fronts[k].get("evaluated")))
    limit = (rails_meta.get(guardrails[0]) or {}).get("limit") if guardrails else None
    # newer searches call a weighting feasible when its certifiable bound (harm plus a margin) is within the limit
    by_bound = bool(pareto.get("feasible_means")) or any("guardrail_bound" in c for c in candidates)
    tradeoff = {"chart": Markup(charts.tradeoff_chart(pareto, labels, rec_index, held_out)),
                "guardrail": guardrails[0] if guardrails else "", "primary": objectives[0] if objectives else "",
                "others": ", ".join(objectives[1:]), "has_limit": finite(limit), "more_rails": len(guardrails) > 1,
                "by_bound": by_bound}
    in_sample = str(pareto.get("in_sample") or "")
    return {
        "chart": Markup(charts.pareto_chart(pareto, labels, rec_index, held_out)), "tradeoff": tradeoff,
        "sampled": fmt_num(n_sampled) if n_sampled else "",
        "evaluated": fmt_num(n_evaluated) if n_evaluated > n_sampled else "",
        "methods": methods, "candidates": cand_rows, "held_out": bool(held_out),
        "has_bound": any(r["bound"] for r in cand_rows), "by_bound": by_bound,
        "objectives": objectives, "guardrails": guardrails, "axes": axes, "rows": pareto.get("rows") or "",
        "reference": ", ".join(f"{k} {fmt_num(v)}" for k, v in ref.items()),
        "limits": [{"metric": g, "limit": fmt_pct((v or {}).get("limit"), signed=False), "basis": (v or {}).get("basis", "")}
                   for g, v in rails_meta.items()],
        "has_ax": "ax" in fronts, "n_units": fmt_num(pareto.get("n_units")),
        "in_sample": in_sample[:1].upper() + in_sample[1:].rstrip(".") if in_sample else "",
        "feasible_means": str(pareto.get("feasible_means") or "").rstrip("."),
        "n_eval": fmt_num(pareto.get("n_eval")) if finite(pareto.get("n_eval")) and pareto.get("n_eval") else "",
    }


def _tree_arms(node: Any) -> set[str]:
    """The arms at the leaves of a policy tree document."""
    if not isinstance(node, dict):
        return set()
    if "feature" not in node:
        return {str(node.get("arm", "?"))}
    return _tree_arms(node.get("left")) | _tree_arms(node.get("right"))


def _policy_doc_section(s: dict, policies_by_name: dict[str, dict], colors: dict[str, str]) -> dict:
    rec = s.get("recommendation") or {}
    doc = rec.get("document") or {}
    kind = doc.get("kind") or rec.get("kind") or ""
    arms = list(doc.get("arms") or s.get("arms") or [])
    out: dict[str, Any] = {"kind": kind, "name": doc.get("name") or rec.get("policy") or "", "tree": Markup(""),
                           "exploration": doc.get("exploration"), "default_arm": doc.get("default_arm") or s.get("control", ""),
                           "n_arms": len(arms), "weights": [], "legend": [], "arm": "", "uniform": False, "value": None,
                           "distilled": None, "routes": [], "crossfit": False}
    out["legend"] = [{"arm": a, "color": colors.get(a, charts.UNCLEAR)} for a in arms]
    out.update(_kind_view(doc, colors))
    if kind == "routing":
        routes = (doc.get("routing") or {}).get("routes") or []
        out["routes"] = []
        for r in (r for r in routes if isinstance(r, dict)):
            start, end = r.get("start") or 0.0, (r.get("start") or 0.0) + (r.get("share") or 0.0)
            route = r.get("policy") or {}
            out["routes"].append({"name": route.get("name", ""), "kind": route.get("kind", ""),
                                  "arc": f"{fmt_pct(start, signed=False)} to {fmt_pct(end, signed=False)}", **_kind_view(route, colors)})
        out["crossfit"] = bool((doc.get("lineage") or {}).get("crossfit"))
    dist = s.get("distillation") or {}
    chosen = next((p for p in policies_by_name.values() if (p.get("fidelity") or {}).get("chosen")), None)
    if base_kind(doc) != "tree" and chosen:
        fid = chosen.get("fidelity") or {}
        curve = fid.get("held_out_curve") or {}
        agreement = fid.get("agreement_with_value_policy")
        if not finite(agreement):
            agreement = curve.get("agreement")
        # Trees are distilled from the value model built with the run's default weights; the recommended policy may be
        # a Pareto candidate with other weights, so the agreement is only "with the recommended policy" when it is that model.
        source = next((p for p in policies_by_name.values() if base_kind(p) == "value" and not p.get("tuning")), None)
        is_source = source is not None and source.get("name") == out["name"]
        tree = tree_of(chosen)
        svg = charts.tree_diagram(tree, colors) if kind != "constant" and isinstance(tree, dict) else ""
        leaves = _tree_arms(tree) if svg else set()
        out["distilled"] = {"name": chosen.get("name", ""), "depth": fid.get("depth", dist.get("chosen_depth")),
                            "agreement": fmt_pct(agreement, signed=False) if finite(agreement) else "",
                            "of_recommended": is_source, "source": (source or {}).get("name") or "",
                            "file": chosen.get("file") or f"policies/{chosen.get('name')}.json", "tree": Markup(svg),
                            "legend": [{"arm": a, "color": colors.get(a, charts.UNCLEAR)}
                                       for a in [*arms, *sorted(leaves - set(arms))] if a in leaves]}
    return out


def _kind_view(doc: dict, colors: dict[str, str]) -> dict[str, Any]:
    """What section 8 draws of one policy document of kind tree, constant or value (a routing policy's routes too)."""
    kind, out = doc.get("kind") or "", {}
    if kind == "tree" and isinstance(doc.get("tree"), dict):
        out["tree"] = Markup(charts.tree_diagram(doc["tree"], colors))
    elif kind == "constant":
        expl = doc.get("exploration") or 0.0
        out["uniform"] = finite(expl) and expl >= 1.0
        out["arm"] = doc.get("default_arm") or ""
    elif kind == "value":
        vm = doc.get("value_model") or {}
        out["weights"] = [{"metric": m, "weight": fmt_num(v.get("weight"), 3), "goal": v.get("goal", ""), "role": v.get("role", "")}
                          for m, v in (vm.get("metrics") or {}).items()]
        out["value"] = {"fit": vm.get("fit") or "", "budget": fmt_pct(vm.get("budget"), signed=False) if finite(vm.get("budget")) else "",
                        "guardrails": [{"metric": g, "mode": v.get("mode", ""),
                                        "limit": fmt_pct(v.get("limit"), signed=False) if finite(v.get("limit")) else ""}
                                       for g, v in (vm.get("guardrails") or {}).items()]}
    return out


def _caveats_section(s: RunSummary) -> dict:
    ev = s.evaluation_rows
    note = str(ev.get("note") or "")
    return {"notes": s.caveats,
            "eval": {"n": fmt_num(ev.get("n_units")), "share": fmt_pct(ev.get("share"), signed=False), "rule": ev.get("rule") or "",
                     "note": (note[:1].upper() + note[1:]).rstrip("."), "seed": ev.get("seed"),
                     "arms": ", ".join(f"{a} {fmt_num(n)}" for a, n in (ev.get("arm_counts") or {}).items())}}


def _history_section(s: RunSummary) -> dict | None:
    """The run among the runs on its dataset version (:mod:`pex.services.history`): the banner above the verdict, and
    when the recommendation is an earlier run's, why, the stored version to publish, and this run's own choice."""
    h = s.history
    if h is None:
        return None
    rec, own = s.recommendation, s.own_recommendation
    out: dict[str, Any] = {"text": h.text, "carried": False}  # the reason, when given, is in the text
    if rec.from_run is not None:
        version = rec.from_run.version
        out.update(carried=True, from_text=rec.from_run.text, from_run=rec.from_run.run, version=version,
                   publish=f"pex publish {rec.policy}" + (f" --version {version}" if version is not None else ""),
                   own_policy=own.policy if own else "", own_headline=own.headline if own else "")
    return out


# What a flag means, in the words of pex.monitor.agreement (the rule behind the z-score and the flag).
FLAG_MEANING = ("A flag says the offline evaluation and live traffic disagree beyond noise: the population moved, the "
                "offline estimate was optimistic (a best-of-many pick measured on the units that chose it), or the live "
                "measurement is biased (e.g. outcomes missing unevenly between arms).")


def _live_where(r: LiveRow, experiment: str) -> str:
    """Where a live row was measured, in words: the rollout's version and step, or the online round and arm."""
    if r.source == "rollout":
        step = "" if r.step is None else f", step {r.step + 1}" + (f" at {fmt_pct(r.share, signed=False)}"
                                                                  if r.share is not None else "")
        return f"rollout of {_short(r.policy, experiment)} v{r.version}{step} ({r.status.replace('_', ' ')})"
    return f"online round {r.round}, arm {_short(r.route or r.policy, experiment)}"


def _live_section(s: RunSummary) -> dict | None:
    """Live vs offline (:class:`LiveComparison`): a row per stored comparison, the flagged ones said in words."""
    live = s.live_comparison
    if live is None:
        return None
    rows, flagged = [], []
    for r in live.rows:
        where = _live_where(r, s.experiment)
        band = fmt_pct(r.band, signed=False)
        z = "–" if r.z is None else f"{r.z:+.2f}"
        rows.append({"where": where, "metric": r.metric, "kind": r.kind, "flag": r.flag, "band": band,
                     "online": fmt_signed(r.online_estimate), "online_se": fmt_num(r.online_se),
                     "offline": fmt_signed(r.offline_estimate), "offline_se": fmt_num(r.offline_se), "z": z,
                     "critical": f"{NormalDist().inv_cdf(0.5 + r.band / 2):.3g}", "at": r.measured_at[:16].replace("T", " ")})
        if r.flag:
            flagged.append(f"{where}: the live {r.kind} of {r.metric}, {fmt_signed(r.online_estimate)} "
                           f"(se {fmt_num(r.online_se)}), and the offline {fmt_signed(r.offline_estimate)} "
                           f"(se {fmt_num(r.offline_se)}) disagree beyond the {band} band (z = {z}).")
    bands = sorted({row["band"] for row in rows})
    return {"rows": rows, "flagged": flagged, "notes": list(live.notes.values()), "meaning": FLAG_MEANING,
            "band": " or ".join(bands), "critical": " or ".join(sorted({row["critical"] for row in rows}))}


def _footer(s: RunSummary) -> dict:
    timings = s.timings
    return {"experiment": s.experiment, "owner": s.owner, "generated_at": s.generated_at, "pex_version": s.pex_version,
            "dataset": s.dataset.id, "timings": [{"stage": k, "t": fmt_seconds(v)} for k, v in timings.items() if k != "total"],
            "total": fmt_seconds(timings["total"]) if "total" in timings else ""}


# --------------------------------------------------------------------------- entry point


def render_report(summary: RunSummary | dict) -> str:
    """Render a run summary (as written by :func:`pex.services.run.run`) as one self-contained HTML document.

    Parameters
    ----------
    summary
        The typed summary, or its published form (loaded with :meth:`RunSummary.load`, which refuses a
        format it does not know). Sections whose inputs are empty say so instead of failing.

    Returns
    -------
    str
        A complete HTML page with inline CSS and inline SVG charts; it loads
        nothing from the network.
    """
    model = as_summary(summary)
    s = model.to_dict()  # the weight search and the policy documents are read as their own modules write them
    arms = model.arms
    colors = charts.arm_colors(arms, model.control)
    policies = s["policies"]
    by_name = {p["name"]: p for p in policies}
    verdict = _verdict_section(model, colors)
    context = {
        "s": {"experiment": model.experiment, "description": model.description, "owner": model.owner,
              "n_units": fmt_num(model.n_units), "arms": arms, "control": model.control, "crossfit": bool(model.crossfit),
              "metrics": [{"name": m.name, "role": m.role, "goal": m.goal, "description": m.description or "",
                           "type": m.type or ""} for m in model.metrics]},
        "colors": colors,
        "verdict": verdict,
        "history": _history_section(model),
        "health": health_section(model.srm, model.dataset, model.balance, model.n_units),
        "effects": effects_section(model.effects, model.guardrails, {m.name: m.goal for m in model.metrics}, model.control),
        "hte": hte_section(model, colors),
        "segments": segments_section(model),
        "policies": _policy_section(model),
        "pareto": _pareto_section(model, s, policies, "" if model.carried_over else verdict["policy"]),
        "doc": _policy_doc_section(s, by_name, colors),
        "caveats": _caveats_section(model),
        "live": _live_section(model),
        "footer": _footer(model),
    }
    return _environment().get_template("report.html.j2").render(**context)
