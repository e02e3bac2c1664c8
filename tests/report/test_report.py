"""The HTML evaluation report: sections, charts, self-containment, and edge cases of the summary."""

from __future__ import annotations

import copy
import html
import importlib
import re
from collections import Counter

import pytest

from pex.errors import PexError
from pex.evaluation.recommendation import CERTIFICATION, REASON_CODES, reason_text
from pex.report import numbers
from pex.report.cells import base_kind, tree_of
from pex.report.charts import arm_colors, pareto_chart, tradeoff_chart, tree_diagram
from pex.report.html import render_report
from pex.report.numbers import fmt_decimals, fmt_num, fmt_p, fmt_p_terminal, fmt_pct, fmt_pct1, fmt_signed
from pex.report.summary import SUMMARY_FORMAT, RunSummary

SECTION_HEADINGS = [
    "Verdict and recommendation",
    "Data health",
    "Average effects of each arm",
    "Do effects differ across units?",
    "Segments that respond",
    "Policy comparison",
    "Trade-offs: the Pareto front",
    "The recommended policy",
    "Caveats",
]

# Any attribute or CSS reference that would make the browser fetch something from the network.
NETWORK_REF = re.compile(
    r"""(?:\b(?:src|href|xlink:href|action|poster|srcset|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//)|@import""",
    re.IGNORECASE,
)

SMALL_TREE = {
    "feature": "tenure_days", "op": "<=", "value": 60.5, "missing": "left",
    "left": {"arm": "daily"},
    "right": {
        "feature": "country", "op": "in", "value": ["IN", "BR", "US", "DE", "FR"],
        "left": {"arm": "weekly"},
        "right": {"feature": "age", "op": "<=", "value": 45.5, "left": {"arm": "control"}, "right": {"arm": "monthly"}},
    },
}


@pytest.fixture(scope="module")
def summary(pipeline_run) -> dict:
    return pipeline_run.summary


@pytest.fixture
def s(summary) -> dict:
    """A private deep copy of the run summary to break in one test."""
    return copy.deepcopy(summary)


def reason(code: str, text: str) -> dict:
    """A reason as the summary carries it (its sentence given, not rendered from parameters)."""
    return {"code": code, "params": {}, "text": text}


