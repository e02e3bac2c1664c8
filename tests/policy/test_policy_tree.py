"""Policy trees searched exhaustively on per-unit rewards (pex.policy.policy_tree)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from pex.experiment.features import FeatureEncoder
from pex.policy.base import Policy
from pex.policy.policy_tree import PolicyTreeFit, candidate_thresholds, fit_policy_tree, to_policy_node
from pex.policy.tree import TreePolicy

KINDS = {"x0": "numeric", "x1": "categorical", "noise_num": "numeric", "noise_cat": "categorical"}


def _leaf_ids(node: dict, X: np.ndarray) -> np.ndarray:
    """Which leaf (numbered in depth-first order) each row reaches, read row by row."""
    leaves: list[int] = []

    def number(d: dict) -> None:
        if "arm" in d:
            d["_id"] = len(leaves)
            leaves.append(0)
        else:
            number(d["left"])
            number(d["right"])

    node = _copy(node)
    number(node)
    out = []
    for row in X:
        d = node
        while "arm" not in d:
            x = row[d["feature"]]
            d = d["left"] if (d["missing_left"] if math.isnan(x) else x <= d["threshold"]) else d["right"]
        out.append(d["_id"])
    return np.asarray(out)


def _copy(d: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Arm 1 is best iff x0 > 0.3; otherwise arm 2 iff x1 == "b", else arm 0.

    Returns the frame, the mean rewards (n, 3) and the oracle arms.
    """
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(size=n)
    x1 = rng.choice(np.array(["a", "b", None], dtype=object), size=n, p=[0.45, 0.45, 0.1])
    frame = pd.DataFrame({"x0": x0, "x1": x1, "noise_num": rng.normal(size=n),
                          "noise_cat": rng.choice(["p", "q", "r"], size=n)})
    high, is_b = x0 > 0.3, x1 == "b"
    mean = np.column_stack([np.full(n, 1.0), np.where(high, 1.6, 0.4), np.where(~high & is_b, 1.7, 0.6)])
    oracle = np.where(high, 1, np.where(is_b, 2, 0))
    return frame, mean, oracle


def test_depth_two_recovers_the_optimal_rule():
    frame, mean, oracle = _synthetic(20_000, seed=1)
    rewards = mean + np.random.default_rng(2).normal(scale=0.5, size=mean.shape)
    encoder = FeatureEncoder.fit(frame, KINDS)
    X = encoder.transform(frame)
    fit = fit_policy_tree(X, rewards, depth=2, categorical=encoder.categorical_indices)

    rows = np.arange(len(frame))
    oracle_value = rewards[rows, oracle].mean()
    assert fit.value >= 0.99 * oracle_value
    assert fit.value == pytest.approx(rewards[rows, fit.apply(X)].mean())
    # on the noiseless rewards too, and it is the oracle's rule, not a lucky other tree
    assert mean[rows, fit.apply(X)].mean() >= 0.99 * mean[rows, oracle].mean()
    assert (fit.apply(X) == oracle).mean() > 0.99
    # the rule can be written with either feature at the root; every split must be one of the rule's
    for split in _walk(fit.node):
        if split["feature"] == 0:
            assert 0.28 < split["threshold"] < 0.32
        else:  # x1: "a" (code 0) and missing on one side, "b" on the other
            assert (split["feature"], split["threshold"], split["missing_left"]) == (1, 0.5, True)


