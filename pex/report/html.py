"""The offline evaluation report: one self-contained HTML page rendered from a run's summary.

:func:`render_report` turns the JSON summary written by :func:`pex.services.run.run`
into a page an experiment owner reads top-down: the verdict first, then the
evidence behind it (data health, average effects, heterogeneity, segments,
policy comparison, the Pareto search, the policy itself) and the caveats.
The page has no network dependencies: CSS is inline and charts are inline SVG
(:mod:`pex.report.charts`), so it can be mailed, archived or opened offline.
This module only assembles sections; the layout lives in
``pex/report/templates/report.html.j2``.
"""

from __future__ import annotations

import math
from typing import Any

import jinja2
from markupsafe import Markup

from pex.evaluation.recommendation import PROCEDURE
from pex.experiment.guardrail import POWER
from pex.hte.learners import LEARNER_NAMES
from pex.report import charts
from pex.report.cells import base_kind, is_relative, limit_of, tree_of

METHOD_NAMES = {"ax": "Bayesian optimisation (Ax)", "dense": "dense random search", "kept": "kept front (all methods)"}
VERDICTS = {
    "personalize": ("Personalize", "personalize"),
    "ship_arm": ("Ship one arm to everyone", "ship"),
    "keep_control": ("Keep control", "keep"),
}
MAX_SEGMENTS = 6
MAX_BALANCE_ROWS = 6

_env: jinja2.Environment | None = None


# --------------------------------------------------------------------------- number formatting


def _ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_num(x: Any, sig: int = 4) -> str:
    """``x`` with ``sig`` significant digits; thousands separated; '–' when missing."""
    if not _ok(x):
        return "–"
    ax = abs(x)
    if ax >= 1000 or (isinstance(x, int) and not isinstance(x, bool)):
        return f"{x:,.0f}"
    if ax == 0:
        return "0"
    if ax < 1e-4:
        return f"{x:.2e}"
    return f"{x:.{sig}g}"


def fmt_signed(x: Any, sig: int = 4) -> str:
    """``x`` as :func:`fmt_num`, with a plus sign when positive."""
    s = fmt_num(x, sig)
    return "+" + s if _ok(x) and x > 0 else s


def fmt_pct(x: Any, signed: bool = True) -> str:
    """A share or relative change as a percentage with about three significant digits."""
    if not _ok(x):
        return "–"
    pct = 100 * x
    ap = abs(pct)
    body = f"{pct:.0f}" if ap >= 100 else f"{pct:.3g}" if ap >= 0.01 else ("0" if pct == 0 else f"{pct:.1e}")
    return ("+" + body if signed and pct > 0 else body) + "%"


