"""Plain-text rendering of results for the terminal."""

from __future__ import annotations

import math

from pex.experiment.effects import Analysis
from pex.report.cells import candidate_policies
from pex.report.numbers import fmt_decimals, fmt_p_terminal, fmt_pct1
from pex.report.summary import RunSummary, as_summary


def table(rows: list[list[str]], header: list[str], right: set[int] | None = None) -> str:
    """Rows as an aligned plain-text table under ``header``; ``right`` are right-aligned columns."""
    right = right or set()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_analysis(a: Analysis) -> str:
    """The terminal view of an analysis: sample ratio, average effects, guardrails."""
    srm = a.srm
    shares = "/".join(f"{s * 100:.0f}" for s in srm.expected_shares.values())
    counts = ", ".join(f"{arm} {n:,}" for arm, n in srm.counts.items())
    verdict = "OK" if srm.ok else "MISMATCH - the split differs from the plan; effects may be biased"
    out = [
        f"Experiment {a.experiment}: {a.n_units:,} units in {len(a.arms)} arms ({counts})",
        f"Sample ratio: {verdict} (chi2 = {srm.chi2:.2f}, p = {fmt_p_terminal(srm.p_value)}; expected {shares} from {srm.basis})",
    ]
    ds = a.dataset
    if ds.get("n_dropped"):
        out.append(f"Dropped {ds['n_dropped']:,} invalid rows at ingestion: " + ", ".join(f"{k} ({v})" for k, v in ds["dropped"].items()))
    if ds.get("missing"):
        out.append("Missing feature values: " + ", ".join(f"{k} {v:,} ({v / a.n_units:.1%})" for k, v in ds["missing"].items()))
    bal = a.balance
    if bal.worst:
        top = bal.worst[0]
        if bal.ok:
            out.append(f"Covariate balance: OK (largest standardized difference {abs(top.smd):.3f}: "
                       f"{top.column}, {top.detail}, {top.arm} vs {a.control})")
        else:
            flagged = ", ".join(f"{i.column} ({i.detail}, {i.arm}: {i.smd:+.2f})" for i in bal.flagged[:5])
            out.append(f"Covariate balance: IMBALANCED - |standardized difference| > {bal.threshold} on {flagged}; "
                       "check assignment and logging")
    out.append(f"Propensities from: {ds.get('propensity_source')}")
    for w in ds.get("warnings", []):
        out.append(f"Warning: {w}")
    out.append("")
    out.append(f"Average effects vs {a.control} (95% CI; p-values Holm-adjusted across {len(a.effects)} comparisons):")
    rows = []
    for e in a.effects:
        rows.append([
            e.metric, e.arm, fmt_decimals(e.control_mean), fmt_decimals(e.arm_mean),
            f"{e.estimate:+.4g}", f"[{e.ci_low:.4g}, {e.ci_high:.4g}]",
            fmt_pct1(e.relative), f"[{fmt_pct1(e.relative_ci_low)}, {fmt_pct1(e.relative_ci_high)}]",
            fmt_p_terminal(e.p_holm), fmt_pct1(e.variance_reduction, signed=False) if e.cuped else "-",
        ])
    out.append(table(rows, ["metric", "arm", "control", "arm mean", "lift", "95% CI", "relative", "95% CI", "p (Holm)", "CUPED var. cut"],
                     right={2, 3, 4, 6, 8, 9}))
    if a.guardrails:
        out.append("")
        out.append("Guardrails (one-sided 95% test of harm beyond max_harm):")
        grows = [
            [g.metric, g.arm, fmt_pct1(g.harm), fmt_pct1(g.harm_upper), fmt_pct1(g.max_harm, signed=False), g.verdict.upper()]
            if g.basis == "relative" else
            [g.metric, g.arm, f"{g.harm:+.4g}", f"{g.harm_upper:+.4g}", f"{g.limit:g} (abs.)",
             g.verdict.upper() + ("" if g.max_harm_abs is not None else " (control mean is 0: absolute test)")]
            for g in a.guardrails
        ]
        out.append(table(grows, ["metric", "arm", "harm", "upper bound", "max harm", "verdict"], right={2, 3, 4}))
    return "\n".join(out)


