"""Off-policy evaluation: hand-computed estimator formulas, identities against the
simulated truth, diagnostics, bad inputs, cross-fitted reward models, and (slow)
bias and interval coverage over repeated simulated experiments."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from pex.errors import DataError
from pex.evaluation import estimators as ope
from pex.evaluation.estimators import (
    ESTIMATORS,
    DirectMethod,
    DoublyRobust,
    Estimate,
    InverseProbabilityWeighting,
    SelfNormalizedIPS,
    cross_fit_rewards,
    diagnostics,
    difference,
    disagreement,
    evaluate,
)
from pex.experiment.features import FeatureEncoder
from pex.experiment.simulate import SimulatedExperiment, simulate
from pex.policy.base import Policy

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "notification_cadence-tree-example.json"
Z95 = 1.959963984540054

# -- a six-unit, two-arm example small enough to compute by hand --------------------------------
#           unit:   0    1    2    3     4    5
REWARD = np.array([1.0, 5.0, 7.0, 3.0, 2.0, 4.0])
ACTION = np.array([0, 1, 0, 1, 0, 1])
PSCORE = np.array([0.5, 0.5, 0.25, 0.75, 0.5, 0.5])
DIST = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
Q = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [2.0, 2.0], [0.0, 4.0], [1.0, 1.0]])
# weights pi(a_i|x_i) / pscore_i = 2, 0, 0, 4/3, 1, 1


def _se(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def _check_estimate(est: Estimate, name: str, contributions, value: float) -> None:
    assert est.estimator == name
    assert est.n == len(contributions)
    assert est.value == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(est.contributions, contributions, rtol=1e-12)
    assert est.se == pytest.approx(_se(contributions), rel=1e-12)
    assert est.ci_low == pytest.approx(value - Z95 * est.se, rel=1e-12)
    assert est.ci_high == pytest.approx(value + Z95 * est.se, rel=1e-12)


def test_ips_by_hand():
    # w * r = 2*1, 0, 0, 4/3*3, 1*2, 1*4
    est = InverseProbabilityWeighting().estimate(REWARD, ACTION, PSCORE, DIST)
    _check_estimate(est, "ips", [2.0, 0.0, 0.0, 4.0, 2.0, 4.0], 2.0)
    assert est.se == pytest.approx(np.sqrt(16 / 5 / 6))  # squared deviations from 2 sum to 16


def test_snips_by_hand():
    # V = sum w r / sum w = 12 / (16/3) = 2.25; influence values V + w (r - V) / mean(w), mean(w) = 8/9
    est = SelfNormalizedIPS().estimate(REWARD, ACTION, PSCORE, DIST)
    _check_estimate(est, "snips", [-0.5625, 2.25, 2.25, 3.375, 1.96875, 4.21875], 2.25)


def test_dm_by_hand():
    # sum_a pi(a|x) q(x, a) per unit
    est = DirectMethod().estimate(REWARD, ACTION, PSCORE, DIST, Q)
    _check_estimate(est, "dm", [1.0, 3.0, 6.0, 2.0, 2.0, 1.0], 2.5)


def test_dr_by_hand():
    # DM term + w (r - q(x, a_i)): unit 3 adds 4/3 * (3 - 2), unit 4 1 * (2 - 0), unit 5 1 * (4 - 1)
    est = DoublyRobust().estimate(REWARD, ACTION, PSCORE, DIST, Q)
    _check_estimate(est, "dr", [1.0, 3.0, 6.0, 2.0 + 4 / 3, 4.0, 4.0], 32 / 9)


def test_difference_is_paired_by_hand():
    dr = DoublyRobust().estimate(REWARD, ACTION, PSCORE, DIST, Q)
    dm = DirectMethod().estimate(REWARD, ACTION, PSCORE, DIST, Q)
    diff = difference(dr, dm)
    _check_estimate(diff, "dr-dm", [0.0, 0.0, 0.0, 4 / 3, 2.0, 3.0], 32 / 9 - 2.5)
    assert difference(dr, dr).se == 0.0
    assert difference(dr, dr).estimator == "dr"
    assert difference(dr, dm, estimator="gap").estimator == "gap"
    short = DirectMethod().estimate(REWARD[:4], ACTION[:4], PSCORE[:4], DIST[:4], Q[:4])
    with pytest.raises(ValueError, match="same units"):
        difference(dr, short)


def test_estimate_record():
    est = DoublyRobust().estimate(REWARD, ACTION, PSCORE, DIST, Q)
    d = est.to_dict()
    assert d == {"estimator": "dr", "value": est.value, "se": est.se, "ci_low": est.ci_low, "ci_high": est.ci_high, "n": 6}
    assert json.loads(json.dumps(d)) == d
    assert "contributions" not in repr(est)
    with pytest.raises(ValueError):
        est.contributions[0] = 1.0  # read-only: value == contributions.mean() cannot drift
    assert est == DoublyRobust().estimate(REWARD, ACTION, PSCORE, DIST, Q)
    assert Estimate.from_contributions("dr", est.contributions) == est
    with pytest.raises(ValueError, match="at least 2 units"):
        Estimate.from_contributions("dr", [1.0])


def test_evaluate_runs_every_estimator():
    out = evaluate(REWARD, ACTION, PSCORE, DIST, Q)
    assert list(out) == ["ips", "snips", "dm", "dr"] == [e.name for e in ESTIMATORS]
    assert out["dr"].value == pytest.approx(32 / 9)
    only_ips = evaluate(REWARD, ACTION, PSCORE, DIST, None, estimators=[InverseProbabilityWeighting()])
    assert list(only_ips) == ["ips"]
    with pytest.raises(DataError, match="needs reward_hat"):
        evaluate(REWARD, ACTION, PSCORE, DIST, None)


# -- against the simulated truth ----------------------------------------------------------------


def _logged(sim: SimulatedExperiment, policy: Policy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logged arm index, its randomization probability, the policy's action distribution)."""
    action = sim.data["arm"].map({a: i for i, a in enumerate(policy.arms)}).to_numpy(dtype=int)
    pscore = np.array([sim.allocation[a] for a in policy.arms])[action]
    return action, pscore, policy.action_probabilities(sim.data)


