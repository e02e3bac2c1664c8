"""The guardrail rule (pex.experiment.guardrail): verdicts, Fieller's standard errors at the limit, certifiable prefixes, and (slow)
coverage of a policy's harm bound over repeated simulated experiments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pex.experiment.guardrail import (
    GuardrailRule,
    Harm,
    best_certifiable_prefix,
    certify_margin,
    judge,
    prefix_bounds,
    tail_level,
    z_value,
)

RULE = GuardrailRule(metric="complaints", goal="decrease", max_harm=0.10, control_mean=0.3)


@pytest.mark.parametrize("estimate, se, verdict", [
    (0.02, 0.03, "pass"),  # 0.02 + 1.645 * 0.03 = 0.069 <= 0.10
    (0.08, 0.03, "inconclusive"),  # straddles
    (0.20, 0.03, "fail"),  # lower bound 0.15 > 0.10
    (0.05, float("nan"), "inconclusive"),
])
def test_verdicts_at_one_stated_level(estimate, se, verdict):
    harm = RULE.verdict(estimate, se, n=100)
    assert harm.verdict == verdict
    assert harm.level == pytest.approx(0.95)
    if math.isfinite(se):
        assert harm.upper == pytest.approx(estimate + 1.6448536 * se, rel=1e-6)


def test_absolute_basis_at_zero_control_mean():
    rule = GuardrailRule("refunds", "decrease", 0.05, control_mean=0.0)
    assert rule.basis == "absolute" and rule.limit == 0.0
    assert rule.verdict(-0.01, 0.001).verdict == "pass"
    assert rule.verdict(0.01, 0.001).verdict == "fail"


def test_the_rule_travels_as_json_and_its_limit_is_derived_again():
    zero = GuardrailRule(metric="refunds", goal="decrease", max_harm=0.05, control_mean=0.0)
    doc = zero.to_dict()
    assert doc["limit"] == 0.0 and doc["basis"] == "absolute"  # written for readers of the file
    assert GuardrailRule.from_dict(doc) == zero
    # a file's "limit" is never read back: the rule derives it from max_harm and the control mean
    assert GuardrailRule.from_dict({**doc, "limit": 0.05}).limit == 0.0
    assert GuardrailRule.from_dict(RULE.to_dict()) == RULE and RULE.to_dict()["limit"] == 0.10
    # a live round re-bases the same rule on its own control value
    assert RULE.at_control_mean(0.0).limit == 0.0 and RULE.at_control_mean(0.5).scale == 0.5


def test_a_screen_is_held_to_its_rule_and_averages_its_halves():
    from pex.policy.constrained import Screen

    zero = GuardrailRule(metric="refunds", goal="decrease", max_harm=0.05, control_mean=0.0)
    assert not Screen(zero, harm=0.001, se=0.001, bound=0.003).passed  # absolute harm: the limit is 0, not max_harm
    assert Screen(RULE, harm=0.01, se=0.02, bound=0.05).passed
    halves = [Screen(RULE, harm=0.02, se=0.03, bound=0.08), Screen(RULE, harm=0.04, se=0.04, bound=0.14)]
    both = Screen.average(halves)
    assert both.harm == pytest.approx(0.03) and both.se == pytest.approx(0.025) and both.bound == pytest.approx(0.11)
    assert not both.passed and both.room == pytest.approx((0.10 - 0.11) / 0.10)
    doc = both.to_dict()
    assert doc["limit"] == 0.10 and doc["passed"] is False and [h["passed"] for h in doc["halves"]] == [True, False]


def test_a_fall_is_harm_for_a_metric_to_increase():
    rule = GuardrailRule("revenue", "increase", 0.05, control_mean=10.0)
    estimate, _ = rule.harm_and_se(np.full(50, -1.0) + np.linspace(-0.1, 0.1, 50))
    assert estimate == pytest.approx(0.1)


def test_fieller_at_the_limit_with_the_variance_under_the_null():
    """Relative harm d/c with per-unit paired contributions and an estimated control mean: the estimate is d/c and the
    standard error is that of U = change - limit * control (uncentred: its variance if E[U] = 0, the boundary) over
    c, so the verdict at every level is the sign of U's one-sided bound."""
    rng = np.random.default_rng(0)
    n = 5_000
    control = rng.binomial(1, 0.3, n).astype(float) + rng.normal(0, 0.1, n)
    change = 0.03 + 0.5 * (control - 0.3) + rng.normal(0, 0.4, n)
    estimate, se = RULE.harm_and_se(change, control)
    d, c = change.mean(), control.mean()
    u = change - RULE.limit * control
    assert estimate == pytest.approx(d / c)
    assert se == pytest.approx(math.sqrt((u**2).sum() / (n - 1) / n) / c, rel=1e-12)
    for alpha in (0.2, 0.05, 0.001):
        z = z_value(alpha)
        assert RULE.assess(change, control, alpha=alpha).passed == (u.mean() + z * se * c <= 0)
    # near the limit the test's standard error is the delta method's evaluated at the limit (the two agree there)
    cov = np.cov(np.vstack([change, control])) / n
    grad = np.array([1 / c, -RULE.limit / c])
    assert se == pytest.approx(math.sqrt(grad @ cov @ grad), rel=0.05)
    # with changes unrelated to the control contributions, treating the control mean as known understates the SE
    independent = 0.03 + rng.normal(0, 0.4, n)
    known = GuardrailRule("complaints", "decrease", 0.10, control_mean=float(control.mean()))
    assert known.harm_and_se(independent)[1] < known.harm_and_se(independent, control)[1]
    # rows of a 2-d array are judged one by one
    both = np.vstack([change, independent])
    harms, ses = RULE.harm_and_se(both, np.vstack([control, control]))
    assert harms.shape == ses.shape == (2,)
    assert (harms[1], ses[1]) == pytest.approx(RULE.harm_and_se(independent, control), rel=1e-12)