def fmt_p(p: Any) -> str:
    """A p-value with three decimals, or '< 0.001'."""
    if not _ok(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_seconds(s: Any) -> str:
    """A duration in seconds or minutes."""
    if not _ok(s):
        return "–"
    return f"{s:.2g} s" if s < 1 else f"{s:.1f} s" if s < 100 else f"{s / 60:.1f} min"


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
    if not (_ok(lo) and _ok(hi)):
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
    out = {"est": fmt_signed(est), "ci": f"{fmt_num(lo, sig)} to {fmt_num(hi, sig)}" if _ok(lo) and _ok(hi) else "",
           "cls": _direction(goal, lo, hi), "rel": ""}
    if _ok(relative_to) and relative_to != 0 and _ok(est):
        out["rel"] = fmt_pct(est / relative_to)
    return out


def _value_cell(d: dict | None, sig: int = 4) -> dict:
    d = d or {}
    lo, hi = d.get("ci_low"), d.get("ci_high")
    return {"est": fmt_num(d.get("estimate")), "ci": f"{fmt_num(lo, sig)} to {fmt_num(hi, sig)}" if _ok(lo) and _ok(hi) else "",
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
    return fmt_pct if is_relative(g) else fmt_signed


def _limit_text(g: dict) -> str:
    """The limit harm must stay within: max_harm for a relative harm, 0 for an absolute one (control mean 0)."""
    limit = limit_of(g)
    if limit is None:
        return ""
    return fmt_pct(limit, signed=False) if is_relative(g) else fmt_num(limit)


def _bound_name(level: Any) -> str:
    """'one-sided 95% upper bound'; older cells without a level get no level (theirs was a two-sided interval's end)."""
    return f"one-sided {fmt_pct(level, signed=False)} upper bound" if _ok(level) else "upper bound"


def _guardrail_cell(metric: str, g: dict) -> dict:
    """One guardrail of one policy or arm: harm, its one-sided upper bound against the limit, and the verdict."""
    verdict = str(g.get("verdict") or "unknown")
    show = _harm_fmt(g)
    harm = g.get("estimate", g.get("relative_harm", g.get("absolute_harm", g.get("harm"))))
    upper = g.get("upper", g.get("harm_upper", g.get("ci_high")))
    limit = _limit_text(g)
    detail = f"harm {show(harm)}; {_bound_name(g.get('level'))} {show(upper)}" + (f" vs limit {limit}" if limit else "")
    if verdict in VERDICT_MEANING:
        detail += f": {VERDICT_MEANING[verdict]}"
    need = g.get("units_to_certify")
    if verdict == "inconclusive" and _ok(need):
        detail += f" (about {fmt_num(need)} units would certify it if the harm stayed as estimated)"
    return {"metric": metric, "verdict": verdict, "cls": verdict if verdict in VERDICT_MEANING else "unknown",
            "detail": detail, "harm": show(harm), "upper": show(upper), "limit": limit}


def _guardrail_badges(rails: dict | None) -> list[dict]:
    return [_guardrail_cell(metric, g) for metric, g in (rails or {}).items() if isinstance(g, dict)]


def _certification(s: dict) -> dict:
    """``recommendation.certification``, or {} for summaries written before certification existed."""
    cert = (s.get("recommendation") or {}).get("certification")
    return cert if isinstance(cert, dict) else {}


def _family_bounds(cert: dict, name: str) -> str:
    """The family-level upper bounds of one candidate, e.g. 'at 97.5%: unsubscribes ≤ +2.26%'."""
    harms = (cert.get("harms") or {}).get(name) or {}
    parts = [(f"{m} " if len(harms) > 1 else "") + f"upper {_harm_fmt(h)(h.get('upper'))}" for m, h in harms.items() if isinstance(h, dict)]
    # each bound at the level it was judged at (step-down raises it above the family's), else the family's
    level = next((h.get("level") for h in harms.values() if isinstance(h, dict) and _ok(h.get("level"))), cert.get("level"))
    return ", ".join(parts) + f" at {fmt_pct(level, signed=False)}" if parts and _ok(level) else ""


def _procedure(cert: dict) -> str:
    """How the candidates were tested, as a clause ("one at a time ... (fixed-sequence testing)"); summaries
    written before the procedure was recorded used fixed-sequence testing."""
    return str(cert.get("procedure") or PROCEDURE["fixed-sequence"])


def _screen_text(screen: dict | None) -> str:
    """The building-units check of a policy row in words (its failing guardrails first)."""
    parts = []
    for m, c in sorted((screen or {}).items(), key=lambda kv: bool((kv[1] or {}).get("passed", True))):
        if not isinstance(c, dict):
            continue
        show = fmt_pct if _ok(c.get("limit")) and c.get("limit") != 0 else fmt_signed
        parts.append(f"{m} harm {show(c.get('harm'))}, bound {show(c.get('bound'))} "
                     f"{'within' if c.get('passed', True) else 'over'} the {show(c.get('limit')).lstrip('+')} limit")
    return "on the building units: " + "; ".join(parts) if parts else ""


def _status(p: dict, s: dict, cert: dict) -> dict:
    """Where a policy stands in the recommendation's certification: certified, tested but not certified,
    screened out before the held-out test, the all-control fallback, or not a candidate at all."""
    name = p.get("name", "")
    rec = s.get("recommendation") or {}
    if not cert:  # an older summary: only its "eligible" flag
        ok = p.get("eligible")
        ok = name in (rec.get("eligible") or []) if ok is None else ok
        return {"label": "eligible" if ok else "not eligible", "cls": "yes" if ok else "no", "title": "", "note": "", "key": ""}
    level = fmt_pct(cert.get("level"), signed=False)
    if name in (cert.get("certified") or []):
        return {"label": "certified", "cls": "yes", "key": "certified", "note": _family_bounds(cert, name),
                "title": f"every guardrail's one-sided upper bound is within its limit (tested {_procedure(cert)})"}
    if name in (cert.get("untested") or []):
        title = "not tested: a candidate tested before it did not pass, and the test stops there"
        return {"label": "not tested", "cls": "no", "key": "family", "note": "", "title": title, "why": f"it was {title}"}
    if name in (cert.get("family") or []):
        title = f"tested on the held-out units, but some guardrail's upper bound at {level} is over its limit"
        return {"label": "not certified", "cls": "no", "key": "family", "note": _family_bounds(cert, name), "title": title,
                "why": f"it was {title} ({_family_bounds(cert, name)})"}
    if name in (cert.get("screened_out") or []):
        screen = f" ({_screen_text(p.get('screen'))})" if p.get("screen") else ""
        return {"label": "screened out", "cls": "screened", "key": "screened", "note": "",
                "title": "dropped before the held-out test: its harm on the building units could not pass "
                         "even if the estimate were exact" + screen,
                "why": "it was screened out before the held-out test, because its harm on the building units could not pass "
                       "even if the estimate were exact" + screen}
    if p.get("kind") == "constant" and p.get("arm") is not None and p.get("arm") == s.get("control"):
        return {"label": "fallback", "cls": "fallback", "key": "fallback", "note": "",
                "title": "everyone keeps control: it harms nothing, so it needs no certificate "
                         "and is chosen when nothing certified beats it"}
    why = next((r for r in rec.get("reasons") or [] if isinstance(r, str) and r.startswith(f"{name} gives every")), "")
    if not why:
        why = ("a baseline for comparison" if p.get("kind") == "constant" else
               "only the tree depth the distillation chose competes" if "fidelity" in p else "not offered to the recommendation")
    return {"label": "not a candidate", "cls": "unknown", "key": "none", "note": "", "title": why}


def _arm_share_bar(shares: dict | None, colors: dict[str, str]) -> list[dict]:
    out = []
    for arm, share in (shares or {}).items():
        if _ok(share) and share > 0:
            out.append({"arm": arm, "share": share, "pct": fmt_pct(share, signed=False), "color": colors.get(arm, charts.UNCLEAR),
                        "width": f"{100 * share:.2f}"})
    return out


# --------------------------------------------------------------------------- sections


def _verdict_section(s: dict, policies: dict[str, dict], metrics: list[dict], colors: dict[str, str]) -> dict:
    rec = s.get("recommendation") or {}
    name = rec.get("policy") or s.get("recommended_policy") or ""
    entry = policies.get(name, {})
    label, cls = VERDICTS.get(rec.get("verdict", ""), (str(rec.get("verdict") or "Recommendation"), "keep"))
    primary = rec.get("primary") or next((m["name"] for m in metrics if m.get("role") == "primary"), None)
    rows = []
    for m in metrics:
        metric = m["name"]
        value = (entry.get("value") or {}).get(metric)
        vs_control = (entry.get("lift_vs_control") or {}).get(metric)
        control_value = None
        if value and vs_control and _ok(value.get("estimate")) and _ok(vs_control.get("estimate")):
            control_value = value["estimate"] - vs_control["estimate"]
        best = (entry.get("lift_vs_best_arm") or {}).get(metric)
        rows.append({"metric": metric, "role": m.get("role", ""), "goal": m.get("goal", ""), "primary": metric == primary,
                     "value": _value_cell(value), "vs_control": _interval(vs_control, m.get("goal"), control_value),
                     "vs_best": _interval(best, m.get("goal"), None)})
    cert = _certification(s)
    best_note = ""
    best_arm = entry.get("best_arm")
    best_policy = next((p for p in policies.values() if p.get("kind") == "constant" and p.get("arm") == best_arm), None)
    if best_arm and best_policy is not None and best_policy.get("name") != name:
        status = _status(best_policy, s, cert)
        if status["key"] in ("family", "screened"):
            best_note = f"Giving everyone {best_arm} is not an option: {status['why']} (see section 6)."
        elif not cert and best_policy.get("eligible") is False:
            broken = [f"its {c['metric']} {_bound_name(None)} ({c['upper']}) is over the {c['limit']} limit"
                      for c in _guardrail_badges(best_policy.get("guardrails")) if c["verdict"] != "pass"]
            best_note = (f"Giving everyone {best_arm} is not an option: "
                         f"{'; '.join(broken) or 'it does not keep every guardrail'} (see section 6).")
    objective = None
    if primary and primary not in {m["name"] for m in metrics} and entry.get("objective"):
        objective = _value_cell(entry["objective"])
    reasons = [str(r) for r in rec.get("reasons") or []]
    cannot = bool(rec.get("cannot_certify"))
    alert = ""
    if cannot:  # say it first and plainly, instead of letting a "keep control" headline read as a success
        alert = reasons.pop(0) if reasons else "Nothing could be certified."
        if not alert.lower().startswith("nothing"):  # the engine's first reason normally says so itself
            alert = "Nothing could be certified: " + alert
    # the recommended policy's guardrails at the level that certified it, else its own 95% row
    family_harms = (cert.get("harms") or {}).get(name)
    rails = _guardrail_badges(family_harms if family_harms else entry.get("guardrails"))
    rails_level = next((g.get("level") for g in (family_harms or entry.get("guardrails") or {}).values()
                        if isinstance(g, dict) and _ok(g.get("level"))), cert.get("level") if family_harms else None)
    return {
        "policy": name, "short": _short(name, s.get("experiment", "")), "kind": rec.get("kind") or entry.get("kind", ""),
        "verdict": rec.get("verdict", ""), "label": label + (" · nothing certified" if cannot else ""), "cls": cls,
        "headline": rec.get("headline") or "", "reasons": reasons, "primary": primary or "", "rows": rows, "objective": objective,
        "best_arm": entry.get("best_arm"), "file": entry.get("file") or f"policies/{name}.json",
        "guardrails": rails, "rails_bound": _bound_name(rails_level), "rails_family": bool(family_harms),
        "shares": _arm_share_bar(entry.get("arm_shares"), colors),
        "found": bool(entry), "exploration": entry.get("exploration"), "best_note": best_note,
        "cannot": cannot, "alert": alert,
        "cert": _certification_facts(s, cert, name, entry, primary, next((m.get("goal") for m in metrics if m["name"] == primary), None)),
    }


def _certification_facts(s: dict, cert: dict, name: str, entry: dict, primary: str | None, goal: str | None) -> dict | None:
    """What "certified" means, which units and bounds the numbers rest on, and the recommended policy's value and lift
    with the family-level bounds; None for summaries written before certification existed."""
    if not cert:
        return None
    k = cert.get("k")
    level = fmt_pct(cert.get("level"), signed=False) if _ok(cert.get("level")) else ""
    rows = str(cert.get("rows") or "held-out units")
    if _ok(k) and k > 0:
        lift_level = fmt_pct(cert.get("lift_level"), signed=False) if _ok(cert.get("lift_level")) else level
        units = (f"The numbers in this box come from {rows}. The {fmt_num(k)} candidate{'s' if k != 1 else ''} that passed "
                 f"the building-units screen were tested there {_procedure(cert)}; value and lift bounds are "
                 f"one-sided {lift_level}, so that they hold for every certified policy at once (the choice among them "
                 "is paid for).")
    else:
        units = (f"The numbers in this box come from {rows}. No candidate passed the building-units screen, so none "
                 "was tested there and the recommendation falls back to control.")

    def bounded(d: Any, signed: bool) -> dict | None:
        if not isinstance(d, dict) or not _ok(d.get("estimate")):
            return None
        show = fmt_signed if signed else fmt_num
        return {"est": show(d["estimate"]), "low": show(d.get("low")), "high": show(d.get("high")),
                "cls": _direction(goal, d.get("low"), d.get("high")) if signed else ""}

    metric = "the weighted objective" if primary == "objective" else primary or "the primary metric"
    is_control = entry.get("kind") == "constant" and entry.get("arm") is not None and entry.get("arm") == s.get("control")
    counts = {"certified": cert.get("certified") or [], "not certified": [n for n in cert.get("family") or []
                                                                          if n not in (cert.get("certified") or [])],
              "screened out": cert.get("screened_out") or []}
    experiment = s.get("experiment", "")
    return {"text": str(cert.get("text") or ""), "units": units, "metric": metric, "policy": _short(name, experiment),
            "value": bounded(cert.get("value"), False), "lift": None if is_control else bounded(cert.get("lift_vs_control"), True),
            "is_control": is_control, "level": level, "lift_note": str(cert.get("lift_vs_control_note") or ""),
            "groups": [{"label": k_, "names": ", ".join(_short(n, experiment) for n in v)} for k_, v in counts.items() if v]}


def _health_section(s: dict) -> dict:
    srm = s.get("srm") or {}
    counts = srm.get("counts") or (s.get("dataset") or {}).get("arm_counts") or {}
    total = sum(v for v in counts.values() if _ok(v)) or 0
    expected = srm.get("expected_shares") or {}
    srm_rows = [{"arm": arm, "n": fmt_num(n), "observed": fmt_pct(n / total, signed=False) if total else "–",
                 "expected": fmt_pct(expected.get(arm), signed=False)} for arm, n in counts.items()]
    ds = s.get("dataset") or {}
    n = s.get("n_units") or total
    missing = [{"feature": f, "n": fmt_num(v), "share": fmt_pct(v / n, signed=False) if _ok(v) and n else "–"}
               for f, v in sorted((ds.get("missing") or {}).items(), key=lambda kv: -(kv[1] or 0)) if v]
    bal = s.get("balance") or {}
    threshold = bal.get("threshold")
    worst = sorted(bal.get("worst") or [], key=lambda r: -abs(r.get("smd") or 0.0))[:MAX_BALANCE_ROWS]
    balance_rows = [{"column": r.get("column", ""), "detail": r.get("detail", ""), "arm": r.get("arm", ""),
                     "smd": fmt_signed(r.get("smd"), 3),
                     "flag": _ok(r.get("smd")) and _ok(threshold) and abs(r["smd"]) > threshold} for r in worst]
    features = ds.get("features") or {}
    kinds: dict[str, int] = {}
    for k in features.values():
        kinds[k] = kinds.get(k, 0) + 1
    return {
        "srm_ok": srm.get("ok"), "srm_p": fmt_p(srm.get("p_value")), "srm_chi2": fmt_num(srm.get("chi2")),
        "srm_threshold": srm.get("threshold"), "srm_basis": srm.get("basis") or "", "srm_rows": srm_rows,
        "n_rows_read": fmt_num(ds.get("n_rows_read")), "n_units": fmt_num(n), "n_dropped": ds.get("n_dropped") or 0,
        "dropped": [{"reason": k, "n": fmt_num(v)} for k, v in (ds.get("dropped") or {}).items()],
        "missing": missing, "balance_ok": bal.get("ok"), "balance_threshold": fmt_num(threshold),
        "balance_rows": balance_rows, "warnings": list(ds.get("warnings") or []),
        "features": ", ".join(f"{v} {k}" for k, v in kinds.items()), "n_features": len(features),
    }


def _effects_section(s: dict, metrics_by_name: dict[str, dict]) -> dict:
    effects = list(s.get("effects") or [])
    goals = {m: meta.get("goal", "increase") for m, meta in metrics_by_name.items()}
    rails = {(g.get("metric"), g.get("arm")): g for g in s.get("guardrails") or []}
    limits = {m: meta["max_harm"] for m, meta in metrics_by_name.items()
              if meta.get("role") == "guardrail" and _ok(meta.get("max_harm"))
              and all((g.get("basis") or "relative") == "relative" for (gm, _), g in rails.items() if gm == m)}
    rows = []
    for e in effects:
        goal = goals.get(e.get("metric"))
        g = rails.get((e.get("metric"), e.get("arm")))
        rows.append({
            "metric": e.get("metric", ""), "arm": e.get("arm", ""), "control_mean": fmt_num(e.get("control_mean")),
            "arm_mean": fmt_num(e.get("arm_mean")),
            "abs": _interval(e, goal),
            "rel": {"est": fmt_pct(e.get("relative")),
                    "ci": f"{fmt_pct(e.get('relative_ci_low'))} to {fmt_pct(e.get('relative_ci_high'))}"
                    if _ok(e.get("relative_ci_low")) else "",
                    "cls": _direction(goal, e.get("relative_ci_low"), e.get("relative_ci_high")), "rel": ""},
            "p": fmt_p(e.get("p_holm", e.get("p_value"))), "cuped": bool(e.get("cuped")),
            "guardrail": _guardrail_cell(e.get("metric", ""), g) if g else None,
        })
    svg = charts.forest_plot(effects, goals, limits)
    no_relative = [f"{e.get('metric')} · {e.get('arm')}" for e in effects if not _ok(e.get("relative"))]
    levels = {g.get("level") for g in rails.values() if _ok(g.get("level"))}
    return {"rows": rows, "chart": Markup(svg), "no_relative": no_relative, "control": s.get("control", "control"),
            "has_limits": bool(limits), "bound": _bound_name(levels.pop() if len(levels) == 1 else None)}


def _hte_section(s: dict, metric_names: list[str], colors: dict[str, str]) -> dict:
    hte = s.get("hte") or {}
    descriptions = {m.get("name"): m.get("description") for m in s.get("metrics") or [] if isinstance(m, dict)}
    tests = list(hte.get("heterogeneity") or [])
    board = list(hte.get("leaderboard") or [])
    selected = hte.get("selected") or {}
    importance = list(hte.get("importance") or [])
    names = list(dict.fromkeys([*metric_names, *(t.get("metric") for t in tests), *(r.get("metric") for r in board)]))
    blocks = []
    for metric in names:
        mt = [t for t in tests if t.get("metric") == metric]
        mb = [r for r in board if r.get("metric") == metric]
        if not mt and not mb:
            continue
        test_rows = []
        for t in mt:
            verdict = str(t.get("verdict") or "")
            differ = bool(verdict) and "no evidence" not in verdict and "not" not in verdict.split()
            test_rows.append({
                "arm": t.get("arm", ""), "verdict": verdict or "–", "cls": "differ" if differ else "same",
                "ate": fmt_signed(t.get("ate")),
                "slope": fmt_num(t.get("slope"), 3),
                "slope_ci": f"{fmt_num(t.get('slope_ci_low'), 3)} to {fmt_num(t.get('slope_ci_high'), 3)}"
                if _ok(t.get("slope_ci_low")) else "",
                "qini": fmt_signed(t.get("qini_area"), 3),
                "qini_se": fmt_num(t.get("qini_area_se"), 2),
                "p": fmt_p(t.get("p_holm", t.get("p_value"))),
            })
        chosen = selected.get(metric)
        board_rows = [{
            "learner": LEARNER_NAMES.get(r.get("learner"), str(r.get("learner"))),
            "selected": bool(r.get("selected")) or (chosen is not None and r.get("learner") == chosen),
            "score": fmt_num(r.get("score")),
            "score_ci": f"{fmt_num(r.get('score_ci_low'))} to {fmt_num(r.get('score_ci_high'))}" if _ok(r.get("score_ci_low")) else "",
            "vs": fmt_signed(r.get("vs_selected"), 3),
            "vs_ci": f"{fmt_signed(r.get('vs_selected_ci_low'), 3)} to {fmt_signed(r.get('vs_selected_ci_high'), 3)}"
            if _ok(r.get("vs_selected_ci_low")) and r.get("vs_selected") else "",
            "seconds": fmt_seconds(r.get("fit_seconds")),
        } for r in sorted(mb, key=lambda r: r.get("score") if _ok(r.get("score")) else math.inf)]
        top = sorted((i for i in importance if i.get("metric") == metric and _ok(i.get("importance"))),
                     key=lambda i: -i["importance"])[:5]
        blocks.append({
            "metric": metric, "tests": test_rows, "board": board_rows, "description": descriptions.get(metric) or "",
            "selected": LEARNER_NAMES.get(chosen, chosen) if chosen else "",
            "drivers": [{"feature": i.get("feature", ""), "share": fmt_pct(i["importance"], signed=False)} for i in top],
            "chart": Markup(charts.qini_chart(mt, metric, colors)),
        })
    holdout = hte.get("holdout") or {}
    return {"blocks": blocks, "score": hte.get("score") or "", "requested": hte.get("requested") or "",
            "holdout_share": fmt_pct(holdout.get("share"), signed=False) if holdout else ""}


def _segments_section(s: dict, metric_names: list[str], primary: str | None, goals: dict[str, str]) -> dict:
    segments = list((s.get("hte") or {}).get("segments") or [])

    def strength(seg: dict) -> float:
        vals = [e.get("estimate") for e in seg.get("effects") or [] if e.get("metric") == primary and _ok(e.get("estimate"))]
        sign = -1.0 if goals.get(primary) == "decrease" else 1.0
        return max((sign * v for v in vals), default=-math.inf)

    ranked = sorted(segments, key=strength, reverse=True)[:MAX_SEGMENTS]
    arms = list(dict.fromkeys(e.get("arm") for seg in segments for e in seg.get("effects") or []))
    used_metrics = [m for m in metric_names if any(e.get("metric") == m for seg in segments for e in seg.get("effects") or [])]
    rows = []
    for seg in ranked:
        cells = []
        for metric in used_metrics:
            lines = []
            for e in seg.get("effects") or []:
                if e.get("metric") == metric:
                    lines.append({"arm": e.get("arm", ""), **_interval(e, goals.get(metric))})
            cells.append(lines)
        rows.append({"rule": seg.get("rule", ""), "share": fmt_pct(seg.get("share"), signed=False),
                     "n": fmt_num(seg.get("n_estimation")), "cells": cells})
    return {"rows": rows, "metrics": used_metrics, "total": len(segments), "arms": arms, "primary": primary or ""}


def _policy_section(s: dict, policies: list[dict], metrics: list[dict], primary: str | None, recommended: str) -> dict:
    goal = next((m.get("goal") for m in metrics if m["name"] == primary), None)
    cert = _certification(s)
    rows = []
    best_arms = set()
    rail_names = list(dict.fromkeys(g for p in policies for g in (p.get("guardrails") or {})))
    # one limit per guardrail column, from the first policy that states it
    limits = {g: next((_limit_text(p["guardrails"][g]) for p in policies if isinstance((p.get("guardrails") or {}).get(g), dict)), "")
              for g in rail_names}
    levels = {g.get("level") for p in policies for g in (p.get("guardrails") or {}).values() if isinstance(g, dict)}
    level = next(iter(levels)) if len(levels) == 1 else None
    for p in policies:
        name = p.get("name", "")
        badges = _guardrail_badges(p.get("guardrails"))
        value = p.get("value") or {}
        vs_control = (p.get("lift_vs_control") or {}).get(primary)
        control_value = None
        if vs_control and _ok((value.get(primary) or {}).get("estimate")) and _ok(vs_control.get("estimate")):
            control_value = value[primary]["estimate"] - vs_control["estimate"]
        if p.get("best_arm"):
            best_arms.add(p["best_arm"])
        kind = base_kind(p)
        detail, detail_title = kind, ""
        if kind == "tree":
            detail = f"tree, depth {p.get('complexity')}"
        elif kind == "constant":
            detail = f"everyone: {p['arm']}" if p.get("arm") else "random arm"
        elif kind == "value":
            detail = "value model"
            if _ok(p.get("planned_power")):  # a ladder step: the long form goes in the tooltip, the table stays narrow
                detail = "value, bolder step" if p["planned_power"] < POWER else "value, safer step"
                detail_title = (f"the value policy re-thresholded so that its held-out test would pass "
                                f"{p['planned_power']:.0%} of the time if its building-units harm held (the default plans for {POWER:.0%})")
        if p.get("kind") == "routing":
            n = len(p.get("routes") or [])
            detail = f"{detail} ×{n}"
            detail_title = (f"{n} policies built the same way, one per part of the units by a hash of the unit id, each by a fit "
                            "that never saw the units it serves (cross-fitted)" + (f"; each is {detail_title}" if detail_title else ""))
        rows.append({
            "name": name, "short": _short(name, s.get("experiment", "")), "detail": detail, "detail_title": detail_title,
            "recommended": name == recommended, "status": _status(p, s, cert),
            # three digits for the interval ends keep this wide table within the page
            "vals": [_value_cell(value.get(m["name"]), sig=3) for m in metrics],
            "vs_control": _interval(vs_control, goal, control_value, sig=3),
            "vs_best": _interval((p.get("lift_vs_best_arm") or {}).get(primary), goal, sig=3),
            "rails": [next((b for b in badges if b["metric"] == g), None) for g in rail_names],
        })
    return {"rows": rows, "metrics": [m["name"] for m in metrics], "primary": primary or "", "guardrails": rail_names,
            "limits": limits, "bound": _bound_name(level) if level is not None else "upper bound",
            "best_arm": ", ".join(sorted(best_arms)), "n_eval": fmt_num((s.get("evaluation_rows") or {}).get("n_units")),
            "cert_text": str(cert.get("text") or ""), "has_cert": bool(cert), "procedure": _procedure(cert),
            "family_level": fmt_pct(cert.get("level"), signed=False) if _ok(cert.get("level")) else "",
            "k": cert.get("k") if _ok(cert.get("k")) else None}


def _candidate_policies(candidates: list[dict], policies: list[dict], experiment: str) -> dict[int, dict]:
    """The policy row each Pareto candidate became, by candidate index.

    A tuned policy records the weights and budget of the candidate it was built from (its distilled tree copies them,
    so value policies are matched first); rows named ``<experiment>-pareto-<i>`` are the fallback.
    """
    tuned = sorted((p for p in policies if p.get("tuning")), key=lambda p: base_kind(p) != "value")
    out: dict[int, dict] = {}
    for i, c in enumerate(candidates):
        match = next((p for p in tuned if (p.get("tuning") or {}).get("weights") == c.get("weights")
                      and (p.get("tuning") or {}).get("budget") == c.get("budget")), None)
        if match is None:
            match = next((p for p in policies if p.get("name") == f"{experiment}-pareto-{i + 1}"), None)
        if match is not None:
            out[i] = match
    return out


def _search_limit(rail: dict | None) -> Any:
    """A search guardrail's limit: max_harm when relative, 0 when absolute (as pex.experiment.guardrail)."""
    return limit_of({"basis": "relative", **(rail or {})})


def _pareto_section(s: dict, policies: list[dict], recommended: str) -> dict:
    pareto = s.get("pareto") or {}
    fronts = pareto.get("fronts") or {}
    candidates = list(pareto.get("candidates") or [])
    experiment = s.get("experiment", "")
    cert = _certification(s)
    rails_meta = pareto.get("guardrails") or {}
    matched = _candidate_policies(candidates, policies, experiment)
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
            b, limit = (c.get("guardrail_bound") or {}).get(g), _search_limit(rails_meta.get(g))
            bounds.append({"text": show[g](b), "cls": "bad" if _ok(b) and _ok(limit) and b > limit else ""})
        row = {
            "label": labels.get(i, f"#{i + 1}"), "policy": (policy or {}).get("name", ""), "recommended": i == rec_index,
            "weights": ", ".join(f"{m} {fmt_num(w, 2)}" for m, w in (c.get("weights") or {}).items()),
            "budget": fmt_pct(c.get("budget"), signed=False),
            "objectives": [fmt_signed((c.get("objectives") or {}).get(o), 3) for o in objectives],
            "harm": [show[g]((c.get("guardrail_harm") or {}).get(g)) for g in guardrails],
            "bound": bounds if any(b["text"] != "–" for b in bounds) else [],
            "treated": fmt_pct(c.get("treated_share"), signed=False), "held": None,
        }
        if policy is not None:  # the same candidate valued on the held-out units: its policy row
            lifts = policy.get("lift_vs_control") or {}
            rails = policy.get("guardrails") or {}
            shares = policy.get("arm_shares") or {}
            treated = 1.0 - shares[s.get("control")] if _ok(shares.get(s.get("control"))) else None
            row["held"] = {"objectives": [_interval(lifts.get(o), goals.get(o), sig=3) for o in objectives],
                           "treated": fmt_pct(treated, signed=False),
                           "rails": [_guardrail_cell(g, rails[g]) if isinstance(rails.get(g), dict) else None for g in guardrails],
                           "status": _status(policy, s, cert)}
            held_out[i] = {"objectives": {o: (lifts.get(o) or {}).get("estimate") for o in objectives},
                           "guardrail_harm": {g: _guardrail_value(rails.get(g)) for g in guardrails}}
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
    n_evaluated = sum(fronts[k].get("evaluated") for k in samples if _ok(fronts[k].get("evaluated")))
    limit = (rails_meta.get(guardrails[0]) or {}).get("max_harm") if guardrails else None
    # newer searches call a weighting feasible when its certifiable bound (harm plus a margin) is within the limit
    by_bound = bool(pareto.get("feasible_means")) or any("guardrail_bound" in c for c in candidates)
    tradeoff = {"chart": Markup(charts.tradeoff_chart(pareto, labels, rec_index, held_out)),
                "guardrail": guardrails[0] if guardrails else "", "primary": objectives[0] if objectives else "",
                "others": ", ".join(objectives[1:]), "has_limit": _ok(limit), "more_rails": len(guardrails) > 1,
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
        "limits": [{"metric": g, "max_harm": fmt_pct((v or {}).get("max_harm"), signed=False), "basis": (v or {}).get("basis", "")}
                   for g, v in rails_meta.items()],
        "has_ax": "ax" in fronts, "n_units": fmt_num(pareto.get("n_units")),
        "in_sample": in_sample[:1].upper() + in_sample[1:].rstrip(".") if in_sample else "",
        "feasible_means": str(pareto.get("feasible_means") or "").rstrip("."),
        "n_eval": fmt_num(pareto.get("n_eval")) if _ok(pareto.get("n_eval")) and pareto.get("n_eval") else "",
    }


def _guardrail_value(g: Any) -> Any:
    """A guardrail cell's harm estimate (whatever the summary's age called it)."""
    if not isinstance(g, dict):
        return None
    return g.get("estimate", g.get("relative_harm", g.get("absolute_harm")))


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
        if not _ok(agreement):
            agreement = curve.get("agreement")
        # Trees are distilled from the value model built with the run's default weights; the recommended policy may be
        # a Pareto candidate with other weights, so the agreement is only "with the recommended policy" when it is that model.
        source = next((p for p in policies_by_name.values() if base_kind(p) == "value" and not p.get("tuning")), None)
        is_source = source is not None and source.get("name") == out["name"]
        tree = tree_of(chosen)
        svg = charts.tree_diagram(tree, colors) if kind != "constant" and isinstance(tree, dict) else ""
        leaves = _tree_arms(tree) if svg else set()
        out["distilled"] = {"name": chosen.get("name", ""), "depth": fid.get("depth", dist.get("chosen_depth")),
                            "agreement": fmt_pct(agreement, signed=False) if _ok(agreement) else "",
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
        out["uniform"] = _ok(expl) and expl >= 1.0
        out["arm"] = doc.get("default_arm") or ""
    elif kind == "value":
        vm = doc.get("value_model") or {}
        out["weights"] = [{"metric": m, "weight": fmt_num(v.get("weight"), 3), "goal": v.get("goal", ""), "role": v.get("role", "")}
                          for m, v in (vm.get("metrics") or {}).items()]
        out["value"] = {"fit": vm.get("fit") or "", "budget": fmt_pct(vm.get("budget"), signed=False) if _ok(vm.get("budget")) else "",
                        "guardrails": [{"metric": g, "mode": v.get("mode", ""),
                                        "max_harm": fmt_pct(v.get("max_harm"), signed=False) if _ok(v.get("max_harm")) else ""}
                                       for g, v in (vm.get("guardrails") or {}).items()]}
    return out


def _caveats_section(s: dict) -> dict:
    ev = s.get("evaluation_rows") or {}
    return {"notes": [str(c) for c in s.get("caveats") or []],
            "eval": {"n": fmt_num(ev.get("n_units")), "share": fmt_pct(ev.get("share"), signed=False), "rule": ev.get("rule") or "",
                     "note": (str(ev.get("note") or "")[:1].upper() + str(ev.get("note") or "")[1:]).rstrip("."), "seed": ev.get("seed"),
                     "arms": ", ".join(f"{a} {fmt_num(n)}" for a, n in (ev.get("arm_counts") or {}).items())} if ev else None}


def _footer(s: dict) -> dict:
    timings = s.get("timings") or {}
    return {"experiment": s.get("experiment", ""), "owner": s.get("owner") or "", "generated_at": s.get("generated_at") or "",
            "pex_version": s.get("pex_version") or "", "dataset": (s.get("dataset") or {}).get("id") or "",
            "timings": [{"stage": k, "t": fmt_seconds(v)} for k, v in timings.items() if k != "total"],
            "total": fmt_seconds(timings.get("total")) if "total" in timings else ""}


# --------------------------------------------------------------------------- entry point


def render_report(summary: dict) -> str:
    """Render a run summary (as written by :func:`pex.services.run.run`) as one self-contained HTML document.

    Parameters
    ----------
    summary
        The ``pex.summary/1`` dictionary. Sections whose inputs are missing or
        empty say so instead of failing, so partial or older summaries still render.

    Returns
    -------
    str
        A complete HTML page with inline CSS and inline SVG charts; it loads
        nothing from the network.
    """
    s = summary
    metrics = [m for m in s.get("metrics") or [] if isinstance(m, dict) and m.get("name")]
    if not metrics:  # fall back to the metrics the effects mention
        metrics = [{"name": n, "role": "", "goal": "increase"} for n in dict.fromkeys(e.get("metric") for e in s.get("effects") or [])]
    metrics_by_name = {m["name"]: m for m in metrics}
    metric_names = [m["name"] for m in metrics]
    goals = {m["name"]: m.get("goal", "increase") for m in metrics}
    arms = list(s.get("arms") or (s.get("dataset") or {}).get("arm_counts") or [])
    colors = charts.arm_colors(arms, s.get("control"))
    policies = [p for p in s.get("policies") or [] if isinstance(p, dict)]
    by_name = {p.get("name"): p for p in policies}
    verdict = _verdict_section(s, by_name, metrics, colors)
    primary = verdict["primary"] or (metric_names[0] if metric_names else None)
    context = {
        "s": {"experiment": s.get("experiment", ""), "description": s.get("description") or "", "owner": s.get("owner") or "",
              "n_units": fmt_num(s.get("n_units")), "arms": arms, "control": s.get("control", ""),
              "crossfit": bool(s.get("crossfit")),
              "metrics": [{"name": m["name"], "role": m.get("role", ""), "goal": m.get("goal", ""),
                           "description": m.get("description") or "", "type": m.get("type") or ""} for m in metrics]},
        "colors": colors,
        "verdict": verdict,
        "health": _health_section(s),
        "effects": _effects_section(s, metrics_by_name),
        "hte": _hte_section(s, metric_names, colors),
        "segments": _segments_section(s, metric_names, primary, goals),
        "policies": _policy_section(s, policies, metrics, primary, verdict["policy"]),
        "pareto": _pareto_section(s, policies, verdict["policy"]),
        "doc": _policy_doc_section(s, by_name, colors),
        "caveats": _caveats_section(s),
        "footer": _footer(s),
    }
    return _environment().get_template("report.html.j2").render(**context)