def _expected(sim: SimulatedExperiment, metric: str, arms: list[str]) -> np.ndarray:
    return np.column_stack([sim.truth.expected[metric][a] for a in arms])


def _features(frame) -> tuple[np.ndarray, list[int]]:
    """The simulated features plus the pre-period covariate, categories as codes."""
    columns = ["age", "tenure_days", "country", "platform", *[c for c in frame.columns if c.startswith("x")], "sessions_pre"]
    encoder = FeatureEncoder.fit(frame, {c: "categorical" if c in ("country", "platform") else "numeric" for c in columns})
    return encoder.transform(frame), encoder.categorical_indices


def _tree_policy() -> Policy:
    doc = json.loads(EXAMPLE.read_text())
    doc["exploration"] = 0.0
    return Policy.from_document(doc)


@pytest.fixture(scope="module")
def tree() -> Policy:
    return _tree_policy()


@pytest.fixture(scope="module")
def small_sim() -> SimulatedExperiment:
    return simulate(8000, scenario="notification_cadence", seed=5)


@pytest.fixture(scope="module")
def cross_fitted(small_sim, tree) -> dict[str, np.ndarray]:
    X, cat = _features(small_sim.data)
    action, _, _ = _logged(small_sim, tree)
    return {m: cross_fit_rewards(X, action, small_sim.data[m].to_numpy(), 3, binary=(m == "converted"), categorical=cat)
            for m in ("sessions", "converted")}


def test_evaluating_the_logging_policy_gives_the_mean_reward(sim, tree):
    action, pscore, _ = _logged(sim, tree)
    logging = np.tile([sim.allocation[a] for a in tree.arms], (len(action), 1))
    reward = sim.data["sessions"].to_numpy()
    for estimator in (InverseProbabilityWeighting(), SelfNormalizedIPS()):
        est = estimator.estimate(reward, action, pscore, logging)
        assert est.value == pytest.approx(reward.mean(), rel=1e-12)
        assert est.se == pytest.approx(_se(reward), rel=1e-9)
    d = diagnostics(action, pscore, logging)
    assert d["ess"] == pytest.approx(len(action), rel=1e-12)
    assert d["ess_share"] == pytest.approx(1.0) and d["mean_weight"] == pytest.approx(1.0) and d["max_weight"] == pytest.approx(1.0)
    assert d["warnings"] == []


