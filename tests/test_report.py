"""The HTML evaluation report: sections, charts, self-containment, and edge cases of the summary."""

from __future__ import annotations

import copy
import html
import re
from collections import Counter

import pytest

from pex.report import fmt_num, fmt_p, fmt_pct, render_report
from pex.report_charts import arm_colors, tree_diagram

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
    assert "the predicted harm on" in page
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
    assert "value-model policy" in policy and "no tree to draw" in policy
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
