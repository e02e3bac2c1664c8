"""The simulator: reproducible, internally consistent, with the promised structure."""

from __future__ import annotations

import numpy as np
import pytest

from pex.experiment.simulate import ARMS, DEFAULT_ALLOCATION, METRICS, SimulatedExperiment, simulate
from pex.experiment.truth import (
    certification_ceiling,
    constrained_oracle,
    expected_matrix,
    oracle_policy,
    policy_truth,
    population_ate,
)
from pex.policy.base import Policy
from pex.policy.constant import constant_policy
from pex.policy.tree import TreePolicy


def test_observed_outcomes_are_the_assigned_arms_potential_outcomes(sim):
    d, t = sim.data, sim.truth
    for metric in METRICS:
        for arm in t.arms:
            rows = (d["arm"] == arm).to_numpy()
            np.testing.assert_array_equal(d.loc[rows, metric].to_numpy(), t.outcomes[metric][arm][rows])


def test_same_seed_same_experiment_other_seed_other_experiment():
    a, b, c = simulate(2000, seed=1), simulate(2000, seed=1), simulate(2000, seed=2)
    assert a.data.equals(b.data)
    assert not a.data.equals(c.data)


def test_structure_of_the_demo_scenario(sim):
    d, t = sim.data, sim.truth
    assert set(d["arm"]) == {"control", "daily", "weekly"}
    assert d["age"].isna().mean() == pytest.approx(0.05, abs=0.01)
    assert d["platform"].isna().mean() == pytest.approx(0.05, abs=0.01)
    assert set(d["converted"].unique()) == {0.0, 1.0} and set(d["unsubscribes"].unique()) == {0.0, 1.0}
    # heterogeneous: the daily effect on sessions varies a lot across units
    assert t.cate("sessions", "daily").std() > 0.3
    # trade-off: daily lifts sessions most but also harms the guardrail most
    assert t.ate("sessions", "daily") > t.ate("sessions", "weekly") > 0
    assert t.ate("unsubscribes", "daily") > 5 * t.ate("unsubscribes", "weekly") > 0
    # the pre-period covariate predicts the outcome
    assert np.corrcoef(d["sessions_pre"], d["sessions"])[0, 1] > 0.6


@pytest.mark.parametrize("scenario", ["constant", "null"])
def test_constant_and_null_scenarios_have_no_heterogeneity(scenario):
    t = simulate(3000, scenario=scenario, seed=0).truth
    for metric in METRICS:
        for arm in ("daily", "weekly"):
            assert np.ptp(t.cate(metric, arm)) < 1e-12
    if scenario == "null":
        assert population_ate("null", "sessions", "daily", n=10_000) == 0


def test_allocation_is_respected():
    d = simulate(40_000, seed=0, allocation={"control": 0.5, "daily": 0.25, "weekly": 0.25}).data
    assert (d["arm"] == "control").mean() == pytest.approx(0.5, abs=0.01)


def test_unknown_scenario():
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate(10, scenario="nope")


# -- scenarios in which a guardrail binds -------------------------------------------------

NEW_SCENARIOS = ["segment_harm", "aligned_harm"]


@pytest.fixture(scope="module")
def segment() -> SimulatedExperiment:
    """A large segment_harm draw without missing values, so the segment is known for every unit."""
    return simulate(100_000, scenario="segment_harm", seed=3, missing_rate=0.0)


@pytest.fixture(scope="module")
def aligned() -> SimulatedExperiment:
    return simulate(100_000, scenario="aligned_harm", seed=3)


def withhold_from_android(arms: list[str], exploration: float = 0.05) -> Policy:
    """The depth-1 tree that serves control on Android and treat elsewhere (missing platform: treat)."""
    return TreePolicy(name="no-treat-on-android", arms=arms, default_arm="treat", exploration=exploration,
                  tree={"feature": "platform", "op": "in", "value": ["android"], "left": {"arm": "control"}, "right": {"arm": "treat"}})