def test_dr_is_dm_plus_the_weighted_residual_and_exact_with_perfect_rewards(sim, tree):
    action, pscore, dist = _logged(sim, tree)
    for metric in ("sessions", "converted"):
        q = _expected(sim, metric, tree.arms)
        reward = sim.data[metric].to_numpy()
        est = evaluate(reward, action, pscore, dist, q)
        weight = dist[np.arange(len(action)), action] / pscore
        residual = weight * (reward - q[np.arange(len(action)), action])
        np.testing.assert_allclose(est["dr"].contributions, est["dm"].contributions + residual, rtol=1e-12, atol=1e-12)
        # DM with the true expected outcomes is the sample's true policy value, exactly
        sample_truth = float((dist * q).sum(axis=1).mean())
        assert est["dm"].value == pytest.approx(sample_truth, rel=1e-12)
        # DR then only adds mean-zero noise: it is unbiased and tighter than IPS
        assert abs(est["dr"].value - sample_truth) < 4 * est["dr"].se
        assert abs(est["ips"].value - sample_truth) < 4 * est["ips"].se
        assert est["dr"].se < est["ips"].se


def test_dr_beats_ips_with_a_cross_fitted_reward_model(small_sim, tree, cross_fitted):
    action, pscore, dist = _logged(small_sim, tree)
    for metric, q in cross_fitted.items():
        reward = small_sim.data[metric].to_numpy()
        est = evaluate(reward, action, pscore, dist, q)
        sample_truth = float((dist * _expected(small_sim, metric, tree.arms)).sum(axis=1).mean())
        assert abs(est["dr"].value - sample_truth) < 4 * est["dr"].se
        assert est["dr"].se < est["ips"].se
        assert not disagreement([est["ips"], est["snips"], est["dr"]])
    # the continuous metric's outcome model explains most of the variance: a large reduction
    sessions = evaluate(small_sim.data["sessions"].to_numpy(), action, pscore, dist, cross_fitted["sessions"])
    assert sessions["dr"].se < 0.7 * sessions["ips"].se


def test_paired_difference_is_tighter_than_independent(small_sim, tree, cross_fitted):
    action, pscore, dist = _logged(small_sim, tree)
    everyone_control = np.zeros_like(dist)
    everyone_control[:, 0] = 1.0
    reward, q = small_sim.data["sessions"].to_numpy(), cross_fitted["sessions"]
    a = DoublyRobust().estimate(reward, action, pscore, dist, q)
    b = DoublyRobust().estimate(reward, action, pscore, everyone_control, q)
    diff = difference(a, b)
    assert diff.value == pytest.approx(a.value - b.value, rel=1e-12)
    assert diff.value == pytest.approx(diff.contributions.mean(), rel=1e-12)
    assert diff.se < np.hypot(a.se, b.se)
    truth = _expected(small_sim, "sessions", tree.arms)
    true_gain = float((dist * truth).sum(axis=1).mean() - truth[:, 0].mean())
    assert diff.ci_low < true_gain < diff.ci_high


# -- diagnostics and disagreement ---------------------------------------------------------------


def _bad_overlap(rng, n):
    """99.5% of units logged in arm 0; the policy always wants the rare arm 1."""
    action = (rng.uniform(size=n) < 0.005).astype(int)
    pscore = np.where(action == 1, 0.005, 0.995)
    return action, pscore, np.tile([0.0, 1.0], (n, 1))


def _wrong_propensities(rng, n):
    """Assignment was uniform over 3 arms, but pscore claims a 60/20/20 split."""
    action = rng.integers(0, 3, n)
    return action, np.array([0.6, 0.2, 0.2])[action], np.full((n, 3), 1 / 3)


def _unlogged_arm(rng, n):
    """Arm 2 was never logged, yet the policy sends a third of the units there."""
    action = rng.integers(0, 2, n)
    return action, np.full(n, 0.5), np.tile([1 / 3, 1 / 3, 1 / 3], (n, 1))


@pytest.mark.parametrize(("case", "warning"), [
    (_bad_overlap, "Few effective units"),
    (_bad_overlap, "Dominant units"),
    (_bad_overlap, "probability as low as 0.005"),
    (_wrong_propensities, "Suspicious propensities"),
    (_unlogged_arm, "no unit logged"),
])
def test_diagnostics_warn_on_bad_cases(case, warning):
    action, pscore, dist = case(np.random.default_rng(3), 5000)
    d = diagnostics(action, pscore, dist)
    assert any(warning in w for w in d["warnings"]), d["warnings"]