def render_fit(summary: dict, fit_id: str = "") -> str:
    """Leaderboard, heterogeneity verdicts, top segments and drivers of a fit."""
    names = summary.get("learner_names", {})
    out = [f"Effect models{' ' + fit_id if fit_id else ''}: {summary['n_units']:,} units, {summary['folds']}-fold cross-fitting, "
           f"learner {summary['requested']}"]
    out.append(f"Leaderboard per metric ({summary['score']}; difference to the selected one with 95% CI):")
    rows = []
    for r in summary["leaderboard"]:
        diff = "selected" if r["selected"] else f"{r['vs_selected']:+.4g} [{r['vs_selected_ci_low']:+.3g}, {r['vs_selected_ci_high']:+.3g}]"
        rows.append([r["metric"], names.get(r["learner"], r["learner"]), f"{r['score']:.5g}", diff, f"{r['fit_seconds']:.1f}"])
    out.append(table(rows, ["metric", "learner", "score", "vs selected", "fit s"], right={2, 4}))
    out.append("")
    out.append("Do effects differ across units? (held-out calibration test, Holm-adjusted; Qini area > 0 = ranking works)")
    rows = []
    for h in summary["heterogeneity"]:
        rows.append([h["metric"], h["arm"], h["verdict"],
                     f"{h['slope']:.2f} [{fmt_decimals(h['slope_ci_low'], 2)}, {fmt_decimals(h['slope_ci_high'], 2)}]",
                     fmt_p_terminal(h["p_holm"]), f"{h['qini_area']:+.3g} ± {1.96 * h['qini_area_se']:.2g}"])
    out.append(table(rows, ["metric", "arm", "verdict", "calibration slope", "p (Holm)", "Qini area"], right={4}))
    segs = summary.get("segments") or []
    if segs:
        out.append("")
        out.append("Segments (honest tree: rules from one half of the units, effects with 95% CI from the other):")
        metrics = list(dict.fromkeys(e["metric"] for e in segs[0]["effects"]))
        for s in sorted(segs, key=lambda s: -s["share"]):
            out.append(f"  {s['rule']}: {s['share']:.0%} of units")
            for metric in metrics:
                parts = [f"{e['arm']} {e['estimate']:+.3g} [{e['ci_low']:+.3g}, {e['ci_high']:+.3g}]"
                         for e in s["effects"] if e["metric"] == metric]
                out.append(f"      {metric}: " + "; ".join(parts))
    imp = summary.get("importance") or []
    if imp:
        out.append("")
        out.append("What drives the differences (share of split gain of a surrogate model of the predicted effects):")
        for metric in dict.fromkeys(r["metric"] for r in imp):
            top = [r for r in imp if r["metric"] == metric][:4]
            out.append(f"  {metric}: " + ", ".join(f"{r['feature']} {r['importance']:.0%}" for r in top))
    return "\n".join(out)


def _ci(d: dict, digits: int = 3) -> str:
    return f"{fmt_decimals(d['value'], digits)} [{fmt_decimals(d['ci_low'], digits)}, {fmt_decimals(d['ci_high'], digits)}]"


# A guardrail cell below is the engine's verdict as pex.experiment.guardrail.Harm serializes itself: its estimate,
# one-sided bounds, the rule's limit and basis, the level and the verdict. Nothing here derives a limit again.


def _harm(g: dict, x: float | None) -> str:
    """A harm, its bound or its limit in the cell's units: percent when relative, the metric's units when absolute."""
    return fmt_pct1(x) if g["basis"] == "relative" else ("-" if x is None or not math.isfinite(x) else f"{x:+.4g}")


def _limit(g: dict) -> str:
    return fmt_pct1(g["limit"], signed=False) if g["basis"] == "relative" else f"{g['limit']:g} (abs.)"


def _level(g: dict) -> str:
    """'one-sided 95%'."""
    return f"one-sided {g['level']:.1%}".replace(".0%", "%")


def rail_summary(metric: str, g: dict) -> str:
    """One guardrail in a table cell: verdict, harm and its upper bound against the limit."""
    return f"{metric} {g['verdict']} (harm {_harm(g, g['estimate'])}, upper {_harm(g, g['upper'])} vs {_limit(g)})"


def _screened_out(row: dict) -> list[str]:
    """The guardrails whose building-units check failed (pex.evaluation.recommendation drops such a policy before the held-out test)."""
    return [m for m, c in (row.get("screen") or {}).items() if isinstance(c, dict) and not c.get("passed", True)]


