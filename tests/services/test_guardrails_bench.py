"""The guardrail benchmark (bench/guardrails.py) and the truth it measures against (pex.experiment.truth).

The fast tests check the truth helpers (:func:`pex.experiment.truth.policy_truth`,
:func:`pex.experiment.truth.constrained_oracle`) and the benchmark's bookkeeping; the slow
test runs the pipeline on nine small experiments and checks that recommended
policies rarely break a guardrail under the truth.
"""

from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np
import pytest

from bench.guardrails import (
    DEFAULT_SCENARIOS,
    Case,
    category,
    format_table,
    main,
    plan,
    reference,
    run_benchmark,
    summarize,
    wilson,
)
from pex.experiment.simulate import SimulatedExperiment, simulate
from pex.experiment.truth import constrained_oracle, distribution_truth, policy_truth
from pex.policy.constant import constant_policy
from pex.policy.tree import TreePolicy

GUARDED = ["segment_harm", "aligned_harm", "notification_cadence"]


@pytest.fixture(scope="module")
def draws() -> dict[str, SimulatedExperiment]:
    """A moderately large draw per scenario (the benchmark uses 200k; 40k keeps these tests fast)."""
    return {s: simulate(40_000, scenario=s, seed=17) for s in GUARDED}


# -- policy_truth ------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", GUARDED)
def test_a_constant_policys_truth_is_the_simulators_average_effect(draws, scenario):
    sim = draws[scenario]
    for arm in sim.arms:
        truth = policy_truth(constant_policy(sim.arms, arm), sim)
        for metric in sim.metrics:
            assert truth["metrics"][metric]["lift"] == pytest.approx(sim.truth.ate(metric, arm), abs=1e-9)
            assert truth["metrics"][metric]["value"] == pytest.approx(sim.truth.expected[metric][arm].mean(), abs=1e-9)
        assert truth["gain"] == pytest.approx(sim.truth.ate(sim.primary, arm), abs=1e-9)  # both primaries are "increase"
        assert truth["arm_shares"][arm] == 1.0
        for g in sim.guardrails:
            control = sim.truth.expected[g]["control"].mean()
            assert truth["harm"][g] == pytest.approx(sim.truth.ate(g, arm) / control, rel=1e-9, abs=1e-12)  # goal "decrease"