def test_wrong_propensities_are_the_only_warning_of_that_case():
    d = diagnostics(*_wrong_propensities(np.random.default_rng(3), 5000))
    assert len(d["warnings"]) == 1
    assert d["mean_weight"] == pytest.approx(1 / 9 * (1 / 0.6 + 5 + 5), abs=0.05)


def test_diagnostics_are_quiet_on_a_clean_randomized_experiment(sim, tree):
    action, pscore, dist = _logged(sim, tree)
    d = diagnostics(action, pscore, dist)
    assert d["warnings"] == []
    assert 0.25 < d["ess_share"] < 0.45  # a deterministic policy over ~3 equal arms keeps about a third
    assert d["max_weight"] == pytest.approx(1 / 0.33)
    assert json.loads(json.dumps(d)) == d


def _est(value: float, half_width: float) -> Estimate:
    return Estimate("x", value, half_width / Z95, value - half_width, value + half_width, 10, np.full(10, value))


def test_disagreement():
    assert not disagreement([])
    assert not disagreement([_est(1.0, 0.1)])
    assert not disagreement([_est(1.0, 0.2), _est(1.3, 0.2), _est(1.1, 0.05)])
    assert disagreement([_est(1.0, 0.1), _est(1.3, 0.1)])
    assert disagreement([_est(1.3, 0.1), _est(1.15, 0.1), _est(1.0, 0.1)])  # only the outer two are apart


def test_a_biased_reward_model_makes_dm_disagree(small_sim, tree, cross_fitted):
    action, pscore, dist = _logged(small_sim, tree)
    reward = small_sim.data["sessions"].to_numpy()
    est = evaluate(reward, action, pscore, dist, cross_fitted["sessions"] + 1.0)  # a model one session too high
    assert disagreement(list(est.values()))
    assert not disagreement([est["ips"], est["dr"]])  # DR's correction removes the model's bias


# -- bad inputs ---------------------------------------------------------------------------------


def _inputs(**changes) -> dict:
    base = {"reward": REWARD, "action": ACTION, "pscore": PSCORE, "action_dist": DIST, "reward_hat": Q}
    return {**base, **changes}


@pytest.mark.parametrize(("changes", "match"), [
    ({"reward": REWARD[:5]}, r"reward has shape \(5,\) but action_dist has 6 rows"),
    ({"pscore": PSCORE[:, None]}, r"pscore has shape \(6, 1\)"),
    ({"action": ACTION[:5]}, r"action has shape \(5,\)"),
    ({"action": ACTION[:, None]}, "action must be one-dimensional"),
    ({"action_dist": DIST[:5]}, r"but action_dist has 5 rows"),
    ({"action_dist": DIST[0]}, r"action_dist must have shape \(n_units, n_arms\)"),
    ({"action_dist": DIST[:1], "reward": REWARD[:1], "action": ACTION[:1], "pscore": PSCORE[:1]}, "at least 2 units"),
    ({"pscore": np.where(np.arange(6) == 2, 0.0, PSCORE)}, r"pscore must be a probability in \(0, 1\], found 0\b"),
    ({"pscore": np.where(np.arange(6) == 2, -0.5, PSCORE)}, "found -0.5"),
    ({"pscore": np.where(np.arange(6) == 2, 1.5, PSCORE)}, "found 1.5"),
    ({"pscore": np.where(np.arange(6) == 2, np.nan, PSCORE)}, "found nan"),
    ({"action": np.array([0, 1, 0, 2, 0, 1])}, "action 2 is out of range for 2 arms"),
    ({"action": np.array([0, 1, 0, -1, 0, 1])}, "action -1 is out of range"),
    ({"action": ACTION + 0.5}, "not whole numbers"),
    ({"action": np.array(["a", "b", "a", "b", "a", "b"])}, "must hold integer arm indices"),
    ({"action_dist": DIST * 0.9}, "rows must sum to 1; row 0 sums to 0.9"),
    ({"action_dist": DIST + np.array([[0.0, 2e-6]] + [[0.0, 0.0]] * 5)}, "row 0 sums to 1"),
    ({"action_dist": np.where(DIST == 1.0, 1.5, np.where(DIST == 0.0, -0.5, DIST))}, "negative or missing"),
    ({"reward": np.where(np.arange(6) == 1, np.nan, REWARD)}, "reward has 1 missing or infinite values"),
    ({"reward_hat": Q[:, :1]}, r"reward_hat has shape \(6, 1\) but action_dist has shape \(6, 2\)"),
    ({"reward_hat": np.where(Q == 3.0, np.nan, Q)}, "reward_hat holds missing"),
    ({"reward_hat": None}, "needs reward_hat"),
])
def test_bad_inputs_are_data_errors(changes, match):
    with pytest.raises(DataError, match=match) as info:
        evaluate(**_inputs(**changes))
    assert info.value.hint