def render_policies(rows: list[dict], report: dict | None = None) -> str:
    """The comparison table: objective and per-metric lift over all-control (DR, 95% CI) per policy, and each
    guardrail's harm with its one-sided 95% upper bound against the limit."""
    if not rows:
        return "no policies yet: run `pex policies NAME` after `pex fit NAME`"
    metrics = list(rows[0]["value"])
    ev = rows[0].get("evaluation_rows", {})
    rows_text = (f"all {ev.get('n_units', 0):,} units, cross-fitted (each under the half-policy whose fit never saw it; "
                 f"seed {ev.get('seed', 0)})" if ev.get("parts") else
                 f"{ev.get('n_units', '?'):,} held-out units that no model saw (share {ev.get('share', 0):.0%}, seed {ev.get('seed', 0)})")
    out = [f"Policies, valued off-policy (doubly robust, 95% CI) on {rows_text}",
           f"objective = weighted sum of metrics in control-arm SDs; best single arm: {rows[0]['best_arm']}"]
    if any(r.get("guardrails") for r in rows):
        level = next((_level(g) for r in rows for g in r.get("guardrails", {}).values()), "one-sided 95%")
        out.append(f"guardrails: harm on those units and its {level} upper bound vs the limit "
                   "(pass: upper bound within it; fail: lower bound beyond it; else inconclusive)")
    out.append("")
    body = []
    for r in rows:
        rails = r.get("guardrails", {})
        rail = "; ".join(rail_summary(m, g) for m, g in rails.items()) or "-"
        flags = []
        if any(r["disagreement"].values()):
            flags.append("estimators disagree")
        if r["diagnostics"].get("warnings"):
            flags.append("overlap warning")
        if r.get("fidelity", {}).get("chosen"):
            flags.append("chosen depth")
        failing = _screened_out(r)
        if failing:
            flags.append(f"over the limit on the building units ({', '.join(failing)})")
        body.append([r["name"], r["kind"], _ci(r["objective_lift_vs_control"]), _ci(r["objective_lift_vs_best_arm"]),
                     *[_ci(r["lift_vs_control"][m]) for m in metrics], rail, "; ".join(flags)])
    out.append(table(body, ["policy", "kind", "objective lift vs control", "vs best arm",
                            *[f"{m} lift vs control" for m in metrics], "guardrails", "notes"]))
    trees = [r for r in rows if r.get("fidelity")]
    if trees:
        out += ["", "Distilled trees (fidelity to the value policy)"]
        out.append(table([[r["name"], str(r["fidelity"]["depth"]), fmt_pct1(r["fidelity"]["agreement_with_value_policy"], signed=False),
                           fmt_decimals(r["fidelity"]["held_out_curve"]["value"]),
                           f"{fmt_decimals(r['fidelity']['held_out_curve']['value_lost'])} ± "
                           f"{fmt_decimals(1.96 * r['fidelity']['held_out_curve']['value_lost_se'])}",
                           "yes" if r["fidelity"]["chosen"] else ""] for r in trees],
                         ["tree", "depth", "agrees (held-out)", "value (validation half)", "value lost vs value policy", "chosen"]))
    if report and report.get("calibration"):
        out += ["", render_calibration(report["calibration"])]
    return "\n".join(out)


def render_calibration(cal: dict) -> str:
    """The value policy's calibration on the training units: who it serves, and each guardrail's harm there with the
    certifiable bound it was calibrated to (harm plus the margin the held-out test will need)."""
    served = fmt_pct1(cal.get("treated_share"), signed=False)
    greedy = cal.get("greedy_treated_share")
    expl = cal.get("exploration")
    line = f"value policy calibration: serves a non-control arm to {served} of training units"
    if greedy is not None:
        line += f" ({fmt_pct1(greedy, signed=False)} chosen by the model" + (f", the rest by {fmt_pct1(expl, signed=False)} exploration)"
                                                                            if expl else ")")
    pens = ", ".join(f"{m} penalty {fmt_decimals(v)}" for m, v in (cal.get("penalties") or {}).items())
    if pens:
        line += f"; {pens}"
    harms = cal.get("estimated_guardrail_harm") or {}
    ses = cal.get("estimated_guardrail_harm_se") or {}
    bounds = cal.get("certifiable_bound") or {}
    predicted = cal.get("predicted_guardrail_harm") or {}
    parts = []
    for m in dict.fromkeys([*harms, *predicted]):
        text = f"{m} {fmt_pct1(harms.get(m, predicted.get(m)))}"
        if m in ses:
            text += f" (standard error {fmt_pct1(ses[m], signed=False)})"
        if m in bounds:
            text += f", certifiable bound {fmt_pct1(bounds[m])}"
            if cal.get("certify_for_units"):
                text += f" for a test on {cal['certify_for_units']:,} units its models never saw"
        if m in predicted:
            text += f" (models predict {fmt_pct1(predicted[m])})"
        parts.append(text)
    if parts:
        line += "; guardrail harm on training units: " + ", ".join(parts)
    return line


