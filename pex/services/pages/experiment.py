"""The experiment page of the UI (``/ui/experiments/<name>`` and its ``.json`` twin), its forest plot and its
effects CSV.

Health and average effects come from the stored analysis of the experiment's current dataset version (what
``pex analyze``, an upload and every run store), so the page has them right after an upload, before any pipeline
run; heterogeneity, the learner leaderboard and segments come from the newest run. The report's own section
builders (:mod:`pex.report.html`) format both, so the page and the offline report say the same thing in the same
words; this module flattens their output into the rows the page's tables show (the UI's cell rule: each table is
a list of dicts whose display text sits next to the raw numbers).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from typing import Any

import pandas as pd
from pydantic import ValidationError

from pex.errors import NotFoundError, PexError
from pex.hte.heterogeneity import DIFFER
from pex.report.charts import arm_colors
from pex.report.html import effects_section, health_section, hte_section, segments_section
from pex.report.numbers import finite, fmt_num, fmt_p, fmt_pct, fmt_signed
from pex.report.summary import ArmEffect, ArmGuardrail, Balance, DatasetInfo, RunSummary, Srm
from pex.services.jobs import list_jobs
from pex.services.pages.times import iso_time, when
from pex.store.workspace import Workspace

# ArmEffect.method in words an owner reads (pex.experiment.effects._method's four values)
METHODS = {
    "ols": "difference in means",
    "cuped": "CUPED",
    "weighted": "difference in means, weighted by assignment probability",
    "weighted_cuped": "CUPED, weighted by assignment probability",
}
# a guardrail verdict (pex.experiment.guardrail's rule) as the words and tone the page shows; never colour alone
GUARDRAIL_WORDS = {"pass": ("✓ kept", "good"), "fail": ("✗ harmed", "bad"), "inconclusive": ("? unclear", "unclear")}
# the direction of an average effect (the report's good / bad class) as words and tone
DIRECTION_WORDS = {"good": ("✓ better", "good"), "bad": ("✗ worse", "bad"), "": ("? unclear", "unclear")}
CSV_COLUMNS = ("arm", "metric", "control_mean", "arm_mean", "lift", "ci_low", "ci_high", "relative", "relative_ci_low",
               "relative_ci_high", "p_value", "p_holm", "method", "variance_reduction")
MAX_SEGMENTS_SHOWN = 6
MAX_JOBS_SHOWN = 20
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
FORESTS_KEPT = 16
_FORESTS: OrderedDict[str, str] = OrderedDict()
_FORESTS_LOCK = threading.Lock()


def _raw(x: Any) -> float | None:
    """A number for the JSON twin: None for a missing or non-finite one (JSON has no NaN)."""
    return float(x) if finite(x) else None


# --------------------------------------------------------------------------- the stored analysis


class _Analysis:
    """The stored analysis of the current dataset version, typed with the summary's models (the report's sections
    read those)."""

    def __init__(self, stored: dict[str, Any], version: int, source: str) -> None:
        self.srm = Srm.model_validate(stored["srm"])
        self.balance = Balance.model_validate(stored["balance"])
        self.effects = [ArmEffect.model_validate(e) for e in stored["effects"]]
        self.guardrails = [ArmGuardrail.model_validate(g) for g in stored["guardrails"]]
        ds = stored.get("dataset") or {}
        self.dataset = DatasetInfo(id=stored["dataset_version"]["id"], version=version, source=source,
                                   n_rows_read=ds.get("n_rows_read"), n_dropped=ds.get("n_dropped"),
                                   dropped=ds.get("dropped"), arm_counts=ds.get("arm_counts"),
                                   missing=ds.get("missing") or {}, features=ds.get("features") or {},
                                   warnings=ds.get("warnings") or [])
        self.n_units = int(stored["n_units"])
        self.control = str(stored["control"])


def _current_analysis(ws: Workspace, name: str) -> _Analysis | None:
    """The stored analysis of ``name``'s current dataset version, or None when there is none of that version."""
    dv = ws.dataset_version(name)
    stored = ws.latest_analysis(name)
    if not stored or (stored.get("dataset_version") or {}).get("id") != dv.id:
        return None
    try:
        return _Analysis(stored, dv.version, dv.source)
    except (ValidationError, KeyError, TypeError):  # stored by an older pex in another shape: analysed again by a run
        return None


def _p_phrase(p_text: str) -> str:
    """'p < 0.001' or 'p = 0.092' (fmt_p writes '< 0.001' for tiny ones, and 'p = < 0.001' does not read)."""
    return f"p {p_text}" if p_text.startswith("<") else f"p = {p_text}"