def test_influence_values_carry_the_tests_standard_error():
    rng = np.random.default_rng(3)
    control = rng.binomial(1, 0.2, 3_000).astype(float)
    change = rng.binomial(1, 0.21, 3_000) - control
    estimate, influence = RULE.harm_influence(change, control)
    assert influence.mean() == pytest.approx(estimate)
    assert influence.std(ddof=1) / math.sqrt(len(influence)) == pytest.approx(RULE.harm_and_se(change, control)[1], rel=1e-9)


def test_units_to_certify_at_80_percent_power():
    harm = RULE.verdict(0.04, 0.05, n=2_000)
    assert harm.verdict == "inconclusive"
    need = harm.units_to_certify()
    scaled = harm.se * math.sqrt(harm.n / need)
    # at that size the bound sits z_power standard errors below the limit, so it passes with probability 0.8
    assert harm.estimate + (z_value() + z_value(0.2)) * scaled == pytest.approx(RULE.limit, rel=1e-3)
    assert harm.units_to_certify(power=0.5) < need
    assert RULE.verdict(0.04, 0.05, n=2_000).at(0.01).units_to_certify() > need  # at its own (stricter) level
    assert harm.to_dict()["units_to_certify"] == need and harm.to_dict()["power"] == 0.8
    assert RULE.verdict(0.12, 0.01, n=2_000).units_to_certify() is None  # over the limit: more units cannot help
    assert RULE.verdict(0.10, 0.01, n=2_000).units_to_certify() is None  # at it, too


def test_an_absolute_limit_from_max_harm_abs():
    rule = GuardrailRule("refunds", "decrease", None, control_mean=0.0, max_harm_abs=0.002)
    assert rule.has_limit and rule.basis == "absolute" and rule.limit == 0.002 and not rule.zero_control
    assert rule.at_control_mean(0.5).limit == 0.002 and not rule.at_control_mean(0.5).relative  # whatever control's mean
    assert GuardrailRule.from_dict(rule.to_dict()) == rule and rule.to_dict()["limit"] == 0.002
    # the test: mean absolute change against the limit, with the spread of change - limit
    rng = np.random.default_rng(4)
    control = rng.binomial(1, 0.001, 20_000).astype(float)
    change = rng.binomial(1, 0.0015, 20_000) - control
    estimate, se = rule.harm_and_se(change, control)
    assert estimate == pytest.approx(change.mean())
    assert se == pytest.approx(math.sqrt(((change - 0.002) ** 2).sum() / (20_000 - 1) / 20_000))
    harm = rule.assess(change, control)
    assert harm.max_harm_abs == 0.002 and harm.basis == "absolute" and harm.limit == 0.002
    assert Harm.from_dict(harm.to_dict()) == harm