def render_evaluation(row: dict) -> str:
    """One policy: every estimator per metric, lifts, guardrails and diagnostics."""
    ev = row.get("evaluation_rows", {})
    diag = row["diagnostics"]
    fits = ev.get("fit")
    out = [f"Policy {row['name']} ({row['kind']}, exploration {row['exploration']:.0%}) on {ev.get('n_units', 0):,} "
           + (f"units, each held out of one of fits {', '.join(fits)} and valued under that fit's half-policy"
              if isinstance(fits, list) else "held-out units" + (f" of fit {fits}" if fits else "")),
           f"held-out rule: {ev.get('rule', '')} (share {ev.get('share', 0)}, seed {ev.get('seed', 0)})",
           "arm shares: " + ", ".join(f"{a} {fmt_pct1(s, signed=False)}" for a, s in row["arm_shares"].items()), ""]
    body = []
    for metric, by in row["estimators"].items():
        for name, e in by.items():
            body.append([metric, name, _ci(e), fmt_decimals(e["se"], 4),
                         "DISAGREE" if (name == "dr" and row["disagreement"][metric]) else ""])
    out.append(table(body, ["metric", "estimator", "value [95% CI]", "se", ""]))
    out += ["", table([[m, _ci(row["lift_vs_control"][m]), _ci(row["lift_vs_best_arm"][m])] for m in row["value"]],
                      ["metric", "lift vs all-control (DR)", f"lift vs all-{row['best_arm']} (best arm)"])]
    out += ["", f"objective {_ci(row['objective'])}; lift vs control {_ci(row['objective_lift_vs_control'])}; "
                f"vs best arm {_ci(row['objective_lift_vs_best_arm'])}"]
    for m, g in row.get("guardrails", {}).items():
        out.append(guardrail_line(m, g))
    for m, c in (row.get("screen") or {}).items():
        if isinstance(c, dict):
            rel = c.get("limit") not in (None, 0, 0.0)
            show = fmt_pct1 if rel else (lambda x: "-" if x is None else f"{x:+.4g}")
            out.append(f"building-units screen {m}: harm {show(c.get('harm'))}, bound {show(c.get('bound'))} vs limit "
                       f"{show(c.get('limit'))}: " + ("passed" if c.get("passed", True) else
                                                      "FAILED (the recommendation drops it before the held-out test)"))
    out.append(f"diagnostics: effective sample size {diag['ess']:,.0f} ({fmt_pct1(diag['ess_share'], signed=False)}), "
               f"largest weight {fmt_decimals(diag['max_weight'], 2)}")
    out += [f"warning: {w}" for w in diag.get("warnings", [])]
    return "\n".join(out)


VERDICT_MEANING = {"pass": "pass (upper bound within the limit)", "fail": "FAIL (lower bound beyond the limit)",
                   "inconclusive": "inconclusive (the limit lies between the lower and upper bounds)"}


def guardrail_line(metric: str, g: dict) -> str:
    """A guardrail's harm with its standard error and one-sided bounds against the limit, the verdict, and roughly how
    many units would certify it when inconclusive."""
    basis = g["basis"]
    lower, upper = g["lower"], g["upper"]
    se = g["se"]
    text = (f"guardrail {metric}: {basis} harm {_harm(g, g['estimate'])}"
            + (f" (standard error {fmt_pct1(se, signed=False) if basis == 'relative' else f'{se:.4g}'})"
               if isinstance(se, (int, float)) and math.isfinite(se) else "")
            + f", {_level(g)} bounds {_harm(g, lower)} to {_harm(g, upper)}, vs limit {_limit(g)}"
            + (" (control mean is 0)" if basis == "absolute" and g.get("max_harm_abs") is None else "") + ": "
            + VERDICT_MEANING[g["verdict"]])
    need = g["units_to_certify"]
    if g["verdict"] == "inconclusive" and need:
        text += f"; about {need:,} units would certify it if the harm stayed as estimated"
    return text