def test_exploration_mixes_the_arms_average_effects(draws):
    sim = draws["notification_cadence"]
    truth = policy_truth(constant_policy(sim.arms, "daily", exploration=0.3), sim)
    expected = (1 - 0.3) * sim.truth.ate("sessions", "daily") + 0.1 * sum(sim.truth.ate("sessions", a) for a in sim.arms)
    assert truth["gain"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("scenario", GUARDED)
def test_all_control_has_no_harm_and_no_gain(draws, scenario):
    sim = draws[scenario]
    truth = policy_truth(constant_policy(sim.arms, "control"), sim)
    assert truth["gain"] == 0.0 and not truth["exceeds"]
    assert all(h == 0.0 for h in truth["harm"].values()) and set(truth["harm"]) == set(sim.guardrails)


def test_policy_arms_in_any_order_and_unknown_arms(draws):
    sim = draws["segment_harm"]
    tree = {"feature": "platform", "op": "in", "value": ["android"], "left": {"arm": "control"}, "right": {"arm": "treat"}}
    a = TreePolicy(name="a", arms=["control", "treat"], default_arm="treat", tree=tree, exploration=0.1)
    b = TreePolicy(name="b", arms=["treat", "control"], default_arm="treat", tree=tree, exploration=0.1)
    assert policy_truth(a, sim)["harm"] == pytest.approx(policy_truth(b, sim)["harm"])
    with pytest.raises(ValueError, match="does not know"):
        policy_truth(constant_policy(["control", "daily"], "daily"), sim)
    with pytest.raises(ValueError, match="shape"):
        distribution_truth(np.ones((3, 2)), sim)


def test_a_zero_control_mean_makes_the_harm_absolute(draws):
    sim = draws["segment_harm"]
    zeroed = simulate(1000, scenario="segment_harm", seed=1)
    zeroed.truth.expected["complaints"] = {arm: np.zeros(1000) for arm in zeroed.arms}
    zeroed.truth.expected["complaints"]["treat"][:10] = 0.5
    truth = policy_truth(constant_policy(sim.arms, "treat"), zeroed)
    entry = truth["metrics"]["complaints"]
    assert entry["basis"] == "absolute" and entry["limit"] == 0.0
    assert truth["harm"]["complaints"] == pytest.approx(0.005) and truth["exceeds"]


# -- constrained_oracle ------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", GUARDED)
def test_oracle_keeps_every_limit_and_beats_every_constant_policy_within_it(draws, scenario):
    sim = draws[scenario]
    oracle = constrained_oracle(sim, exploration=0.05)
    assert oracle["feasible"] and oracle["gain"] > 0
    for g in sim.guardrails:
        assert oracle["harm"][g] <= sim.metrics[g]["max_harm"] + 1e-9
    # its reported truth is that of the probabilities it returns
    again = distribution_truth(oracle["probabilities"], sim)
    assert again["gain"] == pytest.approx(oracle["gain"]) and again["harm"] == pytest.approx(oracle["harm"])
    assert oracle["probabilities"].min() >= 0.05 / len(sim.arms) - 1e-12  # served with exploration, like the pipeline's
    np.testing.assert_allclose(oracle["probabilities"].sum(axis=1), 1.0)
    for arm in sim.arms:
        for exploration in (0.0, 0.05):
            constant = policy_truth(constant_policy(sim.arms, arm, exploration=exploration), sim)
            if not constant["exceeds"]:
                assert oracle["gain"] >= constant["gain"] - 1e-9


def test_oracle_binds_where_the_unconstrained_best_breaks_the_limit(draws):
    sim = draws["segment_harm"]
    everyone = policy_truth(constant_policy(sim.arms, "treat", exploration=0.05), sim)
    oracle = constrained_oracle(sim)
    assert everyone["exceeds"] and oracle["harm"]["complaints"] == pytest.approx(0.10, abs=1e-6)
    assert 0 < oracle["gain"] < everyone["gain"] and oracle["lambda"] > 0


def test_oracle_without_exploration_is_deterministic_and_gains_more(draws):
    sim = draws["aligned_harm"]
    pure, explored = constrained_oracle(sim, exploration=0.0), constrained_oracle(sim, exploration=0.05)
    assert pure["gain"] >= explored["gain"] and pure["harm"]["churned"] <= 0.08 + 1e-9
    # at most the boundary units are mixed
    assert np.mean((pure["probabilities"] > 0) & (pure["probabilities"] < 1)) < 0.01


def test_oracle_gain_is_zero_when_exploration_alone_breaks_the_limit(draws):
    # uniform random over control/treat is half of treating everyone: about +11% > 10% in segment_harm
    oracle = constrained_oracle(draws["segment_harm"], exploration=1.0)
    assert not oracle["feasible"] and oracle["gain"] == 0.0 and oracle["harm"]["complaints"] > 0.10


def test_oracle_of_a_null_scenario_gains_nothing():
    sim = simulate(5000, scenario="null", seed=2)
    oracle = constrained_oracle(sim)
    assert oracle["feasible"] and oracle["gain"] == 0.0 and oracle["arm_shares"]["control"] == pytest.approx(1 - 0.05 * 2 / 3)


# -- the benchmark's bookkeeping --------------------------------------------------------------

def test_plan_spreads_experiments_evenly_with_distinct_seeds():
    cases = plan([10_000, 20_000], 6, DEFAULT_SCENARIOS, seed=5)
    assert len(cases) == 12 and len({c.seed for c in cases}) == 12 and min(c.seed for c in cases) == 5
    for size in (10_000, 20_000):
        scenarios = [c.scenario for c in cases if c.size == size]
        assert all(scenarios.count(s) == 2 for s in DEFAULT_SCENARIOS)
    # the default run makes at least 100 experiments
    assert len(plan([10_000, 20_000, 50_000], main.__globals__["DEFAULT_PER_SIZE"], DEFAULT_SCENARIOS)) >= 100


def test_wilson_interval():
    assert wilson(0, 10)[0] == 0.0 and 0.25 < wilson(0, 10)[1] < 0.35
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_category_of_a_recommendation():
    assert category("tree", "treat", 0.05, "control") == "personalized"
    assert category("value", "control", 0.05, "control") == "personalized"
    assert category("constant", "treat", 0.0, "control") == "arm"
    assert category("constant", "control", 0.05, "control") == "control"
    assert category("constant", "control", 1.0, "control") == "uniform"


def test_summaries_and_tables_from_records():
    def record(size: int, scenario: str, exceeds: bool, share: float, kind: str) -> dict:
        return {"size": size, "scenario": scenario, "seed": 0, "seconds": 10.0, "exceeds": exceeds, "gain_share": share,
                "cannot_certify": kind == "control", "category": kind, "ceiling_share": 0.6 if scenario == "a" else 0.2}

    records = [record(10_000, "a", True, 0.5, "personalized"), record(10_000, "b", False, 0.0, "control"),
               record(20_000, "a", False, math.nan, "arm"), {"size": 20_000, "scenario": "b", "seed": 1, "error": "boom"}]
    rows = {r["group"]: r for r in summarize(records, "size")}
    assert rows[10_000]["experiments"] == 2 and rows[10_000]["exceed"] == 1 and rows[10_000]["mean_gain_share"] == 0.25
    assert rows[20_000]["errors"] == 1 and rows[20_000]["arm"] == 1.0 and math.isnan(rows[20_000]["mean_gain_share"])
    assert rows["all"]["experiments"] == 3 and rows["all"]["cannot_certify"] == pytest.approx(1 / 3)
    assert rows[10_000]["mean_ceiling"] == pytest.approx(0.4) and rows[20_000]["mean_ceiling"] == pytest.approx(0.6)
    table = format_table(list(rows.values()), "units")
    assert "10,000" in table and "1/2 50%" in table and table.count("\n") == 4


def test_main_rejects_an_unknown_scenario(capsys):
    with pytest.raises(SystemExit):
        main(["--scenarios", "nope"])
    assert "unknown scenario" in capsys.readouterr().err


# -- the benchmark itself -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_recommended_policies_rarely_break_a_guardrail_under_the_truth(tmp_path):
    cases = plan([10_000], 9, DEFAULT_SCENARIOS, seed=100)
    records = run_benchmark(cases, stop_on_error=True)
    assert len(records) == 9 and all("error" not in r for r in records)
    exceeded = [(r["scenario"], r["seed"], r["harm"]) for r in records if r["exceeds"]]
    assert len(exceeded) <= 1, exceeded
    for r in records:
        assert r["category"] != "control" or r["gain_share"] == 0.0
        json.dumps(r, allow_nan=True)  # records are plain data

    # the references the records were measured against are consistent
    for scenario in DEFAULT_SCENARIOS:
        ref = reference(scenario)
        sim = ref.sim
        control = policy_truth(constant_policy(sim.arms, "control"), sim)
        assert control["gain"] == 0.0 and all(h == 0.0 for h in control["harm"].values())
        assert ref.oracle["feasible"] and ref.oracle["gain"] > 0 and not ref.oracle["truth"]["exceeds"]
        if scenario == "segment_harm":
            assert policy_truth(constant_policy(sim.arms, "treat"), sim)["exceeds"]


def test_run_case_records_one_experiment_without_the_pipeline(monkeypatch, tmp_path):
    """``run_case``'s measurements, with ``pex.run`` replaced by a stub that recommends a known tree."""
    import pex
    from bench import guardrails

    tree = {"feature": "platform", "op": "in", "value": ["android"], "left": {"arm": "control"}, "right": {"arm": "treat"}}
    policy = TreePolicy(name="stub-tree", arms=["control", "treat"], default_arm="treat", tree=tree, exploration=0.05)
    seen = {}

    class Result:
        summary: ClassVar[dict] = {"recommendation": {"verdict": "personalize"},
                                   "policies": [{"name": "stub-tree", "guardrails": {}}], "timings": {"total": 0.0}}

        def policy(self):
            return policy

    def fake_run(spec_path, out, home, **options):
        seen.update(options, spec=spec_path)
        return Result()

    monkeypatch.setattr(pex, "run", fake_run)
    ref = reference("segment_harm", units=30_000, seed=9)
    record = guardrails.run_case(Case(size=2000, scenario="segment_harm", seed=4), ref, tmp_path)
    assert seen["use_ax"] is False and seen["seed"] == 4 and seen["spec"].exists()
    assert record["category"] == "personalized" and not record["cannot_certify"] and not record["exceeds"]
    assert record["gain_share"] == pytest.approx(policy_truth(policy, ref.sim)["gain"] / ref.oracle["gain"])
    assert 0.5 < record["gain_share"] < 0.85  # the depth-1 tree gets about two thirds of the oracle
    # certifying on 500 held-out units costs much of the oracle's gain, even knowing the truth
    assert record["ceiling_share"] == pytest.approx(ref.ceiling(500)["fixed_sequence"] / ref.oracle["gain"])
    assert 0.0 < record["ceiling_share"] < 0.8