def test_a_zero_control_mean_under_a_relative_limit_cannot_certify_a_rise():
    zero = GuardrailRule("refunds", "decrease", 0.05, control_mean=0.0)
    assert zero.zero_control and zero.limit == 0.0 and zero.basis == "absolute"
    change = np.r_[np.zeros(999), 1.0]  # one event under the policy, none in control
    assert not zero.assess(change, np.zeros(1_000)).passed
    assert not GuardrailRule("refunds", "decrease", 0.05, control_mean=0.1).zero_control
    # the report says so, and what to do, once per metric; an absolute limit or a positive control mean says nothing
    from pex.report.summary import guardrail_caveats

    harm = zero.assess(change, np.zeros(1_000), control_events=0.0)
    [zero_note, few_note] = sorted(guardrail_caveats([harm, harm]), key=lambda t: "max_harm_abs" not in t)
    assert "refunds" in zero_note and "cannot be certified" in zero_note and "max_harm_abs" in zero_note
    assert "only 0 events in control" in few_note
    absolute = GuardrailRule("refunds", "decrease", None, control_mean=0.0, max_harm_abs=0.01)
    assert guardrail_caveats([absolute.assess(change, np.zeros(1_000), control_events=150.0)]) == []
    # a harm written before these fields existed still loads
    old = {k: v for k, v in RULE.verdict(0.03, 0.03, n=100).to_dict().items() if k not in ("max_harm_abs", "control_events")}
    assert Harm.from_dict(old).control_events is None


def test_a_harm_rejudged_at_a_bonferroni_level_is_stricter():
    harm = RULE.verdict(0.03, 0.03, n=100)
    assert harm.verdict == "pass"
    strict = harm.at(0.05 / 8)
    assert strict.upper > harm.upper and strict.verdict == "inconclusive"
    assert Harm.from_dict(strict.to_dict()) == strict
    assert judge(0.03, 0.03, 0.1, 0.05 / 8)[2] == "inconclusive"


def test_prefix_bounds_equal_one_prefix_at_a_time():
    rng = np.random.default_rng(1)
    n = 400
    ranked = rng.normal(0.05, 0.3, n)
    base = rng.normal(0.0, 0.05, n)
    bounds = prefix_bounds(RULE, ranked, base, n_eval=150)
    for L in (1, 7, 200, n):
        change = base + ranked * (np.arange(n) < L)
        estimate, se = RULE.harm_and_se(change)
        assert bounds[L - 1] == pytest.approx(RULE.certifiable(estimate, se, n, 150), rel=1e-9, abs=1e-12)


def test_best_certifiable_prefix_is_the_brute_force_optimum_over_every_guardrail():
    rng = np.random.default_rng(2)
    n = 300
    gain = rng.normal(0.2, 1.0, n)
    other = GuardrailRule("latency", "decrease", 0.02, control_mean=1.0)
    c1 = rng.normal(0.02, 0.2, n)
    c2 = rng.normal(0.005, 0.05, n)
    constraints = [(RULE, c1, 0.0), (other, c2, 0.0)]
    count = int(best_certifiable_prefix(gain, constraints, n_eval=n, max_count=250))
    best, best_total = 0, 0.0
    for L in range(1, 251):
        ok = all(rule.certifiable(*rule.harm_and_se(ch * (np.arange(n) < L)), n, n) <= rule.limit for rule, ch, _ in constraints)
        total = gain[:L].sum()
        if ok and total > best_total:
            best, best_total = L, total
    assert count == best
    # every guardrail holds at the chosen prefix, not just the last one checked
    for rule, ch, _ in constraints:
        if count:
            assert rule.certifiable(*rule.harm_and_se(ch * (np.arange(n) < count)), n, n) <= rule.limit


def test_the_building_margin_covers_a_bonferroni_family_and_power():
    assert certify_margin(family=1, power=0.5) == pytest.approx(z_value())
    assert certify_margin(family=4) > z_value(0.05 / 4)


# -- slow: the harm bound covers the truth --------------------------------------------------------

REPLICATIONS = 200