def _estimate(d: dict | None) -> float | None:
    """An interval's point value, whether a comparison row's (``value``) or a summary's (``estimate``)."""
    d = d or {}
    return d.get("estimate", d.get("value"))


def render_tuning(search: dict, policies: list[dict] | None = None) -> str:
    """The weight search: each method's front (points, hypervolume, time) and the Pareto candidates, whose search
    values are in-sample (training units); with ``policies`` (comparison rows or summary policy rows), each
    candidate's held-out values from its policy row stand beside them."""
    objectives = search["objectives"]
    rails = search.get("guardrails", {})
    limits = [f"{m} harm <= {g['limit'] * 100:.3g}%" for m, g in rails.items() if g["limit"] is not None]
    out = [f"Weight search on {search['n_units']:,} training units (objectives: lift of {', '.join(objectives)}; "
           f"constraints: {', '.join(limits) or 'none'})"]
    if search.get("feasible_means"):
        out.append(f"feasible: {search['feasible_means']}")
    out.append("")
    body = [[name, f"{f['evaluated']:,}" + (f" of {f['requested']:,} (time budget)" if f.get("requested", 0) > f["evaluated"] else ""),
             f"{f['feasible']:,}", str(len(f["pareto"])), fmt_decimals(f["hypervolume"]), f"{f['seconds']:.1f}s"]
            for name, f in search["fronts"].items()]
    out.append(table(body, ["method", "evaluated", "feasible", "Pareto points", "hypervolume", "time"]))
    candidates = search.get("candidates") or []
    if candidates:
        matched = candidate_policies(candidates, policies or [])
        out += ["", "Pareto candidates: search values are in-sample (training units), so optimistic"
                + ("; held-out values are from each candidate's policy row" if matched else
                   "; their held-out values are in the policy table")]
        rows = []
        for i, c in enumerate(candidates):
            bound = c.get("guardrail_bound") or {}
            rows.append([f"{i + 1}", "in-sample", ", ".join(f"{m} {w:.2f}" for m, w in c["weights"].items()),
                         fmt_pct1(c["treated_share"], signed=False), *[fmt_decimals(c["objectives"][m]) for m in objectives],
                         *[f"{fmt_pct1(c['guardrail_harm'][m])}" + (f" (bound {fmt_pct1(bound[m])})" if m in bound else "")
                           for m in rails]])
            p = matched.get(i)
            if p is not None:
                rows.append(["", f"held-out: {p['name']}", "", "",
                             *[fmt_decimals(_estimate((p.get("lift_vs_control") or {}).get(m))) for m in objectives],
                             *[(f"{_harm(g, g['estimate'])} (upper {_harm(g, g['upper'])}, {g['verdict']})"
                                if isinstance(g := (p.get("guardrails") or {}).get(m), dict) else "-") for m in rails]])
        out.append(table(rows, ["#", "values", "weights", "treated", *[f"{m} lift" for m in objectives],
                                *[f"{m} harm" for m in rails]]))
    return "\n".join(out)


