"""Plain-text rendering of results for the terminal."""

from __future__ import annotations

import math

from pex.effects import Analysis


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if x != 0 and abs(x) < 10 ** -(digits - 1):
        return f"{x:.{digits}g}"
    return f"{x:,.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_pct(x: float | None, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def table(rows: list[list[str]], header: list[str], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_analysis(a: Analysis) -> str:
    srm = a.srm
    shares = "/".join(f"{s * 100:.0f}" for s in srm.expected_shares.values())
    counts = ", ".join(f"{arm} {n:,}" for arm, n in srm.counts.items())
    verdict = "OK" if srm.ok else "MISMATCH - the split differs from the plan; effects may be biased"
    out = [
        f"Experiment {a.experiment}: {a.n_units:,} units in {len(a.arms)} arms ({counts})",
        f"Sample ratio: {verdict} (chi2 = {srm.chi2:.2f}, p = {fmt_p(srm.p_value)}; expected {shares} from {srm.basis})",
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
            out.append(f"Covariate balance: OK (largest standardized difference {abs(top.smd):.3f}: {top.column}, {top.detail}, {top.arm} vs {a.control})")
        else:
            flagged = ", ".join(f"{i.column} ({i.detail}, {i.arm}: {i.smd:+.2f})" for i in bal.flagged[:5])
            out.append(f"Covariate balance: IMBALANCED - |standardized difference| > {bal.threshold} on {flagged}; check assignment and logging")
    out.append(f"Propensities from: {ds.get('propensity_source')}")
    for w in ds.get("warnings", []):
        out.append(f"Warning: {w}")
    out.append("")
    out.append(f"Average effects vs {a.control} (95% CI; p-values Holm-adjusted across {len(a.effects)} comparisons):")
    rows = []
    for e in a.effects:
        rows.append([
            e.metric, e.arm, fmt_num(e.control_mean), fmt_num(e.arm_mean),
            f"{e.estimate:+.4g}", f"[{e.ci_low:.4g}, {e.ci_high:.4g}]",
            fmt_pct(e.relative), f"[{fmt_pct(e.relative_ci_low)}, {fmt_pct(e.relative_ci_high)}]",
            fmt_p(e.p_holm), fmt_pct(e.variance_reduction, signed=False) if e.cuped else "-",
        ])
    out.append(table(rows, ["metric", "arm", "control", "arm mean", "lift", "95% CI", "relative", "95% CI", "p (Holm)", "CUPED var. cut"], right={2, 3, 4, 6, 8, 9}))
    if a.guardrails:
        out.append("")
        out.append("Guardrails (one-sided 95% test of harm beyond max_harm):")
        grows = [
            [g.metric, g.arm, fmt_pct(g.harm), fmt_pct(g.harm_upper), fmt_pct(g.max_harm, signed=False), g.verdict.upper()]
            if g.basis == "relative" else
            [g.metric, g.arm, f"{g.harm:+.4g}", f"{g.harm_upper:+.4g}", "0 (abs.)", g.verdict.upper() + " (control mean is 0: absolute test)"]
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
        rows.append([h["metric"], h["arm"], h["verdict"], f"{h['slope']:.2f} [{fmt_num(h['slope_ci_low'], 2)}, {fmt_num(h['slope_ci_high'], 2)}]",
                     fmt_p(h["p_holm"]), f"{h['qini_area']:+.3g} ± {1.96 * h['qini_area_se']:.2g}"])
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
    return f"{fmt_num(d['value'], digits)} [{fmt_num(d['ci_low'], digits)}, {fmt_num(d['ci_high'], digits)}]"


def render_policies(rows: list[dict], report: dict | None = None) -> str:
    """The comparison table: objective and per-metric lift over all-control (DR, 95% CI) per policy."""
    if not rows:
        return "no policies yet: run `pex policies NAME` after `pex fit NAME`"
    metrics = list(rows[0]["value"])
    ev = rows[0].get("evaluation_rows", {})
    out = [f"Policies, valued off-policy (doubly robust, 95% CI) on {ev.get('n_units', '?'):,} held-out units "
           f"that no model saw (share {ev.get('share', 0):.0%}, seed {ev.get('seed', 0)})",
           f"objective = weighted sum of metrics in control-arm SDs; best single arm: {rows[0]['best_arm']}", ""]
    body = []
    for r in rows:
        rails = r.get("guardrails", {})
        rail = ", ".join(f"{m} {g['verdict']}" for m, g in rails.items()) or "-"
        flags = []
        if any(r["disagreement"].values()):
            flags.append("estimators disagree")
        if r["diagnostics"].get("warnings"):
            flags.append("overlap warning")
        if r.get("fidelity", {}).get("chosen"):
            flags.append("chosen depth")
        body.append([r["name"], r["kind"], _ci(r["objective_lift_vs_control"]), _ci(r["objective_lift_vs_best_arm"]),
                     *[_ci(r["lift_vs_control"][m]) for m in metrics], rail, "; ".join(flags)])
    out.append(table(body, ["policy", "kind", "objective lift vs control", "vs best arm",
                            *[f"{m} lift vs control" for m in metrics], "guardrails", "notes"]))
    trees = [r for r in rows if r.get("fidelity")]
    if trees:
        out += ["", "Distilled trees (fidelity to the value policy)"]
        out.append(table([[r["name"], str(r["fidelity"]["depth"]), fmt_pct(r["fidelity"]["agreement_with_value_policy"], signed=False),
                           fmt_num(r["fidelity"]["held_out_curve"]["value"]),
                           f"{fmt_num(r['fidelity']['held_out_curve']['value_lost'])} ± {fmt_num(1.96 * r['fidelity']['held_out_curve']['value_lost_se'])}",
                           "yes" if r["fidelity"]["chosen"] else ""] for r in trees],
                         ["tree", "depth", "agrees (held-out)", "value (validation half)", "value lost vs value policy", "chosen"]))
    if report and report.get("calibration"):
        cal = report["calibration"]
        pens = ", ".join(f"{m} penalty {fmt_num(v)}" for m, v in cal["penalties"].items())
        out += ["", f"value policy calibration: treats {fmt_pct(cal['treated_share'], signed=False)} of training units"
                    + (f"; {pens}" if pens else "")
                    + "; guardrail harm on training units " + ", ".join(
                        f"{m} {fmt_pct(cal.get('estimated_guardrail_harm', {}).get(m, v))}"
                        + (f" ± {fmt_pct(1.96 * cal['estimated_guardrail_harm_se'][m], signed=False)}"
                           if "estimated_guardrail_harm_se" in cal else "")
                        + f" (models predict {fmt_pct(v)})"
                        for m, v in cal["predicted_guardrail_harm"].items())]
    return "\n".join(out)


def render_evaluation(row: dict) -> str:
    """One policy: every estimator per metric, lifts, guardrails and diagnostics."""
    ev = row.get("evaluation_rows", {})
    diag = row["diagnostics"]
    out = [f"Policy {row['name']} ({row['kind']}, exploration {row['exploration']:.0%}) on {ev.get('n_units', 0):,} held-out units"
           + (f" of fit {ev['fit']}" if ev.get("fit") else ""),
           f"held-out rule: {ev.get('rule', '')} (share {ev.get('share', 0)}, seed {ev.get('seed', 0)})",
           "arm shares: " + ", ".join(f"{a} {fmt_pct(s, signed=False)}" for a, s in row["arm_shares"].items()), ""]
    body = []
    for metric, by in row["estimators"].items():
        for name, e in by.items():
            body.append([metric, name, _ci(e), fmt_num(e["se"], 4),
                         "DISAGREE" if (name == "dr" and row["disagreement"][metric]) else ""])
    out.append(table(body, ["metric", "estimator", "value [95% CI]", "se", ""]))
    out += ["", table([[m, _ci(row["lift_vs_control"][m]), _ci(row["lift_vs_best_arm"][m])] for m in row["value"]],
                      ["metric", "lift vs all-control (DR)", f"lift vs all-{row['best_arm']} (best arm)"])]
    out += ["", f"objective {_ci(row['objective'])}; lift vs control {_ci(row['objective_lift_vs_control'])}; "
                f"vs best arm {_ci(row['objective_lift_vs_best_arm'])}"]
    for m, g in row.get("guardrails", {}).items():
        if g.get("basis") == "absolute":
            head = (f"guardrail {m}: absolute harm {fmt_num(g['absolute_harm'])} [{fmt_num(g['ci_low'])}, {fmt_num(g['ci_high'])}]"
                    " vs max 0 (control mean is 0): ")
        else:
            head = (f"guardrail {m}: relative harm {fmt_pct(g['relative_harm'])} [{fmt_pct(g['ci_low'])}, {fmt_pct(g['ci_high'])}]"
                    f" vs max {fmt_pct(g['max_harm'], signed=False) if g['max_harm'] is not None else '-'}: ")
        out.append(head + {"pass": "pass (95% upper bound within the limit)", "fail": "FAIL (95% lower bound beyond the limit)",
                      "inconclusive": "inconclusive (the 95% interval straddles the limit)"}[g["verdict"]])
    out.append(f"diagnostics: effective sample size {diag['ess']:,.0f} ({fmt_pct(diag['ess_share'], signed=False)}), "
               f"largest weight {fmt_num(diag['max_weight'], 2)}")
    out += [f"warning: {w}" for w in diag.get("warnings", [])]
    return "\n".join(out)


def render_tuning(search: dict) -> str:
    """The weight search: each method's front (points, hypervolume, time) and the Pareto candidates."""
    objectives = search["objectives"]
    rails = search.get("guardrails", {})
    limits = [f"{m} harm <= {g['max_harm']:.0%}" for m, g in rails.items() if g["max_harm"] is not None]
    out = [f"Weight search on {search['n_units']:,} training units (objectives: lift of {', '.join(objectives)}; "
           f"constraints: {', '.join(limits) or 'none'})", ""]
    body = [[name, f"{f['evaluated']:,}" + (f" of {f['requested']:,} (time budget)" if f.get("requested", 0) > f["evaluated"] else ""),
             f"{f['feasible']:,}", str(len(f["pareto"])), fmt_num(f["hypervolume"]), f"{f['seconds']:.1f}s"]
            for name, f in search["fronts"].items()]
    out.append(table(body, ["method", "evaluated", "feasible", "Pareto points", "hypervolume", "time"]))
    if search.get("candidates"):
        out += ["", "Pareto candidates (training-unit estimates; their held-out values are in the policy table)"]
        rows = [[f"{i + 1}", ", ".join(f"{m} {w:.2f}" for m, w in c["weights"].items()), fmt_pct(c["treated_share"], signed=False),
                 *[fmt_num(c["objectives"][m]) for m in objectives], *[fmt_pct(c["guardrail_harm"][m]) for m in rails]]
                for i, c in enumerate(search["candidates"])]
        out.append(table(rows, ["#", "weights", "treated", *[f"{m} lift" for m in objectives], *[f"{m} harm" for m in rails]]))
    return "\n".join(out)