def _brute_force(X: np.ndarray, rewards: np.ndarray, bins: int, min_leaf: int, depth: int) -> float:
    """Best total reward over every tree of at most ``depth`` (1 or 2) levels and every arm per leaf."""
    n, p = X.shape
    arms = rewards.shape[1]
    splits: list = [None]  # None: a leaf
    for j in range(p):
        for t in candidate_thresholds(X[:, j], bins):
            for missing_left in (False, True):
                splits.append((j, t, missing_left))

    def left(i: int, split: tuple) -> bool:
        x = X[i, split[0]]
        return split[2] if math.isnan(x) else x <= split[1]

    best = -math.inf
    children = splits if depth == 2 else [None]
    for root, below_left, below_right in itertools.product(splits, children, children):
        if root is None and (below_left is not None or below_right is not None):
            continue
        leaf_of = []
        for i in range(n):
            if root is None:
                leaf_of.append(0)
                continue
            go_left = left(i, root)
            below = below_left if go_left else below_right
            side = 0 if go_left else 2
            leaf_of.append(side + (0 if below is None or left(i, below) else 1))
        leaf_of = np.asarray(leaf_of)
        used = np.unique(leaf_of)
        sizes = [(leaf_of == leaf).sum() for leaf in used]
        if min(sizes) < min_leaf:
            continue
        totals = [rewards[leaf_of == leaf].sum(axis=0) for leaf in used]
        for choice in itertools.product(range(arms), repeat=len(used)):
            best = max(best, sum(t[a] for t, a in zip(totals, choice)))
    return best


@pytest.mark.parametrize(("seed", "min_leaf", "depth"), [(0, 1, 2), (1, 5, 2), (2, 1, 1), (3, 8, 2), (4, 15, 2)])
def test_search_matches_brute_force_on_a_tiny_problem(seed, min_leaf, depth):
    rng = np.random.default_rng(seed)
    n = 60
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 4, size=n).astype(float)])
    X[rng.uniform(size=n) < 0.15, 0] = np.nan
    X[rng.uniform(size=n) < 0.15, 1] = np.nan
    rewards = rng.normal(size=(n, 3)) + np.column_stack([np.zeros(n), np.nan_to_num(X[:, 0]), X[:, 1] == 2])
    bins = 3  # fewer than the distinct values of x0, so the quantile thresholds are exercised
    fit = fit_policy_tree(X, rewards, depth=depth, min_leaf=min_leaf, bins=bins, categorical=[1])
    assert fit.value * n == pytest.approx(_brute_force(X, rewards, bins, min_leaf, depth), rel=1e-9)
    assert np.bincount(_leaf_ids(fit.node, X)).min() >= min_leaf


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_min_leaf_is_respected(depth):
    rng = np.random.default_rng(7)
    n = 3_000
    X = np.column_stack([rng.uniform(size=n), rng.normal(size=n)])
    X[rng.uniform(size=n) < 0.05, 1] = np.nan
    rewards = np.column_stack([np.full(n, 0.1), np.where(X[:, 0] > 0.995, 50.0, 0.0)]) + rng.normal(size=(n, 2))
    unconstrained = fit_policy_tree(X, rewards, depth=depth)
    assert np.bincount(_leaf_ids(unconstrained.node, X)).min() < 100  # the few big winners get a leaf of their own
    constrained = fit_policy_tree(X, rewards, depth=depth, min_leaf=100)
    sizes = np.bincount(_leaf_ids(constrained.node, X))
    assert sizes.min() >= 100 and len(sizes) > 1
    assert constrained.value < unconstrained.value


def test_deeper_search_never_loses_value_and_bad_arguments_are_rejected():
    frame, mean, _ = _synthetic(5_000, seed=3)
    rewards = mean + np.random.default_rng(4).normal(size=mean.shape)
    X = FeatureEncoder.fit(frame, KINDS).transform(frame)
    values = [fit_policy_tree(X, rewards, depth=d, min_leaf=20).value for d in (1, 2, 3)]
    assert values[0] <= values[1] + 1e-12 and values[1] <= values[2] + 1e-12
    for kwargs, message in [({"depth": 4}, "depth must be 1, 2 or 3"), ({"depth": 0}, "depth must be"),
                            ({"min_leaf": 0}, "min_leaf"), ({"bins": 0}, "bins"), ({"categorical": [9]}, "outside")]:
        with pytest.raises(ValueError, match=message):
            fit_policy_tree(X, rewards, **kwargs)
    with pytest.raises(ValueError, match="rewards must have shape"):
        fit_policy_tree(X, rewards[:10])
    with pytest.raises(ValueError, match="finite"):
        fit_policy_tree(X, np.where(rewards > 2, np.nan, rewards))