def render_recommendation(summary: RunSummary | dict) -> str:
    """The recommendation of a run summary: headline, a plain "nothing could be certified" when so, what certified
    means and which units and bounds the numbers rest on, the recommended policy's value and lift, and the reasons."""
    typed = as_summary(summary)
    rec = typed.recommendation
    cert = rec.certification
    alert, reasons = rec.alert_and_reasons()
    out = ["Recommendation: " + rec.headline]
    if alert:
        out.append("  " + alert)
    if cert.text:
        out.append("  " + cert.text)
    if cert.k:
        out.append(f"  numbers from {cert.rows}; {cert.k} candidate{'s' if cert.k != 1 else ''} tested {cert.procedure}; "
                   f"value and lift bounds one-sided at {cert.lift_level:.1%}".replace(".0%", "%")
                   + ", so they hold for every certified candidate at once")
    elif cert.srm_blocked:
        out.append(f"  numbers from {cert.rows}; the sample-ratio check failed, so no candidate was tested on them")
    else:
        out.append(f"  numbers from {cert.rows}; no candidate was left to test on them (none built, or all screened out)")
    value, lift = cert.value, cert.lift_vs_control
    line = (f"  {rec.primary} per unit under {rec.policy}: {fmt_decimals(value.estimate, 4)} "
            f"[{fmt_decimals(value.low, 4)}, {fmt_decimals(value.high, 4)}]")
    if lift.se or lift.estimate:  # the recommended policy is not control itself
        line += f"; lift vs all-{typed.control} {lift.estimate:+.4g} [{lift.low:+.4g}, {lift.high:+.4g}]"
    out.append(line)
    groups = [("certified", cert.certified), ("not certified", [n for n in cert.tested if n not in cert.certified]),
              ("not tested", cert.untested), ("screened out", cert.screened_out)]
    listed = "; ".join(f"{label}: {', '.join(names)}" for label, names in groups if names)
    if listed:
        out.append(f"  {listed}")
    out += [f"  - {r}" for r in reasons]
    return "\n".join(out)


def render_history(summary: RunSummary | dict) -> str:
    """The run among the runs on its dataset version (:mod:`pex.services.history`) and, when the recommendation is an
    earlier run's, the stored version publishing serves and this run's own choice ("" for a summary without history)."""
    typed = as_summary(summary)
    if typed.history is None:
        return ""
    out = [f"History: {typed.history.text}"]
    rec, own = typed.recommendation, typed.own_recommendation
    if rec.from_run is not None:
        version = f" --version {rec.from_run.version}" if rec.from_run.version is not None else ""
        out.append(f"  {rec.from_run.text} Publish it with: pex publish {rec.policy}{version}")
        if own is not None:
            out.append(f"  this run alone (for information): {own.headline}")
    return "\n".join(out)


def render_logged_evaluation(row: dict) -> str:
    """One policy valued on logged feedback: IPS and SNIPS per metric beside the served mean, lifts, diagnostics."""
    logged, diag = row["logged"], row["diagnostics"]
    served = ", ".join(f"{k} ({v:,} rows)" for k, v in logged.get("served", {}).items()) or "?"
    out = [f"Policy {row['name']} ({row['kind']}, exploration {row['exploration']:.0%}) on {logged['rows']:,} logged "
           f"decisions of {row['experiment']} ({logged['file']})",
           f"served: {served}",
           "arm shares: candidate " + ", ".join(f"{a} {fmt_pct1(s, signed=False)}" for a, s in row["arm_shares"].items())
           + "; served " + ", ".join(f"{a} {fmt_pct1(s, signed=False)}" for a, s in row["logged_arm_shares"].items()), ""]
    body = []
    for metric, e in row["metrics"].items():
        if e["ips"] is None:
            body.append([metric, f"{e['n']:,}", f"{e['missing']:,}", "-", "-", "-", "-"])
            continue
        body.append([metric, f"{e['n']:,}", f"{e['missing']:,}", _ci(e["ips"]), _ci(e["snips"]), _ci(e["logged"]),
                     _ci(e["snips_lift"])])
    out.append(table(body, ["metric", "rows", "no outcome", "IPS [95% CI]", "SNIPS [95% CI]", "served (observed mean)",
                            "lift vs served (SNIPS)"], right={1, 2}))
    missing = {m: e["missing"] for m, e in row["metrics"].items() if e["missing"]}
    if missing:
        out.append("rows without an outcome are left out of that metric's estimates: "
                   + ", ".join(f"{m} {n:,}" for m, n in missing.items()))
    out.append(f"diagnostics: effective sample size {diag['ess']:,.0f} ({fmt_pct1(diag['ess_share'], signed=False)}), "
               f"largest weight {fmt_decimals(diag['max_weight'], 2)}, mean weight {fmt_decimals(diag['mean_weight'], 3)}, "
               f"candidate never picks the logged arm on {fmt_pct1(diag['zero_share'], signed=False)} of rows")
    out += [f"warning: {w}" for w in diag.get("warnings", [])]
    return "\n".join(out)