def _srm_banner(srm: Srm, p_text: str) -> str:
    return (f"Sample-ratio mismatch: the arms did not get the shares of units they were planned to get "
            f"({_p_phrase(p_text)}, below {srm.threshold}). Do not trust the effects below until you know why: assignment "
            "or logging may be broken, so every comparison may be biased.")


def _health(a: _Analysis) -> dict[str, Any]:
    section = health_section(a.srm, a.dataset, a.balance, a.n_units)
    srm = a.srm
    total = sum(srm.counts.values())
    by_arm = {r["arm"]: r for r in section["srm_rows"]}
    srm_rows = [{"arm": arm, "units": count, "planned_share": _raw(srm.expected_shares.get(arm)),
                 "expected_units": _raw(srm.expected_shares.get(arm, float("nan")) * total),
                 "units_text": by_arm[arm]["n"], "observed": by_arm[arm]["observed"], "planned": by_arm[arm]["expected"],
                 "expected_units_text": fmt_num(srm.expected_shares.get(arm, float("nan")) * total, 4)}
                for arm, count in srm.counts.items()]
    flagged = {(i.column, i.arm) for i in a.balance.worst if abs(i.smd) > a.balance.threshold}
    balance_rows = [{"feature": r["column"], "detail": r["detail"], "arm": r["arm"],
                     "smd": _raw(next(i.smd for i in a.balance.worst if (i.column, i.arm) == (r["column"], r["arm"]))),
                     "smd_text": r["smd"],
                     "flag": "✗ imbalanced" if (r["column"], r["arm"]) in flagged else "✓ within the limit"}
                    for r in section["balance_rows"]]
    missing_rows = [{"feature": m["feature"], "units": a.dataset.missing[m["feature"]], "units_text": m["n"],
                     "share": m["share"]} for m in section["missing"]]
    return {
        "srm": {"ok": srm.ok, "p_value": _raw(srm.p_value), "p_text": section["srm_p"],
                "p_phrase": _p_phrase(section["srm_p"]), "chi2": _raw(srm.chi2),
                "threshold": srm.threshold, "basis": srm.basis,
                "verdict": "✓ the arms got their planned shares" if srm.ok else "✗ sample-ratio mismatch",
                "banner": "" if srm.ok else _srm_banner(srm, section["srm_p"])},
        "srm_rows": srm_rows,
        "balance": {"ok": a.balance.ok, "threshold": a.balance.threshold,
                    "verdict": "✓ balanced" if a.balance.ok else f"✗ {len(flagged)} feature(s) imbalanced",
                    "flagged": sorted({c for c, _arm in flagged})},
        "balance_rows": balance_rows,
        "missing_rows": missing_rows,
        "n_rows_read": a.dataset.n_rows_read, "n_units": a.n_units, "n_dropped": section["n_dropped"],
        "dropped": [{"reason": d["reason"], "units": d["n"]} for d in section["dropped"]],
        "warnings": list(section["warnings"]),
        "features": section["features"],
    }


def _effect_rows(a: _Analysis, goals: dict[str, str]) -> list[dict[str, Any]]:
    section = effects_section(a.effects, a.guardrails, goals, a.control, chart=False)  # the plot is its own file
    rows = []
    for e, shown in zip(a.effects, section["rows"]):
        direction, tone = DIRECTION_WORDS[shown["abs"]["cls"]]
        rail = shown["guardrail"]
        rail_words, rail_tone = GUARDRAIL_WORDS[rail["verdict"]] if rail else ("–", "")
        rows.append({
            "metric": e.metric, "arm": e.arm,
            "control_mean": _raw(e.control_mean), "arm_mean": _raw(e.arm_mean),
            "lift": _raw(e.estimate), "ci_low": _raw(e.ci_low), "ci_high": _raw(e.ci_high),
            "relative": _raw(e.relative), "relative_ci_low": _raw(e.relative_ci_low),
            "relative_ci_high": _raw(e.relative_ci_high),
            "p_value": _raw(e.p_value), "p_holm": _raw(e.p_holm), "method": e.method,
            "variance_reduction": _raw(e.variance_reduction),
            "control_mean_text": shown["control_mean"], "arm_mean_text": shown["arm_mean"],
            "lift_text": shown["abs"]["est"] + (f" ({shown['abs']['ci']})" if shown["abs"]["ci"] else ""),
            "relative_text": shown["rel"]["est"] + (f" ({shown['rel']['ci']})" if shown["rel"]["ci"] else ""),
            "means_text": f"{shown['control_mean']} → {shown['arm_mean']}",
            "p_text": fmt_p(e.p_value), "p_holm_text": shown["p"], "p_both": f"{fmt_p(e.p_value)} (Holm {shown['p']})",
            "method_text": METHODS.get(e.method, e.method)
            + (f": variance cut {fmt_pct(e.variance_reduction, signed=False)}" if finite(e.variance_reduction) else ""),
            "direction": direction, "tone": tone,
            "guardrail": rail_words, "guardrail_tone": rail_tone, "guardrail_detail": rail["detail"] if rail else "",
        })
    return rows