def _serving_frames(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A training frame and a scoring frame with missing numbers, missing labels and a label never trained on."""
    rng = np.random.default_rng(seed)

    def frame(labels: list[str], probs: list[float]) -> pd.DataFrame:
        tenure = rng.gamma(2.0, 50.0, size=n).round(1)
        tenure[rng.uniform(size=n) < 0.15] = np.nan
        plan = rng.choice(np.array([*labels, None], dtype=object), size=n, p=probs)
        return pd.DataFrame({"tenure": tenure, "plan": plan})

    return (frame(["basic", "plus", "pro"], [0.4, 0.25, 0.25, 0.1]),
            frame(["basic", "plus", "pro", "team"], [0.3, 0.2, 0.2, 0.2, 0.1]))


def _round_trip(fit: PolicyTreeFit, encoder: FeatureEncoder, arms: list[str], frame: pd.DataFrame) -> None:
    policy = TreePolicy(name="reward-tree", arms=arms, default_arm=arms[0], tree=to_policy_node(fit.node, encoder, arms))
    restored = Policy.from_json(policy.to_json())
    expected = fit.apply(encoder.transform(frame))
    np.testing.assert_array_equal(policy.greedy_arms(frame), expected)
    np.testing.assert_array_equal(restored.greedy_arms(frame), expected)


def test_fitted_tree_serves_the_same_arms_as_a_policy_document():
    train, score = _serving_frames(20_000, seed=5)
    encoder = FeatureEncoder.fit(train, {"tenure": "numeric", "plan": "categorical"})
    X = encoder.transform(train)
    rng = np.random.default_rng(6)
    tenure, plan = X[:, 0], X[:, 1]
    rewards = np.column_stack([
        np.zeros(len(train)),
        np.where(np.isnan(tenure), 0.8, np.where(tenure > 60, 0.6, -0.6)),
        np.where(np.isnan(plan) | (plan == 0), 1.0, -0.4),
    ]) + rng.normal(scale=0.3, size=(len(train), 3))
    fit = fit_policy_tree(X, rewards, depth=2, min_leaf=50, categorical=encoder.categorical_indices)
    document = to_policy_node(fit.node, encoder, ["control", "daily", "weekly"])
    ops = {d["op"] for d in _walk(document)}
    assert ops == {"<=", "in"}
    _round_trip(fit, encoder, ["control", "daily", "weekly"], score)
    _round_trip(fit, encoder, ["control", "daily", "weekly"], train)


def _walk(node: dict):
    if "arm" not in node:
        yield node
        yield from _walk(node["left"])
        yield from _walk(node["right"])


@pytest.mark.parametrize("missing_left", [False, True])
@pytest.mark.parametrize(("feature", "threshold"), [(0, 80.0), (1, 0.5), (1, 1.0)])
def test_every_split_kind_and_missing_side_round_trips(feature, threshold, missing_left):
    train, score = _serving_frames(20_000, seed=8)
    encoder = FeatureEncoder.fit(train, {"tenure": "numeric", "plan": "categorical"})
    other = 1 - feature
    node = {"feature": feature, "threshold": threshold, "missing_left": missing_left,
            "left": {"arm": 0},
            "right": {"feature": other, "threshold": 0.5 if other == 1 else 30.0, "missing_left": not missing_left,
                      "left": {"arm": 1}, "right": {"arm": 2}}}
    _round_trip(PolicyTreeFit(node=node, value=0.0), encoder, ["control", "daily", "weekly"], score)


def test_identical_sibling_leaves_are_merged():
    encoder = FeatureEncoder(columns=["x"], kinds={"x": "numeric"})
    node = {"feature": 0, "threshold": 1.0, "missing_left": False,
            "left": {"feature": 0, "threshold": 0.0, "missing_left": True, "left": {"arm": 1}, "right": {"arm": 1}},
            "right": {"arm": 1}}
    assert to_policy_node(node, encoder, ["a", "b"]) == {"arm": "b"}
