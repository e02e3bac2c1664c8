"""The HTML evaluation report: sections, charts, self-containment, and edge cases of the summary."""

from __future__ import annotations

import copy
import html
import re
from collections import Counter

import pytest

from pex.report import fmt_num, fmt_p, fmt_pct, render_report
from pex.report_charts import arm_colors, pareto_chart, tradeoff_chart, tree_diagram

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
        assert reason in html.unescape(verdict)
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


def test_no_pareto_search_at_all(s):
    s.pop("pareto")
    page = render_report(s)
    assert "pareto" not in chart_keys(page)
    assert "Trade-offs: the Pareto front" in page


def test_constant_recommendation_says_there_is_no_tree(s):
    control = s["control"]
    name = next(p["name"] for p in s["policies"] if p["kind"] == "constant" and p.get("arm") == control)
    s["recommendation"].update(policy=name, kind="constant", verdict="keep_control",
                               headline=f"Keep {control!r} for everyone.", reasons=["nothing beat it"],
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
                        "guardrails": {"unsubscribes": {"mode": "constraint", "max_harm": 0.05}}}}
    page = render_report(s)
    policy = page[page.index('id="policy"'):page.index('id="caveats"')]
    assert "value-model policy" in policy
    chosen_tree = any((p.get("fidelity") or {}).get("chosen") and p.get("tree") for p in s["policies"])
    assert ("not a tree;" in policy) == chosen_tree and ("no tree to draw" in policy) == (not chosen_tree)
    assert "<td>sessions</td>" in policy and "<td>unsubscribes</td>" in policy and ">0.6<" in policy
    assert "At most 30% of units" in policy and "fit-123" in policy
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


def test_minimal_summary_renders():
    page = render_report({"experiment": "bare", "recommendation": {"policy": "p", "headline": "Keep control."}})
    assert "Keep control." in page
    for title in SECTION_HEADINGS:
        assert title in page
    assert_self_contained(page)


# --------------------------------------------------------------------------- sampled weightings and the trade-off chart


def section(page: str, start: str, end: str) -> str:
    return page[page.index(f'id="{start}"'):page.index(f'id="{end}"')]


def chart_svg(page: str, key: str) -> str:
    start = page.index(f'data-chart="{key}"')
    return page[start:page.index("</svg>", start)]


def test_summary_has_sampled_weightings(summary):
    fronts = summary["pareto"]["fronts"]
    assert {"ax", "dense"} <= set(fronts)
    n_obj, n_rail = len(summary["pareto"]["objectives"]), len(summary["pareto"]["guardrails"])
    for method in ("ax", "dense"):
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
    assert f"further right harms {rail} more, higher gains more {primary}" in " ".join(caption.split())
    assert "left of the dashed line keep the" in caption
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


def chosen_tree(summary: dict) -> dict:
    chosen = [p for p in summary["policies"] if (p.get("fidelity") or {}).get("chosen")]
    assert len(chosen) == 1 and chosen[0]["kind"] == "tree" and isinstance(chosen[0].get("tree"), dict)
    return chosen[0]


def recommend_value_policy(s: dict, name: str) -> None:
    s["recommendation"].update(policy=name, kind="value", verdict="personalize")
    s["recommendation"]["document"] = {
        "format": "pex.policy/1", "name": name, "kind": "value", "arms": s["arms"], "default_arm": s["control"],
        "exploration": 0.05, "value_model": {"fit": "fit-1", "metrics": {}, "guardrails": {}}}
    s["recommended_policy"] = name


def test_distilled_tree_is_drawn_under_a_tuned_value_recommendation(s):
    tree = chosen_tree(s)
    tuned = next(p for p in s["policies"] if p["kind"] == "value" and p.get("tuning"))
    recommend_value_policy(s, tuned["name"])
    page = render_report(s)
    policy = section(page, "policy", "caveats")
    assert "tree-svg" in policy
    assert set(re.findall(r'class="leaf" data-arm="([^"]+)"', policy)) == tree_arms(tree["tree"])
    heading = re.sub(r"<[^>]+>", "", re.search(r"<h3>(Its readable approximation:.*?)</h3>", policy, re.DOTALL).group(1))
    agreement = fmt_pct(tree["fidelity"]["agreement_with_value_policy"], signed=False)
    assert f"{tree['name']} (depth {tree['fidelity']['depth']}, agrees with the default-weight value model on {agreement}" in heading
    assert "the recommended policy on" not in policy  # the tree was not distilled from the tuned weights
    assert "not from the recommended policy's own weights" in policy
    assert policy.count("<figcaption>") == 1
    # the legend names exactly the arms at the leaves
    legend = policy[policy.rindex('<div class="legend">'):]
    assert set(re.findall(r"</i>([^<]+)</span>", legend)) == tree_arms(tree["tree"])


def test_distilled_tree_of_the_default_value_recommendation(s):
    tree = chosen_tree(s)
    default = next(p for p in s["policies"] if p["kind"] == "value" and not p.get("tuning"))
    recommend_value_policy(s, default["name"])
    policy = section(render_report(s), "policy", "caveats")
    assert "tree-svg" in policy and "agrees with the recommended policy on" in policy
    assert f"<code>{tree['name']}</code> is a depth-" in policy


def test_distilled_tree_without_its_document_is_only_named(s):
    tree = chosen_tree(s)
    tree.pop("tree")
    tuned = next(p for p in s["policies"] if p["kind"] == "value" and p.get("tuning"))
    recommend_value_policy(s, tuned["name"])
    policy = section(render_report(s), "policy", "caveats")
    assert "tree-svg" not in policy and "Its readable approximation" not in policy
    assert f"A readable approximation: <code>{tree['name']}</code> is a depth-" in policy
    assert "no tree to draw" in policy


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