def effects_csv(ws: Workspace, name: str) -> str:
    """The average effects of ``name``'s current dataset version as CSV: one row per arm and metric with the means,
    the lift and its 95% CI, the relative lift and its CI, p and Holm p, the method and the CUPED variance cut.

    Raises
    ------
    NotFoundError
        For an unknown experiment, or one whose current dataset version has no stored analysis.
    """
    a = _current_analysis(ws, name)
    if a is None:
        raise NotFoundError(f"experiment {name!r} has no analysis of its current dataset version yet",
                            "run the pipeline on it (the Run pipeline button, or `pex analyze NAME`)")
    frame = pd.DataFrame([{"arm": e.arm, "metric": e.metric, "control_mean": e.control_mean, "arm_mean": e.arm_mean,
                           "lift": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high, "relative": e.relative,
                           "relative_ci_low": e.relative_ci_low, "relative_ci_high": e.relative_ci_high,
                           "p_value": e.p_value, "p_holm": e.p_holm, "method": e.method,
                           "variance_reduction": e.variance_reduction} for e in a.effects], columns=list(CSV_COLUMNS))
    out = io.StringIO()
    frame.to_csv(out, index=False)  # full precision (shortest round-trip repr): the file is for further analysis
    return out.getvalue()


def forest_svg(ws: Workspace, name: str) -> str:
    """The forest plot of ``name``'s average effects (the report's chart) as a standalone SVG document; "" when
    there is nothing to plot (no analysis, or no relative effect)."""
    a = _current_analysis(ws, name)
    if a is None:
        return ""
    spec = ws.load_dataset_spec(a.dataset.id)
    goals = {m: s.goal for m, s in spec.metrics.items()}
    drawn = [[e.model_dump() for e in a.effects], [g.model_dump() for g in a.guardrails], goals, a.control]
    key = hashlib.sha256(json.dumps(drawn, sort_keys=True, default=str).encode()).hexdigest()
    with _FORESTS_LOCK:  # drawing takes a few tenths of a second: a process draws each analysis's plot once
        if key in _FORESTS:
            _FORESTS.move_to_end(key)
            return _FORESTS[key]
    chart = str(effects_section(a.effects, a.guardrails, goals, a.control)["chart"])
    # the report inlines the chart in HTML, where the SVG and xlink namespaces are implied (charts drops them); a
    # file served on its own is XML and needs both declared
    svg = chart.replace("<svg ", f'<svg xmlns="{SVG_NS}" xmlns:xlink="{XLINK_NS}" ', 1) if chart else ""
    with _FORESTS_LOCK:
        _FORESTS[key] = svg
        while len(_FORESTS) > FORESTS_KEPT:
            _FORESTS.popitem(last=False)
    return svg


# --------------------------------------------------------------------------- the newest run