@pytest.mark.parametrize("scenario", NEW_SCENARIOS)
def test_new_scenarios_observe_the_assigned_arms_potential_outcomes(scenario):
    sim = simulate(4000, scenario=scenario, seed=5)
    d, t = sim.data, sim.truth
    assert set(d["arm"]) == set(sim.arms) == set(t.arms) and t.control == sim.control == "control"
    assert sim.arms != ARMS and set(sim.metrics) != set(METRICS)
    for metric, meta in sim.metrics.items():
        for arm in t.arms:
            rows = (d["arm"] == arm).to_numpy()
            np.testing.assert_array_equal(d.loc[rows, metric].to_numpy(), t.outcomes[metric][arm][rows])
        if meta["kind"] == "binary":
            assert set(d[metric].unique()) == {0.0, 1.0}
            for arm in t.arms:  # a realised binary outcome is a draw at its expected rate
                assert np.all((t.expected[metric][arm] >= 0) & (t.expected[metric][arm] <= 1))
    # the same units as the other scenarios: the shared features and missing values, plus the scenario's pre-period column
    assert {"age", "tenure_days", "country", "platform", "x0", "x7"} <= set(t.feature_names)
    assert d["platform"].isna().mean() == pytest.approx(0.05, abs=0.015)
    pre = sim.metrics[sim.primary]["pre"]
    assert pre in d.columns and pre not in t.feature_names
    assert np.corrcoef(d[pre], d[sim.primary])[0, 1] > 0.5
    assert (d["arm"] == "control").mean() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("scenario", NEW_SCENARIOS)
def test_new_scenarios_write_a_spec_with_their_own_arms_and_metrics(tmp_path, scenario):
    from pex.experiment.spec import load_spec

    sim = simulate(500, scenario=scenario, seed=1)
    spec = load_spec(sim.write(tmp_path, name="exp"))
    assert spec.control == "control" and sorted(spec.allocation) == sorted(sim.arms)
    assert {m: (s.goal, s.role, s.max_harm) for m, s in spec.metrics.items()} == {
        m: (meta["goal"], meta["role"], meta.get("max_harm")) for m, meta in sim.metrics.items()}
    assert sim.guardrails == [m for m, s in spec.metrics.items() if s.role == "guardrail"]


def test_other_scenarios_keep_the_module_defaults():
    sim = simulate(200, seed=0)
    assert sim.arms == ARMS and sim.metrics == METRICS and sim.primary == "sessions" and sim.guardrails == ["unsubscribes"]
    with pytest.raises(ValueError, match="allocation must cover"):
        simulate(200, scenario="segment_harm", allocation=DEFAULT_ALLOCATION)


def test_segment_harm_raises_the_guardrail_by_60_percent_in_one_segment_only(segment):
    d, t = segment.data, segment.truth
    android = (d["platform"] == "android").to_numpy()
    assert 0.35 <= android.mean() <= 0.42
    rate0, rate1 = t.expected["complaints"]["control"], t.expected["complaints"]["treat"]
    assert 0.25 <= rate0.mean() <= 0.35
    assert rate1[android].mean() / rate0[android].mean() - 1 == pytest.approx(0.6, abs=0.01)
    np.testing.assert_array_equal(rate1[~android], rate0[~android])
    # treat lifts the primary for every unit, by amounts that differ
    lift = t.cate("revenue", "treat")
    assert lift.min() > 0 and lift.std() > 0.2
    assert segment.metrics["complaints"]["max_harm"] == 0.10


def test_segment_harm_treating_everyone_breaks_the_limit_withholding_keeps_it(segment):
    everyone = policy_truth(constant_policy(segment.arms, "treat", exploration=0.05), segment)
    assert everyone["exceeds"] and 0.17 <= everyone["harm"]["complaints"] <= 0.25
    tree = policy_truth(withhold_from_android(segment.arms), segment)
    assert not tree["exceeds"] and tree["harm"]["complaints"] < 0.05  # within the limit, with room to spare
    # ... and takes about two thirds of the best gain achievable within the limit
    oracle = constrained_oracle(segment, exploration=0.05)
    assert 0.55 <= tree["gain"] / oracle["gain"] <= 0.8


def test_segment_harm_withholding_keeps_the_limit_with_missing_platforms():
    sim = simulate(100_000, scenario="segment_harm", seed=4)  # 5% of platforms missing: those units are treated
    truth = policy_truth(withhold_from_android(sim.arms), sim)
    assert truth["harm"]["complaints"] < sim.metrics["complaints"]["max_harm"]