@pytest.mark.slow
def test_policy_harm_bounds_cover_the_true_harm(tmp_path):
    """Over 200 simulated experiments (segment_harm, 4,000 units, cross-fitted reward models), the doubly-robust
    harm of a fixed tree policy with 5% exploration and of treating everyone: the one-sided 95% upper bound
    covers the true harm at least 93% of the time, and so does the two-sided 95% interval."""
    from pex.evaluation.estimators import DoublyRobust, cross_fit_rewards
    from pex.experiment.features import FeatureEncoder
    from pex.experiment.guardrail import rules_for
    from pex.experiment.simulate import simulate
    from pex.experiment.truth import policy_truth
    from pex.policy.constant import ConstantPolicy
    from pex.policy.tree import TreePolicy

    tree = TreePolicy(name="t", arms=["control", "treat"], default_arm="control", exploration=0.05,
                  tree={"feature": "platform", "op": "in", "value": ["android"], "missing": "right",
                        "left": {"arm": "control"}, "right": {"arm": "treat"}})
    everyone = ConstantPolicy(name="all", arms=["control", "treat"], default_arm="treat")
    big = simulate(400_000, scenario="segment_harm", seed=10_001)
    truth = {p.name: policy_truth(p, big)["harm"]["complaints"] for p in (tree, everyone)}
    upper_hits = {name: [] for name in truth}
    two_sided = {name: [] for name in truth}
    dr = DoublyRobust()
    for r in range(REPLICATIONS):
        sim = simulate(4_000, scenario="segment_harm", seed=r)
        frame = sim.data
        columns = ["age", "tenure_days", "country", "platform"]
        encoder = FeatureEncoder.fit(frame, {c: "categorical" if c in ("country", "platform") else "numeric" for c in columns})
        X = encoder.transform(frame)
        action = (frame["arm"] == "treat").to_numpy(dtype=int)
        pscore = np.full(len(frame), 0.5)
        y = frame["complaints"].to_numpy(dtype=float)
        q = cross_fit_rewards(X, action, y, 2, binary=True, categorical=encoder.categorical_indices, seed=r)
        control_dist = np.column_stack([np.ones(len(frame)), np.zeros(len(frame))])
        base = dr.estimate(y, action, pscore, control_dist, q)
        rule = rules_for(_spec(sim, tmp_path / f"rep{r}"), {"complaints": base.value})["complaints"]
        for policy in (tree, everyone):
            est = dr.estimate(y, action, pscore, policy.action_probabilities(frame), q)
            harm = rule.assess(est.contributions - base.contributions, base.contributions)
            upper_hits[policy.name].append(truth[policy.name] <= harm.upper)
            two_sided[policy.name].append(abs(harm.estimate - truth[policy.name]) <= 1.959964 * harm.se)
    report = {name: (float(np.mean(upper_hits[name])), float(np.mean(two_sided[name]))) for name in truth}
    print(f"\ntrue harm {truth}\ncoverage (one-sided 95% upper bound, two-sided 95% interval): {report}")
    for name, (upper, both) in report.items():
        assert upper >= 0.93, (name, report)
        assert 0.93 <= both <= 0.985, (name, report)


def _spec(sim, folder):
    """A spec object for the simulated experiment (through the real TOML loader), written into ``folder``."""
    from pex.experiment.spec import load_spec

    return load_spec(sim.write(folder, name="seg"))


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_tail_level_inverts_the_one_sided_quantile(alpha):
    assert tail_level(z_value(alpha)) == pytest.approx(alpha, rel=1e-9)


def test_means_with_their_covariance_get_the_same_test_as_per_unit_contributions():
    """assess_means (analyze's regressions, the online loop's two samples) is Fieller's test on the two means: with
    the sample means' covariance it gives the per-unit test's harm and, up to centring, its standard error."""
    rng = np.random.default_rng(5)
    n = 20_000
    control = rng.binomial(1, 0.3, n).astype(float)
    change = rng.binomial(1, 0.32, n) - control
    cov = np.cov(np.vstack([change, control])) / n
    rule = GuardrailRule("complaints", "decrease", 0.10, control_mean=float(control.mean()))
    harm = rule.assess_means(float(change.mean()), math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1]), float(cov[0, 1]), n=n)
    estimate, se = rule.harm_and_se(change, control)
    assert harm.estimate == pytest.approx(estimate) and harm.se == pytest.approx(se, rel=0.01)
    assert harm.verdict == rule.assess(change, control).verdict
    absolute = GuardrailRule("complaints", "decrease", None, control_mean=0.3, max_harm_abs=0.01)
    assert absolute.assess_means(0.004, 0.002, 0.003, -1e-6).upper == pytest.approx(0.004 + z_value() * 0.002)