def headings(page: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<h2>(.*?)</h2>", page, flags=re.DOTALL)]


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    assert page.rstrip().endswith("</html>")
    assert not NETWORK_REF.search(page), NETWORK_REF.search(page)
    assert "<script" not in page and "<link" not in page and "<img" not in page and "<iframe" not in page
    ids = Counter(re.findall(r'\sid="([^"]+)"', page))
    assert not [i for i, n in ids.items() if n > 1], "element ids must be unique within the page"


def chart_keys(page: str) -> list[str]:
    return re.findall(r'<svg role="img" class="chart-svg" data-chart="([^"]+)"', page)


# --------------------------------------------------------------------------- the real run


def test_report_written_by_the_pipeline_is_the_rendered_summary(pipeline_run):
    page = (pipeline_run.out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert pipeline_run.summary["recommendation"]["headline"] in html.unescape(page)


def test_sections_in_reading_order(summary):
    page = render_report(summary)
    found = headings(page)
    assert len(found) == len(SECTION_HEADINGS)
    for title, heading in zip(SECTION_HEADINGS, found):
        assert title in heading


def test_verdict_names_the_recommended_policy_and_its_file(summary):
    page = render_report(summary)
    rec = summary["recommendation"]
    verdict = page[page.index('id="verdict"'):page.index('id="data-health"')]
    assert rec["policy"] in verdict
    assert f"policies/{rec['policy']}.json" in verdict
    for reason in rec["reasons"]:
        assert reason["text"] in html.unescape(verdict)
    assert "vs everyone on" in verdict


def test_report_has_no_network_references_at_all(summary):
    page = render_report(summary)
    assert_self_contained(page)
    assert "http://" not in page and "https://" not in page


def test_every_chart_is_inline_svg(summary):
    page = render_report(summary)
    keys = chart_keys(page)
    assert "forest" in keys and "pareto" in keys
    metrics_with_tests = {t["metric"] for t in summary["hte"]["heterogeneity"] if t.get("qini_curve")}
    assert {f"qini-{m}" for m in metrics_with_tests} <= set(keys)
    assert page.count("<svg") >= len(keys) == len(set(keys))
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    # every chart has a caption right under it
    assert page.count("<figcaption>") >= len(keys)


def test_policy_table_lists_every_policy_and_highlights_the_recommended_one(summary):
    page = render_report(summary)
    table = page[page.index('id="policies"'):page.index('id="pareto"')]
    for p in summary["policies"]:
        assert f'title="{p["name"]}"' in table
    assert table.count('class="hl"') == 1
    assert "recommended" in table
    verdicts = {g["verdict"] for p in summary["policies"] for g in p["guardrails"].values()}
    for v in verdicts:
        assert f'class="badge {v}"' in table


def test_rendering_is_deterministic(summary):
    assert render_report(summary) == render_report(copy.deepcopy(summary))


def test_user_text_is_escaped(s):
    s["description"] = "<script>alert(1)</script> & more"
    s["recommendation"]["headline"] = "Keep <b>control</b>"
    page = render_report(s)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "Keep &lt;b&gt;control&lt;/b&gt;" in page


# --------------------------------------------------------------------------- edge cases


def test_without_the_ax_front(s):
    s["pareto"]["fronts"].pop("ax", None)
    page = render_report(s)
    assert "pareto" in chart_keys(page)
    assert "Bayesian optimisation (Ax) was not run" in page
    assert_self_contained(page)


def test_single_objective_plots_against_guardrail_harm(s):
    s["pareto"]["objectives"] = s["pareto"]["objectives"][:1]
    s["pareto"]["reference_point"] = {k: v for k, v in s["pareto"]["reference_point"].items() if k in s["pareto"]["objectives"]}
    page = render_report(s)
    assert "pareto" in chart_keys(page)
    assert "the estimated harm on" in page
    s["pareto"]["guardrails"] = {}
    page = render_report(s)  # no guardrail either: a one-row strip per method
    assert "pareto" in chart_keys(page)


@pytest.mark.parametrize("n_points", [0, 1])
def test_tiny_pareto_fronts(s, n_points):
    for front in s["pareto"]["fronts"].values():
        front["pareto"] = front["pareto"][:n_points]
    s["pareto"]["candidates"] = s["pareto"]["candidates"][:n_points]
    page = render_report(s)
    assert ("pareto" in chart_keys(page)) == (n_points > 0)
    if n_points == 0:
        assert "no feasible weighting to plot" in page
    assert_self_contained(page)


def test_a_candidate_that_became_no_policy_still_renders(s):
    # on small data a Pareto candidate can be dropped (e.g. all-control, already a baseline): no row names it
    candidate = dict(s["pareto"]["candidates"][0], weights={"no_such_metric": 1.0})
    s["pareto"]["candidates"].append(candidate)
    page = render_report(s)
    assert f"#{len(s['pareto']['candidates'])}" in page
    assert_self_contained(page)


def test_no_pareto_search_at_all(s):
    s.pop("pareto")
    page = render_report(s)
    assert "pareto" not in chart_keys(page)
    assert "Trade-offs: the Pareto front" in page


def test_constant_recommendation_says_there_is_no_tree(s):
    control = s["control"]
    name = next(p["name"] for p in s["policies"] if p["kind"] == "constant" and p.get("arm") == control)
    s["recommendation"].update(policy=name, kind="constant", verdict="keep_control",
                               headline=f"Keep {control!r} for everyone.", reasons=[],
                               document={"format": "pex.policy/1", "name": name, "kind": "constant", "arms": s["arms"],
                                         "default_arm": control, "exploration": 0.0})
    s["recommended_policy"] = name
    page = render_report(s)
    assert f"Everyone gets {control}." in page
    assert "no tree to draw" in page
    assert "Keep control" in page  # the verdict label
    assert "tree-svg" not in page


def test_uniform_recommendation(s):
    s["recommendation"]["document"] = {"name": "u", "kind": "constant", "arms": s["arms"], "default_arm": s["control"],
                                       "exploration": 1.0}
    page = render_report(s)
    assert "Every unit gets a random arm" in page


def test_tree_recommendation_draws_every_leaf(s):
    s["recommendation"]["document"] = {"format": "pex.policy/1", "name": "hand-made", "kind": "tree",
                                       "arms": ["control", "daily", "weekly", "monthly"], "default_arm": "control",
                                       "exploration": 0.05, "tree": SMALL_TREE}
    s["recommendation"]["kind"] = "tree"
    page = render_report(s)
    policy = page[page.index('id="policy"'):page.index('id="caveats"')]
    assert "tree-svg" in policy
    assert sorted(re.findall(r'class="leaf" data-arm="([^"]+)"', policy)) == ["control", "daily", "monthly", "weekly"]
    assert "tenure_days ≤ 60.5" in policy and "yes / missing" in policy
    assert "country in {IN, BR, US, +2 more}" in policy


def test_value_recommendation_lists_weights(s):
    s["recommendation"]["kind"] = "value"
    s["recommendation"]["document"] = {
        "format": "pex.policy/1", "name": "hand-made-value", "kind": "value", "arms": s["arms"], "default_arm": s["control"],
        "exploration": 0.05,
        "value_model": {"fit": "fit-123", "budget": 0.3, "min_score": 0.1,
                        "metrics": {"sessions": {"goal": "increase", "role": "primary", "weight": 0.6},
                                    "unsubscribes": {"goal": "decrease", "role": "guardrail", "weight": 0.4}},
                        "guardrails": {"unsubscribes": {"mode": "constraint", "max_harm": 0.05, "limit": 0.05}}}}
    page = render_report(s)
    policy = page[page.index('id="policy"'):page.index('id="caveats"')]
    assert "value-model policy" in policy
    chosen_tree = any((p.get("fidelity") or {}).get("chosen") and tree_of(p) for p in s["policies"])
    assert ("not a tree;" in policy) == chosen_tree and ("no tree to draw" in policy) == (not chosen_tree)
    assert "<td>sessions</td>" in policy and "<td>unsubscribes</td>" in policy and ">0.6<" in policy
    assert "At most 30% of units" in policy and "fit-123" in policy
    assert "unsubscribes (constraint, at most 5% harm)" in policy
    chosen = [p for p in s["policies"] if (p.get("fidelity") or {}).get("chosen")]
    if chosen:
        assert f"<code>{chosen[0]['name']}</code> is a depth-" in policy


def test_empty_segments(s):
    s["hte"]["segments"] = []
    page = render_report(s)
    assert "No segments were found" in page


def test_missing_guardrail_and_relative_effects(s):
    for p in s["policies"]:
        p["guardrails"] = {}
    s["guardrails"] = []
    for e in s["effects"]:
        e["relative"] = e["relative_ci_low"] = e["relative_ci_high"] = None
    page = render_report(s)
    assert "forest" not in chart_keys(page)
    assert "No relative effects to plot" in page
    assert_self_contained(page)


def test_srm_mismatch_and_imbalance_are_flagged(s):
    s["srm"]["ok"] = False
    s["balance"]["ok"] = False
    s["dataset"]["n_dropped"] = 12
    s["dataset"]["dropped"] = {"missing arm": 12}
    page = render_report(s)
    assert "The arms did not receive their planned shares" in page
    assert ">imbalanced<" in page
    assert "12 rows were dropped" in page and "missing arm (12)" in page


# --------------------------------------------------------------------------- sampled weightings and the trade-off chart


def section(page: str, start: str, end: str) -> str:
    return page[page.index(f'id="{start}"'):page.index(f'id="{end}"')]


def chart_svg(page: str, key: str) -> str:
    start = page.index(f'data-chart="{key}"')
    return page[start:page.index("</svg>", start)]


def test_summary_has_sampled_weightings(summary):
    fronts = summary["pareto"]["fronts"]
    methods = [m for m in fronts if m != "kept"]
    assert "dense" in methods  # the default search is the dense sweep (Ax only when enabled)
    n_obj, n_rail = len(summary["pareto"]["objectives"]), len(summary["pareto"]["guardrails"])
    for method in methods:
        sample = fronts[method]["sample"]
        assert 0 < len(sample["objectives"]) == len(sample["guardrail_harm"]) == len(sample["feasible"]) <= 400
        assert {len(o) for o in sample["objectives"]} == {n_obj} and {len(h) for h in sample["guardrail_harm"]} == {n_rail}
    assert "sample" not in fronts["kept"]


def test_tradeoff_chart_follows_the_pareto_chart(summary):
    assert summary["pareto"]["guardrails"], "the test run has a guardrail"
    page = render_report(summary)
    pareto = section(page, "pareto", "policy")
    keys = chart_keys(pareto)
    assert keys[:2] == ["pareto", "tradeoff"]
    rail = next(iter(summary["pareto"]["guardrails"]))
    primary = summary["pareto"]["objectives"][0]
    caption = html.unescape(pareto[pareto.index('data-chart="tradeoff"'):])
    caption = caption[caption.index("<figcaption>"):caption.index("</figcaption>")]
    assert "Every dot is one weighting the search tried" in caption
    caption = " ".join(caption.split())
    assert f"further right harms {rail} more, higher gains more {primary}" in caption
    # feasible means the certifiable bound, not the harm, is within the limit: crosses can sit left of the line
    assert "feasible (grey dot) when its certifiable bound" in caption and "is left of the dashed line" in caption
    assert "in-sample (training units)" in caption
    # the sampled cloud is mentioned under the Pareto chart too
    assert "faint dots and crosses behind are other weightings the search tried" in pareto
    # one caption per chart in the section, the trade-off chart before the search-method table
    assert pareto.count("<figcaption>") == 2
    assert pareto.index('data-chart="tradeoff"') < pareto.index("Search method")


def test_tradeoff_chart_needs_a_guardrail(s):
    s["pareto"]["guardrails"] = {}
    for front in s["pareto"]["fronts"].values():
        for p in [*front.get("pareto", []), *s["pareto"]["candidates"]]:
            p["guardrail_harm"] = {}
        if "sample" in front:
            front["sample"]["guardrail_harm"] = [[] for _ in front["sample"]["objectives"]]
    page = render_report(s)
    keys = chart_keys(page)
    assert "pareto" in keys and "tradeoff" not in keys
    assert tradeoff_chart(s["pareto"]) == ""
    assert_self_contained(page)


def test_older_summary_without_samples(s):
    for front in s["pareto"]["fronts"].values():
        front.pop("sample", None)
    page = render_report(s)
    keys = chart_keys(page)
    assert "pareto" in keys and "tradeoff" not in keys
    assert "faint dots" not in page and "Every dot is one weighting" not in page
    assert_self_contained(page)


def test_sampled_cloud_is_drawn_behind_the_fronts(summary):
    with_sample = pareto_chart(summary["pareto"])
    bare = copy.deepcopy(summary["pareto"])
    for front in bare["fronts"].values():
        front.pop("sample", None)
    without = pareto_chart(bare)
    n_sampled = sum(len(f["sample"]["objectives"]) for f in summary["pareto"]["fronts"].values() if "sample" in f)
    # every scatter point is one <use> of its marker
    assert with_sample.count("<use ") - without.count("<use ") >= n_sampled


def test_malformed_or_infeasible_samples_still_render(s):
    dense = s["pareto"]["fronts"]["dense"]["sample"]
    dense["objectives"][0] = [None, float("nan")]
    dense["objectives"][1] = "broken"
    dense["guardrail_harm"] = dense["guardrail_harm"][: len(dense["guardrail_harm"]) // 2]  # ragged
    dense.pop("feasible")  # treated as feasible
    # a second method that sampled nothing (Ax is off by default, so add one)
    s["pareto"]["fronts"].setdefault("ax", copy.deepcopy(s["pareto"]["fronts"]["dense"]))
    s["pareto"]["fronts"]["ax"]["sample"] = {"objectives": [], "guardrail_harm": [], "feasible": []}
    page = render_report(s)
    assert {"pareto", "tradeoff"} <= set(chart_keys(page))
    for front in s["pareto"]["fronts"].values():
        if "sample" in front:
            front["sample"]["feasible"] = [False] * len(front["sample"]["objectives"])
    page = render_report(s)
    assert {"pareto", "tradeoff"} <= set(chart_keys(page))
    assert_self_contained(page)
    # a guardrail but nothing sampled on it: no trade-off chart
    for front in s["pareto"]["fronts"].values():
        if "sample" in front:
            front["sample"] = {"objectives": [], "guardrail_harm": [], "feasible": []}
    assert "tradeoff" not in chart_keys(render_report(s))


def test_tradeoff_chart_with_a_single_objective(s):
    objectives = s["pareto"]["objectives"][:1]
    s["pareto"]["objectives"] = objectives
    for front in s["pareto"]["fronts"].values():
        if "sample" in front:
            front["sample"]["objectives"] = [o[:1] for o in front["sample"]["objectives"]]
    page = render_report(s)
    assert {"pareto", "tradeoff"} <= set(chart_keys(page))
    caption = section(page, "pareto", "policy")
    assert "give up some" not in caption  # nothing else to trade the primary metric for


# --------------------------------------------------------------------------- the distilled tree under a value policy


def tree_arms(node: dict) -> set[str]:
    return {node["arm"]} if "feature" not in node else tree_arms(node["left"]) | tree_arms(node["right"])


def kind_of(p: dict) -> str:
    """A policy row's kind, through a cross-fitted (routing) policy to its routes' kind."""
    return base_kind(p)


def chosen_tree(summary: dict) -> dict:
    chosen = [p for p in summary["policies"] if (p.get("fidelity") or {}).get("chosen")]
    assert len(chosen) == 1 and kind_of(chosen[0]) == "tree" and isinstance(tree_of(chosen[0]), dict)
    return chosen[0]


def recommend_value_policy(s: dict, name: str) -> None:
    s["recommendation"].update(policy=name, kind="value", verdict="personalize")
    s["recommendation"]["document"] = {
        "format": "pex.policy/1", "name": name, "kind": "value", "arms": s["arms"], "default_arm": s["control"],
        "exploration": 0.05, "value_model": {"fit": "fit-1", "metrics": {}, "guardrails": {}}}
    s["recommended_policy"] = name


def test_distilled_tree_is_drawn_under_a_tuned_value_recommendation(s):
    tree = chosen_tree(s)
    tuned = next(p for p in s["policies"] if kind_of(p) == "value" and p.get("tuning"))
    recommend_value_policy(s, tuned["name"])
    page = render_report(s)
    policy = section(page, "policy", "caveats")
    assert "tree-svg" in policy
    assert set(re.findall(r'class="leaf" data-arm="([^"]+)"', policy)) == tree_arms(tree_of(tree))
    heading = re.sub(r"<[^>]+>", "", re.search(r"<h3>(Its readable approximation:.*?)</h3>", policy, re.DOTALL).group(1))
    agreement = fmt_pct(tree["fidelity"]["agreement_with_value_policy"], signed=False)
    assert f"{tree['name']} (depth {tree['fidelity']['depth']}, agrees with the default-weight value model on {agreement}" in heading
    assert "the recommended policy on" not in policy  # the tree was not distilled from the tuned weights
    assert "not from the recommended policy's own weights" in policy
    assert policy.count("<figcaption>") == 1
    # the legend names exactly the arms at the leaves
    legend = policy[policy.rindex('<div class="legend">'):]
    assert set(re.findall(r"</i>([^<]+)</span>", legend)) == tree_arms(tree_of(tree))


def test_distilled_tree_of_the_default_value_recommendation(s):
    tree = chosen_tree(s)
    default = next(p for p in s["policies"] if kind_of(p) == "value" and not p.get("tuning"))
    recommend_value_policy(s, default["name"])
    policy = section(render_report(s), "policy", "caveats")
    assert "tree-svg" in policy and "agrees with the recommended policy on" in policy
    assert f"<code>{tree['name']}</code> is a depth-" in policy


def test_distilled_tree_without_its_document_is_only_named(s):
    tree = chosen_tree(s)
    tree.pop("tree", None)
    for route in tree.get("routes") or []:
        route.pop("tree", None)
    tuned = next(p for p in s["policies"] if kind_of(p) == "value" and p.get("tuning"))
    recommend_value_policy(s, tuned["name"])
    policy = section(render_report(s), "policy", "caveats")
    assert "tree-svg" not in policy and "Its readable approximation" not in policy
    assert f"A readable approximation: <code>{tree['name']}</code> is a depth-" in policy
    assert "no tree to draw" in policy


# --------------------------------------------------------------------------- certification and guardrail bounds


def policy_row(table: str, name: str) -> str:
    """The <tr> of policy ``name`` in a rendered table (rows carry the full name as their first cell's title)."""
    start = table.index(f'title="{name}"')
    return table[table.rindex("<tr", 0, start):table.index("</tr>", start)]


def status_label(row: str) -> str:
    return re.search(r'<span class="badge (?:yes|no|screened|fallback|unknown)"[^>]*>([^<]+)</span>', row).group(1)


def test_summary_round_trips_through_the_typed_model(summary):
    assert summary["format"] == SUMMARY_FORMAT
    assert RunSummary.load(summary).to_dict() == summary


def test_reasons_are_codes_whose_sentence_is_rendered_from_them(summary):
    reasons = summary["recommendation"]["reasons"]
    assert reasons
    for r in reasons:
        assert r["code"] in REASON_CODES and r["text"] == reason_text(r["code"], r["params"])


def test_summary_carries_the_certificate(summary):
    rec = summary["recommendation"]
    cert = rec["certification"]
    assert isinstance(rec["cannot_certify"], bool)
    assert cert["method"] == CERTIFICATION and cert["k"] == len(cert["family"])
    assert set(cert["certified"]) <= set(cert["family"]) and not set(cert["family"]) & set(cert["screened_out"])
    for p in summary["policies"]:
        for g in p["guardrails"].values():
            assert g["level"] == 0.95 and g["lower"] <= g["estimate"] <= g["upper"]


def test_verdict_states_what_certified_means_and_where_the_numbers_come_from(summary):
    rec, cert = summary["recommendation"], summary["recommendation"]["certification"]
    verdict = html.unescape(section(render_report(summary), "verdict", "data-health"))
    assert cert["text"] and cert["text"] in verdict
    assert f"The numbers in this box come from {cert['rows']}" in verdict
    if cert["k"]:
        assert f"tested there {cert['procedure']}" in verdict
    value = cert["value"]
    assert f"<b>{fmt_num(value['estimate'])}</b> (bounds {fmt_num(value['low'])} to {fmt_num(value['high'])})" in verdict
    control = next(p["name"] for p in summary["policies"] if p["kind"] == "constant" and p.get("arm") == summary["control"])
    lift = cert["lift_vs_control"]
    if rec["policy"] != control:
        assert f"{fmt_signed(lift['estimate'])}</b> (bounds {fmt_signed(lift['low'])} to {fmt_signed(lift['high'])})" in verdict
    else:
        assert "there is no lift to bound" in verdict
    assert ('role="alert"' in verdict) == rec["cannot_certify"]


def test_cannot_certify_is_said_plainly_first(s):
    control = next(p["name"] for p in s["policies"] if p["kind"] == "constant" and p.get("arm") == s["control"])
    first = ("Nothing could be certified. The best candidate, exp-value, has unsubscribes harm +3.1% (standard error 1.2%, "
             "upper bound +5.1% vs limit +5.0%); certifying it would take about 9,000 held-out units")
    s["recommendation"].update(policy=control, kind="constant", verdict="keep_control", cannot_certify=True,
                               headline="Keep 'control' for everyone: nothing could be certified.",
                               reasons=[reason("cannot_certify", first), reason("screened_out", "another reason")])
    s["recommendation"]["certification"].update(certified=[], value={"estimate": 1.0, "se": 0.1, "low": 0.8, "high": 1.2},
                                                lift_vs_control={"estimate": 0.0, "se": 0.0, "low": 0.0, "high": 0.0})
    s["recommended_policy"] = control
    verdict = html.unescape(section(render_report(s), "verdict", "data-health"))
    alert = re.search(r'<div class="alert" role="alert">(.*?)</div>', verdict, re.DOTALL).group(1)
    assert alert == first
    assert verdict.index(alert) < verdict.index("another reason")  # before the other reasons, and only once
    assert verdict.count(first) == 1
    assert "Keep control · nothing certified" in verdict
    # nothing certified and no reason at all
    s["recommendation"]["reasons"] = []
    assert 'role="alert">Nothing could be certified.</div>' in render_report(s)


def test_guardrails_show_one_sided_upper_bounds_not_a_ci(summary):
    page = html.unescape(render_report(summary))
    assert "95% CI" not in page
    table = section(page, "policies", "pareto")
    assert "one-sided 95% upper bound (not a two-sided interval)" in table
    for p in summary["policies"]:
        row = policy_row(table, p["name"])
        for _m, g in p["guardrails"].items():
            assert f"harm {fmt_pct(g['estimate'])}; one-sided 95% upper bound {fmt_pct(g['upper'])} vs limit " \
                   f"{fmt_pct(g['limit'], signed=False)}" in row
            assert f"upper {fmt_pct(g['upper'])}" in row
            assert f'class="badge {g["verdict"]}"' in row
    # the per-arm guardrails of `pex analyze` in section 3 say the same
    effects = section(page, "average-effects", "heterogeneity")
    for g in summary["guardrails"]:
        assert f"harm {fmt_pct(g['harm'])}</span><span class=\"ci\">upper {fmt_pct(g['harm_upper'])}" in effects
    assert "one-sided 95% upper bound" in effects


def test_every_policy_shows_where_it_stands_in_the_certification(summary):
    cert = summary["recommendation"]["certification"]
    table = section(render_report(summary), "policies", "pareto")
    assert ">Certified<" in table and ">Eligible<" not in table
    for p in summary["policies"]:
        label = status_label(policy_row(table, p["name"]))
        if p["name"] in cert["certified"]:
            assert label == "certified" and p["eligible"]
        elif p["name"] in cert.get("untested", []):  # after a failed gate or test, the rest is not tested
            assert label == "not tested" and not p["eligible"]
        elif p["name"] in cert["family"]:
            assert label == "not certified" and not p["eligible"]
        elif p["name"] in cert["screened_out"]:
            assert label == "screened out" and not p["eligible"]
        elif p["kind"] == "constant" and p.get("arm") == summary["control"]:
            assert label == "fallback" and p["eligible"]
        else:
            assert label == "not a candidate" and not p["eligible"]


def test_a_certified_recommendation_shows_its_bounds_and_status(s):
    """Whatever the engine decided on the test data: a personalized policy certified and recommended."""
    name = f"{s['experiment']}-pareto-1"
    policy = next(p for p in s["policies"] if p["name"] == name)
    harms = {m: {**g, "upper": 0.031, "level": 0.975, "verdict": "pass"} for m, g in policy["guardrails"].items()}
    s["recommendation"].update(policy=name, kind="value", verdict="personalize", cannot_certify=False,
                               headline=f"Personalize with {name}.", reasons=[reason("beats_best_arm", "it beats the best arm")])
    s["recommendation"]["certification"].update(
        family=[name, f"{s['experiment']}-pareto-2"], k=2, certified=[name], level=0.975, harms={name: harms},
        tested=[name, f"{s['experiment']}-pareto-2"], untested=[],
        text="Certified means: on held-out units, each guardrail's one-sided upper bound at level 97.50% is within its max_harm.",
        procedure="one at a time at the one-sided 97.5% level, safest first (fixed-sequence testing)",
        value={"estimate": 5.5, "se": 0.07, "low": 5.36, "high": 5.64},
        lift_vs_control={"estimate": 0.013, "se": 0.0024, "low": 0.0084, "high": 0.0176})
    s["recommended_policy"] = name
    page = html.unescape(render_report(s))
    verdict = section(page, "verdict", "data-health")
    assert 'role="alert"' not in verdict and "nothing certified" not in verdict
    assert "tested there one at a time at the one-sided 97.5% level, safest first (fixed-sequence testing)" in verdict
    assert "<b>5.5</b> (bounds 5.36 to 5.64)" in verdict
    assert '<b class="good">+0.013</b> (bounds +0.0084 to +0.0176)' in verdict
    assert "one-sided 97.5% upper bound +3.1%" in verdict  # its guardrails at the family's level
    table = section(page, "policies", "pareto")
    row = policy_row(table, name)
    assert status_label(row) == "certified" and "upper +3.1% at 97.5%" in row
    assert status_label(policy_row(table, f"{s['experiment']}-pareto-2")) == "not certified"
    assert ("2 candidates one at a time at the one-sided 97.5% level, safest first "
            "(fixed-sequence testing); the upper bounds it used are under each tested candidate's badge") in table


def test_a_tested_but_uncertified_candidate_shows_its_family_bound(s):
    cert = s["recommendation"]["certification"]
    name = next(p["name"] for p in s["policies"] if kind_of(p) == "tree")
    cert["family"] = [*cert["family"], name]
    cert["k"] = len(cert["family"])
    cert["harms"][name] = {m: {**g, "upper": 0.5, "level": cert["level"], "verdict": "inconclusive"}
                           for m, g in next(p for p in s["policies"] if p["name"] == name)["guardrails"].items()}
    row = policy_row(section(render_report(s), "policies", "pareto"), name)
    assert status_label(row) == "not certified"
    assert f"upper +50% at {fmt_pct(cert['level'], signed=False)}" in row


def test_weight_search_values_are_labelled_in_sample_with_held_out_values_beside(summary):
    pareto = summary["pareto"]
    assert pareto["candidates"], "the test run turns Pareto points into policies"
    page = html.unescape(render_report(summary))
    part = section(page, "pareto", "policy")
    assert "in-sample (training units)" in part and pareto["in_sample"][1:].rstrip(".") in part
    assert f"Feasible: {pareto['feasible_means']}" in part
    by_name = {p["name"]: p for p in summary["policies"]}
    table = part[part.index(">Candidate<"):]
    for i, c in enumerate(pareto["candidates"]):
        assert c["in_sample"] is True
        name = next(p["name"] for p in summary["policies"]
                    if kind_of(p) == "value" and (p.get("tuning") or {}).get("weights") == c["weights"])
        assert name == f"{summary['experiment']}-pareto-{i + 1}"  # as the pipeline names them
        block = table[table.index(f'title="{name}"'):]
        block = block[:block.index("</tbody>")]
        search, held = block.split("held-out<span", 1)
        for g, bound in c["guardrail_bound"].items():
            assert fmt_pct(bound) in search and fmt_pct(c["guardrail_harm"][g]) in search
        policy = by_name[name]
        for o in pareto["objectives"]:
            assert fmt_signed(policy["lift_vs_control"][o]["estimate"]) in held
        for g in pareto["guardrails"]:
            assert fmt_pct(policy["guardrails"][g]["upper"]) in held
        assert re.search(r">(certified|not certified|not tested|screened out|not a candidate)<", held)
    # the distilled tree of the first candidate is named beside it
    tree = f"{summary['experiment']}-pareto-1-tree-d"
    if any(p["name"].startswith(tree) for p in summary["policies"]):
        assert "distilled: pareto-1-tree-d" in table


def test_a_summary_of_another_format_or_shape_is_refused(s):
    """No fallbacks for older summaries: a summary is this format, checked, or refused with a clear error."""
    with pytest.raises(PexError, match=r"format 'pex\.summary/1' is not one this pex reads"):
        render_report({**s, "format": "pex.summary/1"})
    with pytest.raises(PexError, match="format None"):
        render_report({"experiment": "bare", "recommendation": {"policy": "p", "headline": "Keep control."}})
    broken = copy.deepcopy(s)
    del broken["recommendation"]["certification"]
    with pytest.raises(PexError, match=r"recommendation\.certification: Field required"):
        render_report(broken)
    for p in s["policies"]:
        p["guardrails"] = {m: {"verdict": g["verdict"]} for m, g in p["guardrails"].items()}
    with pytest.raises(PexError, match=r"policies\.0\.guardrails\..*Field required"):
        render_report(s)


# --------------------------------------------------------------------------- the terminal text


def test_text_recommendation_says_what_certified_means(summary):
    from pex.report.text import render_recommendation

    rec, cert = summary["recommendation"], summary["recommendation"]["certification"]
    text = render_recommendation(summary)
    lines = text.splitlines()
    assert lines[0] == "Recommendation: " + rec["headline"]
    assert cert["text"] in text and cert["rows"] in text
    if cert["k"]:
        assert f"{cert['k']} candidate{'s' if cert['k'] != 1 else ''} tested {cert['procedure']}" in text
        assert "hold for every certified candidate at once" in text
    for r in rec["reasons"]:
        assert r["text"] in text


def test_text_recommendation_when_nothing_could_be_certified(s):
    from pex.report.text import render_recommendation

    first = reason("cannot_certify", "Nothing could be certified. The best candidate, x, has ...")
    s["recommendation"].update(cannot_certify=True, reasons=[first, reason("screened_out", "more")])
    lines = render_recommendation(s).splitlines()
    assert lines[1] == "  Nothing could be certified. The best candidate, x, has ..."
    assert lines[-1] == "  - more" and sum("Nothing could be certified" in line for line in lines) == 1


def test_text_guardrails_use_one_sided_bounds(pipeline_run):
    from pex.report.text import render_evaluation, render_policies

    rows = pipeline_run.details["rows"]
    table = render_policies(rows, pipeline_run.details["build_report"])
    assert "one-sided 95% upper bound vs the limit" in table
    assert "all 20,000 units, cross-fitted (each under the half-policy whose fit never saw it" in table
    cal = pipeline_run.details["build_report"]["calibration"]
    if cal.get("certifiable_bound"):
        assert "certifiable bound" in table and "standard error" in table
    for row in rows:
        text = render_evaluation(row)
        for m, _g in row["guardrails"].items():
            line = next(line for line in text.splitlines() if line.startswith(f"guardrail {m}:"))
            assert "one-sided 95% bounds" in line and "interval" not in line and "CI" not in line
            assert line.endswith(("within the limit)", "beyond the limit)", "upper bounds)")) or "would certify it" in line


def test_text_tuning_labels_in_sample_values_and_shows_held_out_ones(summary):
    from pex.report.text import render_tuning

    text = render_tuning(summary["pareto"], summary["policies"])
    assert "search values are in-sample (training units)" in text
    assert f"feasible: {summary['pareto']['feasible_means']}" in text
    for i, c in enumerate(summary["pareto"]["candidates"]):
        assert f"held-out: {summary['experiment']}-pareto-{i + 1}" in text
        assert all(f"(bound {v * 100:+.1f}%)" in text for v in c["guardrail_bound"].values())
    # without the policy rows it points to them instead
    assert "their held-out values are in the policy table" in render_tuning(summary["pareto"])


# --------------------------------------------------------------------------- pieces


def test_tree_diagram_shows_every_leaf_and_condition():
    svg = tree_diagram(SMALL_TREE, arm_colors(["control", "daily", "weekly", "monthly"], "control"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert Counter(re.findall(r'data-arm="([^"]+)"', svg)) == Counter(["daily", "weekly", "control", "monthly"])
    assert svg.count('class="split"') == 3
    assert "country is one of IN, BR, US, DE, FR" in svg  # the full list in the tooltip


def test_tree_diagram_of_a_single_leaf_and_escaping():
    svg = tree_diagram({"arm": "<ctrl>"}, {})
    assert 'data-arm="&lt;ctrl&gt;"' in svg and "<ctrl>" not in svg


def test_number_formatting():
    assert fmt_num(12249) == "12,249"
    assert fmt_num(0.34613) == "0.3461"
    assert fmt_num(5.456543) == "5.457"
    assert fmt_num(None) == "–" and fmt_num(float("nan")) == "–"
    assert fmt_pct(0.0984) == "+9.84%" and fmt_pct(-0.136) == "-13.6%" and fmt_pct(0.25, signed=False) == "25%"
    assert fmt_p(1e-9) == "< 0.001" and fmt_p(0.30132) == "0.301"
    # the terminal's style: fixed decimals, so plain-text columns line up; an ASCII '-' when missing
    assert fmt_decimals(5.456543) == "5.457" and fmt_decimals(12249.0) == "12,249.000" and fmt_decimals(0.000123) == "0.000123"
    assert fmt_pct1(0.0984) == "+9.8%" and fmt_pct1(0.25, signed=False) == "25.0%" and fmt_pct1(None) == "-"
    assert fmt_p_terminal(1e-9) == "<0.001" and fmt_p_terminal(float("nan")) == "-"
    # one module writes numbers: the views define no formatter of their own
    for view in ("pex.report.html", "pex.report.text"):
        module = importlib.import_module(view)
        assert not [n for n, f in vars(module).items() if n.startswith("fmt_") and f is not getattr(numbers, n, None)], view


def test_a_step_down_certificate_shows_each_bound_at_the_level_it_was_made_at(s):
    """Step-down certifies each candidate at its own raised level: the verdict box and the policy table show
    that level, not the family's 95%, and the procedure the engine describes."""
    from pex.evaluation.recommendation import PROCEDURE

    name = f"{s['experiment']}-pareto-1"
    policy = next(p for p in s["policies"] if p["name"] == name)
    harms = {m: {**g, "upper": 0.031, "level": 0.992, "verdict": "pass"} for m, g in policy["guardrails"].items()}
    s["recommendation"].update(policy=name, kind="value", verdict="personalize", cannot_certify=False,
                               headline=f"Personalize with {name}.", reasons=[reason("beats_best_arm", "it beats the best arm")])
    s["recommendation"]["certification"].update(method="step-down", procedure=PROCEDURE["step-down"], family=[name], k=1,
                                                certified=[name], untested=[], level=0.95, harms={name: harms})
    s["recommended_policy"] = name
    page = html.unescape(render_report(s))
    verdict = section(page, "verdict", "data-health")
    assert f"tested there {PROCEDURE['step-down']}" in verdict
    assert "one-sided 99.2% upper bound +3.1%" in verdict and "(the level at which it was certified)" in verdict
    row = policy_row(section(page, "policies", "pareto"), name)
    assert status_label(row) == "certified" and "upper +3.1% at 99.2%" in row