def test_row_sums_within_tolerance_are_accepted():
    nudged = DIST + np.array([[0.0, 5e-7]] + [[0.0, 0.0]] * 5)
    assert evaluate(**_inputs(action_dist=nudged))["ips"].value == pytest.approx(2.0)
    as_floats = evaluate(**_inputs(action=ACTION.astype(float)))  # whole-number floats are indices too
    assert as_floats["dr"].value == pytest.approx(32 / 9)


def test_snips_without_any_informative_unit_is_a_data_error():
    never_logged = np.tile([0.0, 1.0], (6, 1))
    with pytest.raises(DataError, match="probability 0 to every logged arm"):
        SelfNormalizedIPS().estimate(REWARD, np.zeros(6, dtype=int), PSCORE, never_logged)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"binary": True}, "binary reward must be 0 or 1"),
    ({"folds": 1}, "folds must be an integer from 2"),
    ({"n_arms": 1}, "action 1 is out of range for 1 arms"),
    ({"n_arms": 0}, "n_arms must be a positive integer"),
    ({"X": np.zeros((5, 2))}, "must describe the same units"),
    ({"reward": np.where(np.arange(6) == 0, np.inf, REWARD)}, "reward has 1 missing or infinite"),
    ({"categorical": [3]}, "categorical column indices"),
])
def test_cross_fit_bad_inputs(kwargs, match):
    args = {"X": np.arange(12.0).reshape(6, 2), "action": ACTION, "reward": REWARD, "n_arms": 2, "binary": False, **kwargs}
    with pytest.raises(DataError, match=match):
        cross_fit_rewards(**args)


# -- cross-fitted reward models -----------------------------------------------------------------


def test_cross_fit_predictions_are_out_of_fold():
    sim = simulate(1500, scenario="notification_cadence", seed=8)
    X, cat = _features(sim.data)
    action = sim.data["arm"].map({"control": 0, "daily": 1, "weekly": 2}).to_numpy()
    reward = sim.data["sessions"].to_numpy()
    before = cross_fit_rewards(X, action, reward, 3, binary=False, categorical=cat, seed=4)
    changed = reward.copy()
    changed[0] += 50.0  # one unit reports an absurd outcome
    after = cross_fit_rewards(X, action, changed, 3, binary=False, categorical=cat, seed=4)
    unchanged = (after == before).all(axis=1)
    assert unchanged[0]  # its own predictions cannot see it
    # it trained the models of the other fold only: half the units moved, its own fold did not
    assert 0.45 < unchanged.mean() < 0.55
    assert before.shape == (1500, 3) and np.isfinite(before).all()
    np.testing.assert_array_equal(before, cross_fit_rewards(X, action, reward, 3, binary=False, categorical=cat, seed=4))


def test_cross_fit_recovers_the_expected_outcomes(small_sim, tree, cross_fitted):
    for metric, floor in (("sessions", 0.85), ("converted", 0.3)):
        q, truth = cross_fitted[metric], _expected(small_sim, metric, tree.arms)
        assert q.shape == (len(small_sim.data), 3)
        for arm in range(3):
            assert np.corrcoef(q[:, arm], truth[:, arm])[0, 1] > floor, (metric, arm)
    assert cross_fitted["converted"].min() > 0 and cross_fitted["converted"].max() < 1  # probabilities


def test_cross_fit_falls_back_to_the_arm_mean_for_tiny_arms():
    rng = np.random.default_rng(0)
    n = 400
    X = rng.normal(size=(n, 3))
    X[rng.uniform(size=(n, 3)) < 0.1] = np.nan  # missing values are fine
    action = np.where(np.arange(n) < 8, 2, rng.integers(0, 2, n))  # arm 2: 8 units; arm 3: none
    reward = np.where(action == 2, 7.0, X[:, 0] + rng.normal(size=n))
    reward = np.where(np.isnan(reward), 0.0, reward)
    q = cross_fit_rewards(X, action, reward, 4, binary=False, folds=3)
    np.testing.assert_array_equal(q[:, 2], 7.0)
    assert np.unique(q[:, 3]).size <= 3  # one training-fold mean per fold
    assert reward.min() < q[:, 3].min() and q[:, 3].max() < reward.max()
    assert np.unique(q[:, 0]).size > 3  # the well-populated arms get real models