def test_aligned_harm_the_biggest_gainers_are_the_most_harmed(aligned):
    t = aligned.truth
    lift, harm = t.cate("spend", "upsell"), t.cate("churned", "upsell")
    assert np.corrcoef(lift, harm)[0, 1] > 0.8
    assert 0.10 <= t.expected["churned"]["control"].mean() <= 0.20
    assert 0.05 <= aligned.metrics["churned"]["max_harm"] <= 0.10
    assert lift.min() < 0 < lift.mean()  # the least engaged lose a little
    assert policy_truth(constant_policy(aligned.arms, "upsell", exploration=0.05), aligned)["exceeds"]


def test_aligned_harm_best_policy_within_the_limit_treats_a_middle_slice(aligned):
    oracle = constrained_oracle(aligned, exploration=0.05)
    lift = aligned.truth.cate("spend", "upsell")
    treated = oracle["probabilities"][:, 1] > 0.5
    assert 0.3 <= treated.mean() <= 0.8
    assert treated[lift > np.quantile(lift, 0.9)].mean() < 0.05  # not the top gainers ...
    assert treated[lift < 0].mean() < 0.05  # ... nor those who lose
    assert treated[(lift > np.quantile(lift, 0.3)) & (lift < np.quantile(lift, 0.6))].mean() > 0.95


# -- certification_ceiling ----------------------------------------------------------------


@pytest.mark.slow  # the truth harness of the benchmarks (5 s)
def test_certification_ceiling_standard_error_is_what_dr_with_true_models_attains(segment):
    """The ceiling's standard error (the efficiency bound) against the spread of doubly-robust harm estimates with
    the true outcome models over 300 fresh experiments of the same size, for the policy it picked."""
    n_eval = 3_000
    ceiling = certification_ceiling(segment, n_eval)
    best = ceiling["best_single"]
    assert 0.0 < best["treated_share"] < 1.0  # a personalized policy, not a corner
    estimates = []
    for seed in range(300):
        sim = simulate(n_eval, scenario="segment_harm", seed=10_000 + seed)
        probs = oracle_policy(sim, best["lambda"])
        mu = expected_matrix(sim, "complaints")
        arm = np.array([sim.arms.index(a) for a in sim.data["arm"]])
        p = np.array([sim.allocation[a] for a in sim.arms])
        y = sim.data["complaints"].to_numpy(dtype=float)
        scores = mu.copy()  # doubly-robust score of every arm per unit
        rows = np.arange(len(y))
        scores[rows, arm] += (y - mu[rows, arm]) / p[arm]
        change = (probs * scores).sum(axis=1) - scores[:, 0]
        estimates.append(change.mean() / mu[:, 0].mean())
    estimates = np.array(estimates)
    assert np.std(estimates, ddof=1) == pytest.approx(best["se"]["complaints"], rel=0.15)
    assert np.mean(estimates) == pytest.approx(best["harm"]["complaints"], abs=3 * best["se"]["complaints"] / np.sqrt(300))


@pytest.mark.slow  # the truth harness of the benchmarks (9 s)
def test_certification_ceiling_grows_with_the_units_and_stays_below_the_oracle(segment):
    oracle = constrained_oracle(segment, exploration=0.05)["gain"]
    small, large, huge = (certification_ceiling(segment, n) for n in (2_000, 20_000, 5_000_000))
    for c in (small, large, huge):
        assert 0.0 <= c["single_test"] <= oracle * 1.001 and 0.0 <= c["fixed_sequence"] <= oracle * 1.001
        # testing the path safest first keeps at least what one test of its best policy would (up to draw noise)
        assert c["fixed_sequence"] >= c["single_test"] - 0.02 * oracle
    assert small["fixed_sequence"] < large["fixed_sequence"] < huge["fixed_sequence"]
    assert huge["fixed_sequence"] > 0.95 * oracle  # with unlimited units certifying costs (almost) nothing
    assert small["fixed_sequence"] < 0.8 * oracle  # with few it costs a lot: the oracle itself is out of reach
