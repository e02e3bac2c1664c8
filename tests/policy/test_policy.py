"""Policy documents (pex.policy/1) and the vectorised evaluator."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pex.experiment.simulate import simulate
from pex.policy.base import Policy, PolicyError
from pex.policy.constant import constant_policy, uniform_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "notification_cadence-tree-example.json"


@pytest.fixture(scope="module")
def doc():
    return json.loads(EXAMPLE.read_text())


def _reference_arm(node: dict, row: dict) -> str:
    """Row-by-row reading of the documented semantics, for comparison."""
    while "arm" not in node:
        value = row.get(node["feature"])
        missing_left = node.get("missing", "right") == "left"
        if node["op"] == "<=":
            try:
                x = float(value)
            except (TypeError, ValueError):
                x = float("nan")
            go_left = missing_left if np.isnan(x) else x <= node["value"]
        else:
            go_left = missing_left if value is None or (isinstance(value, float) and np.isnan(value)) else str(value) in node["value"]
        node = node["left"] if go_left else node["right"]
    return node["arm"]


def test_vectorised_evaluator_matches_the_row_by_row_semantics(doc):
    data = simulate(100_000, seed=4).data
    policy = Policy.from_document(doc)
    got = np.asarray(policy.arms, dtype=object)[policy.greedy_arms(data)]
    rows = data[["tenure_days", "age", "country"]].astype(object).where(data[["tenure_days", "age", "country"]].notna(), None)
    expected = [_reference_arm(doc["tree"], r) for r in rows.to_dict("records")]
    assert (got == np.asarray(expected, dtype=object)).all()
    assert set(got) == {"control", "daily", "weekly"}


def test_document_round_trip(doc):
    policy = Policy.from_document(doc)
    assert Policy.from_json(policy.to_json()).to_document() == policy.to_document()
    assert policy.to_document()["tree"] == doc["tree"]


def test_missing_and_unknown_features_follow_the_declared_path(doc):
    policy = Policy.from_document(doc)
    frame = pd.DataFrame({"tenure_days": [None, 10.0, "n/a", 100.0], "age": [30.0, 30.0, 30.0, None],
                          "country": ["ZZ", "US", None, "IN"]})
    arms = np.asarray(policy.arms)[policy.greedy_arms(frame)]
    # tenure missing -> right; age 30 -> control | tenure 10 -> daily | text tenure -> missing -> right -> control
    # | tenure 100, age missing -> left (declared) -> control
    assert arms.tolist() == ["control", "daily", "control", "control"]
    # a feature column absent altogether is missing for every unit, never an exception
    only_age = pd.DataFrame({"age": [50.0, 20.0]})
    assert np.asarray(policy.arms)[policy.greedy_arms(only_age)].tolist() == ["weekly", "control"]


def test_exploration_gives_known_propensities(doc):
    policy = Policy.from_document(doc)
    data = simulate(20_000, seed=2).data
    probs = policy.action_probabilities(data)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert set(np.round(np.unique(probs), 10)) == {round(0.05 / 3, 10), round(0.95 + 0.05 / 3, 10)}
    arms, propensity = policy.decide(data, data["user_id"])
    index = {a: i for i, a in enumerate(policy.arms)}
    np.testing.assert_allclose(propensity, probs[np.arange(len(data)), [index[a] for a in arms]])
    greedy = np.asarray(policy.arms)[policy.greedy_arms(data)]
    assert 0.95 < (arms == greedy).mean() < 0.975  # 95% greedy + 1/3 of the 5% explored


def test_constant_and_uniform_baselines():
    arms = ["control", "daily", "weekly"]
    frame = pd.DataFrame({"x": range(5)})
    np.testing.assert_allclose(constant_policy(arms, "daily").action_probabilities(frame), np.tile([0, 1, 0], (5, 1)))
    np.testing.assert_allclose(uniform_policy(arms).action_probabilities(frame), np.full((5, 3), 1 / 3))


def _broken(doc, path, value):
    d = copy.deepcopy(doc)
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "message"), [
    (("format",), "pex.policy/0", "policy format is 'pex.policy/0'"),
    (("arms",), [], "arms must be a non-empty list"),
    (("arms",), ["control", "control"], "more than once"),
    (("default_arm",), "monthly", "default_arm 'monthly' is not among the arms"),
    (("exploration",), 1.5, "exploration must be a number from 0 to 1"),
    (("exploration",), "0.1", "exploration must be a number from 0 to 1"),
    (("kind",), "forest", "kind 'forest' is not one of"),
    (("kind",), "value", "is a value-model policy and needs its stored effect models"),
    (("tree", "op"), "<", "op '<' is not"),
    (("tree", "value"), "30", "'<=' needs a finite number"),
    (("tree", "left", "arm"), "monthly", "policy leaf tree.left must be"),
    (("tree", "missing"), "up", "missing must be 'left' or 'right'"),
    (("tree", "right", "right", "value"), "IN", "'in' needs a list of labels"),
    (("tree", "feature"), _DELETE, "is missing 'feature'"),
    (("name",), _DELETE, "missing 'name'"),
    (("colour",), "blue", "unknown policy key 'colour'"),
])
def test_bad_documents_are_rejected_with_a_clear_message(doc, path, value, message):
    with pytest.raises(PolicyError, match=message) as info:
        Policy.from_document(_broken(doc, path, value))
    assert info.value.hint


def test_invalid_json_is_a_policy_error():
    with pytest.raises(PolicyError, match="not valid JSON"):
        Policy.from_json("{\"format\": ")