# -- slow: bias and coverage over repeated experiments ------------------------------------------

REPLICATIONS = 200
SLOW_METRICS = {"sessions": False, "converted": True}  # metric -> binary


def _policy_truth(policy: Policy, chunks: int = 3, n: int = 1_000_000, seed: int = 424_242) -> dict[str, tuple[float, float]]:
    """Population value of ``policy`` per metric and its Monte Carlo standard error.

    Averaged over ``chunks`` large draws of units (3M in all, about 0.002 sessions
    of Monte Carlo error). The policy reads the observed features (with their
    missing values), as it would in production; the value is the true expected
    outcome of the arm it picks.
    """
    values: dict[str, list[np.ndarray]] = {metric: [] for metric in SLOW_METRICS}
    for chunk in range(chunks):
        big = simulate(n, scenario="notification_cadence", seed=seed + chunk)
        chosen = policy.greedy_arms(big.data)
        for metric in SLOW_METRICS:
            values[metric].append(_expected(big, metric, policy.arms)[np.arange(n), chosen])
        del big
    return {metric: (float(np.concatenate(v).mean()), _se(np.concatenate(v))) for metric, v in values.items()}


@pytest.mark.slow
def test_ips_and_dr_are_unbiased_with_nominal_coverage():
    policy = _tree_policy()
    truth = _policy_truth(policy)
    names = ("ips", "snips", "dm", "dr")
    values = {(e, m): [] for e in names for m in SLOW_METRICS}
    ses = {(e, m): [] for e in names for m in SLOW_METRICS}
    covered = {(e, m): [] for e in names for m in SLOW_METRICS}
    for r in range(REPLICATIONS):
        sim = simulate(4000, scenario="notification_cadence", seed=r)
        action, pscore, dist = _logged(sim, policy)
        X, cat = _features(sim.data)
        for metric, binary in SLOW_METRICS.items():
            reward = sim.data[metric].to_numpy()
            q = cross_fit_rewards(X, action, reward, len(policy.arms), binary=binary, categorical=cat, seed=r)
            for name, est in evaluate(reward, action, pscore, dist, q).items():
                values[name, metric].append(est.value)
                ses[name, metric].append(est.se)
                covered[name, metric].append(est.ci_low <= truth[metric][0] <= est.ci_high)
    report = {key: (float(np.mean(v)) - truth[key[1]][0], float(np.std(v, ddof=1)), float(np.mean(ses[key])),
                    float(np.mean(covered[key]))) for key, v in values.items()}
    # shown with -s: bias of the mean estimate, spread of the estimates, mean reported SE, coverage
    print(f"\ntruth {truth}\nestimator metric     bias      sd       mean se  coverage")
    for (name, metric), (bias, sd, se, coverage) in report.items():
        print(f"{name:9s} {metric:10s} {bias:+.5f} {sd:.5f} {se:.5f} {coverage:.3f}")
    for name in ("ips", "dr"):
        for metric in SLOW_METRICS:
            bias, sd, _, _ = report[name, metric]
            # the mean of 200 estimates is within 2 of its standard errors of the truth,
            # allowing 2 Monte Carlo standard errors of the truth itself
            assert abs(bias) <= 2 * sd / np.sqrt(REPLICATIONS) + 2 * truth[metric][1], (name, metric, report[name, metric])
        # Coverage is pooled over the two metrics (400 intervals): 200 intervals give a
        # binomial standard error of 1.5 points, so a 93-97% band per metric would fail
        # about one run in five for a perfectly calibrated interval; pooled, the band is
        # about 1.8 standard errors wide each way (less with the metrics' positive
        # correlation). A wrong SE (e.g. ignoring the weights' variance, or a too-narrow
        # DM-style interval) still fails it by a wide margin.
        pooled = float(np.mean(covered[name, "sessions"] + covered[name, "converted"]))
        assert 0.93 <= pooled <= 0.97, (name, pooled, report)


# -- simultaneous_z -----------------------------------------------------------------------------


def _estimate(contributions: np.ndarray) -> ope.Estimate:
    return ope.Estimate.from_contributions("dr", contributions)