def _run_section(ws: Workspace, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the newest run found about heterogeneity: the verdict, the leaderboard, the segments; None without a run."""
    if not runs:
        return None
    newest = runs[0]
    try:
        s = RunSummary.load(ws.run_summary(newest["id"]))
    except PexError as e:  # a summary of a format this pex cannot read: say so, the rest of the page still works
        return {"id": newest["id"], "readable": False, "problem": e.message, "hint": e.hint}
    hte = hte_section(s, arm_colors(s.arms, s.control), chart=False)  # the page shows the tests, not the curves
    tests, board = [], []
    for block in hte["blocks"]:
        for t in block["tests"]:
            differ = t["verdict"] == DIFFER
            tests.append({"metric": block["metric"], "arm": t["arm"],
                          "verdict": ("✓ " if differ else "? ") + t["verdict"], "tone": "good" if differ else "unclear",
                          "ate": t["ate"], "slope": t["slope"] + (f" ({t['slope_ci']})" if t["slope_ci"] else ""),
                          "p_holm": t["p"]})
        for r in block["board"]:
            board.append({"metric": block["metric"], "learner": r["learner"], "chosen": "✓ chosen" if r["selected"] else "",
                          "score": r["score"] + (f" ({r['score_ci']})" if r["score_ci"] else ""),
                          "vs_chosen": r["vs"] + (f" ({r['vs_ci']})" if r["vs_ci"] else ""), "fit_time": r["seconds"]})
    differ_rows = [t for t in tests if t["tone"] == "good"]
    if differ_rows:
        where = "; ".join(f"{t['metric']} ({t['arm']})" for t in differ_rows)
        differ = {"answer": "yes", "text": f"✓ Yes: effects differ between units for {where}. Different units respond "
                                           "differently, so a personalized policy can do better than one arm for everyone."}
    else:
        differ = {"answer": "no", "text": "? No clear evidence that effects differ between units, from these tests of "
                                          "one arm and metric at a time. That is not the last word: a policy weighing "
                                          "all metrics at once can still beat every single arm, and the policies page "
                                          "says whether one was certified to."}
    seg = segments_section(s)
    primary = seg["primary"]
    segments = []
    for row in seg["rows"][:MAX_SEGMENTS_SHOWN]:
        cells = row["cells"][seg["metrics"].index(primary)] if primary in seg["metrics"] else []
        segments.append({"segment": row["rule"], "share": row["share"], "units": row["n"],
                         "effect": "; ".join(f"{c['arm']} {c['est']}" + (f" ({c['ci']})" if c["ci"] else "")
                                             for c in cells) or "–"})
    rec = s.recommendation
    return {"id": newest["id"], "readable": True, "created_at": iso_time(newest["created_at"]),
            "created_at_text": when(newest["created_at"]), "headline": rec.headline, "verdict": rec.verdict,
            "recommended_policy": s.recommended_policy, "differ": differ, "heterogeneity": tests, "leaderboard": board,
            "learners_requested": hte["requested"], "segments": segments, "segments_total": seg["total"],
            "primary": primary, "score_name": hte["score"]}


# --------------------------------------------------------------------------- the page


def experiment_page(ws: Workspace, name: str) -> dict[str, Any]:
    """Everything the experiment page shows, as JSON: the experiment, health, average effects, what the newest
    run found, its runs and jobs.

    Raises
    ------
    NotFoundError
        For an unknown experiment (with the names the workspace has).
    """
    dv = ws.dataset_version(name)  # NotFoundError for an unknown experiment
    spec = ws.load_dataset_spec(dv.id)
    goals = {m: s.goal for m, s in spec.metrics.items()}
    a = _current_analysis(ws, name)
    runs = ws.list_runs(name)
    jobs = list_jobs(ws, experiment=name, limit=MAX_JOBS_SHOWN)
    return {
        "experiment": {
            "name": name, "description": spec.description, "owner": spec.owner, "control": spec.control,
            "arms": list(a.srm.counts) if a else [], "units": dv.n_units, "dataset_version": dv.version,
            "dataset_id": dv.id, "dataset_created_at": iso_time(dv.created_at), "dataset_created_at_text": when(dv.created_at),
        },
        "metrics": [{"metric": m, "role": s.role, "goal": s.goal,
                     "limit": (f"at most {fmt_pct(s.max_harm, signed=False)} harm" if s.max_harm is not None else
                               f"at most {fmt_signed(s.max_harm_abs)} harm" if s.max_harm_abs is not None else ""),
                     "pre": s.pre or ""} for m, s in spec.metrics.items()],
        "analysed": a is not None,
        "health": _health(a) if a else None,
        "effects": _effect_rows(a, goals) if a else [],
        "has_forest": bool(a and any(finite(e.relative) for e in a.effects)),
        "latest_run": _run_section(ws, runs),
        "runs": [{"id": r["id"], "created_at": iso_time(r["created_at"]), "when": when(r["created_at"]),
                  "dataset_version": r["dataset_version"] if r["dataset_version"] is not None else "–",
                  "headline": r["headline"] or "",
                  "policy": (r["policy"] or "") + (f" v{r['policy_version']}" if r["policy_version"] is not None else ""),
                  "job_id": r["job_id"], "asked": f"job {r['job_id']}" if r["job_id"] is not None else "command line"}
                 for r in runs],
        "jobs": [_job_row(j.to_dict()) for j in jobs],
    }


def _job_row(j: dict[str, Any]) -> dict[str, Any]:
    from pex.services.pages.jobs import job_view  # the job page's words for a job, so both pages say the same

    v = job_view(j)
    return {"id": j["id"], "kind": v["kind_text"], "status": v["status_text"], "tone": v["status_tone"],
            "stage": j.get("stage") or "", "created_at": j.get("created_at"), "when": v["created"],
            "asked_by": v["asked_by"], "run_id": j.get("run_id")}
