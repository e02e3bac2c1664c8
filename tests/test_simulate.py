"""The simulator: reproducible, internally consistent, with the promised structure."""

from __future__ import annotations

import numpy as np
import pytest

from pex.simulate import METRICS, population_ate, simulate


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