def test_simultaneous_z_between_one_test_and_bonferroni():
    rng = np.random.default_rng(5)
    base = rng.normal(size=20_000)
    single = NormalDist().inv_cdf(0.95)
    assert ope.simultaneous_z([_estimate(base)]) == pytest.approx(single)
    # the same estimate five times is one claim, not five
    assert ope.simultaneous_z([_estimate(base)] * 5) == pytest.approx(single, abs=0.02)
    # independent estimates: the Sidak value, (1 - alpha)^(1/K) per claim
    independent = [_estimate(rng.normal(size=20_000)) for _ in range(6)]
    sidak = NormalDist().inv_cdf(0.95 ** (1 / 6))
    assert ope.simultaneous_z(independent) == pytest.approx(sidak, abs=0.03)
    # alike (correlation about 0.9) costs far less than Bonferroni
    alike = [_estimate(base + 0.33 * rng.normal(size=20_000)) for _ in range(6)]
    z = ope.simultaneous_z(alike)
    assert single < z < sidak - 0.1
    # a constant estimate cannot err and does not count
    assert ope.simultaneous_z([_estimate(base), _estimate(np.ones(20_000))]) == pytest.approx(single)


def test_simultaneous_bounds_cover_every_estimate_at_once():
    """Over 400 replications of six alike estimates, the lower bounds at the max-t value hold all at once about 95%
    of the time, where unadjusted bounds fail far more often."""
    rng = np.random.default_rng(11)
    held = unadjusted = 0
    for _ in range(400):
        common = rng.normal(size=2_000)
        estimates = [_estimate(common + 0.5 * rng.normal(size=2_000)) for _ in range(6)]  # every truth is 0
        z = ope.simultaneous_z(estimates, draws=20_000)
        held += all(e.value - z * e.se <= 0.0 for e in estimates)
        unadjusted += all(e.value - 1.645 * e.se <= 0.0 for e in estimates)
    assert 0.92 <= held / 400 <= 0.98
    assert unadjusted / 400 < 0.9


# -- step_down_upper ----------------------------------------------------------------------------


def _exact(rng: np.random.Generator, value: float, se: float, n: int = 10_000) -> ope.Estimate:
    """An estimate with exactly this value and standard error (independent noise)."""
    noise = rng.normal(size=n)
    noise = (noise - noise.mean()) / noise.std(ddof=1)
    return _estimate(value + se * np.sqrt(n) * noise)


def test_step_down_makes_each_claim_at_a_shrinking_critical_value():
    rng = np.random.default_rng(3)
    far, over = _exact(rng, -1.0, 0.01), _exact(rng, 1.0, 0.01)
    near = _exact(rng, -2.03 * 0.01, 0.01)  # within at two independent claims' z (~1.95), not at three (~2.12)
    first = ope.simultaneous_z([far, near, over])
    second = ope.simultaneous_z([near, over])
    assert near.value + first * near.se > 0.0 >= near.value + second * near.se
    made = ope.step_down_upper([far, near, over], [0.0, 0.0, 0.0])
    assert made[0] == pytest.approx(first) and made[2] is None
    assert made[1] == pytest.approx(second) and made[1] < first  # made once "far" was out of the way
    # the same claim alone among ones that are never made is never made: the bar does not drop for them
    assert ope.step_down_upper([near, over, _exact(rng, 1.0, 0.01)], [0.0] * 3)[0] is None
    with pytest.raises(ValueError, match="one limit per estimate"):
        ope.step_down_upper([far], [0.0, 1.0])


@pytest.mark.slow  # a 6 s sweep; the family-wise error of the procedures is tested in test_multiple_testing.py
def test_step_down_claims_are_all_true_at_once_about_95_percent_of_the_time():
    """Six alike estimates whose truths sit exactly at their limits (the hardest case) and three that are truly
    within: over 400 replications some false claim is made about 5% of the time, while the true ones are made."""
    rng = np.random.default_rng(13)
    false_claims = made_true = 0
    for _ in range(400):
        common = rng.normal(size=2_000)
        at_limit = [_estimate(common + 0.5 * rng.normal(size=2_000)) for _ in range(6)]  # truth 0, limit 0
        within = [_estimate(common + 0.5 * rng.normal(size=2_000) - 0.5) for _ in range(3)]  # truth -0.5
        made = ope.step_down_upper([*at_limit, *within], [0.0] * 9)
        false_claims += any(z is not None for z in made[:6])
        made_true += sum(z is not None for z in made[6:])
    assert 0.02 <= false_claims / 400 <= 0.08
    assert made_true / (3 * 400) > 0.99
