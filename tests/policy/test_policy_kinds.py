"""Policy kinds as registered, immutable classes; reproducible draws; the one value-policy decision rule."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pex.experiment.simulate import simulate
from pex.experiment.split import evaluation_mask, keyed_uniform
from pex.policy.base import Policy, PolicyError, kind_class
from pex.policy.constant import ConstantPolicy, constant_policy, uniform_policy
from pex.policy.tree import TreePolicy
from pex.policy.value import (
    ValuePolicy,
    arm_scores,
    best_treated,
    budget_bar,
    choose_arms,
    linear_quantile,
    scores_from_effects,
)
from pex.search.tuning import TuningProblem

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "notification_cadence-tree-example.json"


@pytest.fixture(scope="module")
def doc():
    return json.loads(EXAMPLE.read_text())


@pytest.fixture(scope="module")
def data():
    return simulate(20_000, seed=3).data


def _value_doc(min_score: float | None = 0.1) -> dict:
    vm = {"fit": "f", "metrics": {"m": {"coefficient": 1.0}}, "budget": None}
    if min_score is not None:
        vm["min_score"] = min_score
    return {"format": "pex.policy/1", "name": "v", "version": 2, "experiment": "e", "kind": "value",
            "arms": ["control", "treat"], "default_arm": "control", "exploration": 0.1, "value_model": vm,
            "trained_at": "", "lineage": {}}


# -- the registry -----------------------------------------------------------------------------------------------

def test_each_kind_is_its_own_registered_class(doc):
    assert kind_class("constant") is ConstantPolicy and kind_class("tree") is TreePolicy and kind_class("value") is ValuePolicy
    assert isinstance(Policy.from_document(doc), TreePolicy)
    common = {"format": "pex.policy/1", "name": "c", "arms": ["a", "b"], "default_arm": "b"}
    assert isinstance(Policy.from_document(common), ConstantPolicy)  # a document without a kind is a constant policy
    with pytest.raises(PolicyError, match="Policy is the base of the policy kinds"):
        Policy(name="p", arms=["a"], default_arm="a")
    assert Policy.from_document(_value_doc(), lambda vm: None).kind == "value"
    assert [p.kind for p in (constant_policy(["a", "b"], "a"), uniform_policy(["a", "b"]))] == ["constant", "constant"]


def test_documents_serialise_as_before(doc):
    text = EXAMPLE.read_text()
    policy = Policy.from_json(text)
    # the document's own key order is the serialisation's, so re-indenting the file is what to_json gives
    assert policy.to_json() == json.dumps(json.loads(text), indent=2)
    assert Policy.from_json(policy.to_json()).to_json() == policy.to_json()
    value = Policy.from_document(_value_doc(), lambda vm: None)
    assert value.to_document() == _value_doc()


def test_kinds_own_their_description():
    tree = Policy.from_document(json.loads(EXAMPLE.read_text()))
    assert (tree.complexity, tree.description) == (3, "a decision tree of depth 3")
    assert tree.single_arm is None and set(tree.summary_fields()) == {"tree"}
    assert (constant_policy(["a", "b"], "b").complexity, constant_policy(["a", "b"], "b").single_arm) == (0, "b")
    assert constant_policy(["a", "b"], "b").summary_fields() == {"arm": "b"}
    assert uniform_policy(["a", "b"]).summary_fields() == {"arm": None}
    value = Policy.from_document(_value_doc(), lambda vm: None)
    assert (value.complexity, value.description, value.single_arm, value.summary_fields()) == (10, "a value-model policy", None, {})


@pytest.mark.parametrize(("kind", "key", "value", "message"), [
    ("constant", "tree", {"arm": "a"}, "a constant policy has no 'tree'"),
    ("tree", "value_model", {"fit": "f"}, "a tree policy has no 'value_model'"),
])
def test_a_document_mixing_kinds_is_rejected(kind, key, value, message):
    extra = {"tree": {"arm": "a"}} if kind == "tree" else {}
    doc = {"format": "pex.policy/1", "name": "x", "arms": ["a"], "default_arm": "a", "kind": kind, **extra}
    with pytest.raises(PolicyError, match=message) as info:
        Policy.from_document({**doc, key: value})
    assert info.value.hint
    assert Policy.from_document({**doc, key: None}).kind == kind  # a null key of another kind is absent


# -- immutability ------------------------------------------------------------------------------------------------

def test_policies_are_frozen_and_changes_return_new_values(doc):
    policy = Policy.from_document(doc)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.version = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.kind = "constant"
    newer = policy.replace(version=7, exploration=0.2)
    assert (newer.version, newer.exploration, policy.version, policy.exploration) == (7, 0.2, 1, 0.05)
    assert isinstance(newer, TreePolicy) and newer.tree == policy.tree
    with pytest.raises(PolicyError, match="exploration must be"):
        policy.replace(exploration=2.0)
    # the document handed out is a copy
    out = policy.to_document()
    out["lineage"]["x"] = 1
    out["tree"]["value"] = -1
    assert "x" not in policy.lineage and policy.to_document() == Policy.from_document(doc).to_document()


def test_loading_does_not_mutate_the_document_and_keeps_the_model():
    raw = _value_doc(min_score=None)
    before = json.dumps(raw)
    model = SimpleNamespace(arms=["control", "treat"], control="control", metrics=["m"])
    policy = Policy.from_document(raw, lambda vm: None)
    assert json.dumps(raw) == before  # the min_score default is in the policy, not written into the caller's dict
    assert policy.value_model["min_score"] == 0.0 and list(policy.to_document()["value_model"])[-1] == "min_score"
    bound = ValuePolicy(name="v", arms=["control", "treat"], default_arm="control",
                        value_model=_value_doc()["value_model"])
    assert bound.model is None
    held = dataclasses.replace(bound, model=model).replace(name="w")
    assert held.model is model and held.name == "w"


# -- reproducible draws -----------------------------------------------------------------------------------------

def test_draws_are_deterministic_and_follow_the_action_probabilities(doc, data):
    policy = Policy.from_document(doc).replace(exploration=0.4)
    units = data["user_id"] if "user_id" in data.columns else pd.Series(np.arange(len(data)))
    arms, propensity = policy.decide(data, units)
    again = policy.decide(data, units)
    assert (arms == again[0]).all() and (propensity == again[1]).all()
    probs = policy.action_probabilities(data)
    index = {a: i for i, a in enumerate(policy.arms)}
    chosen = np.array([index[a] for a in arms])
    np.testing.assert_allclose(propensity, probs[np.arange(len(data)), chosen])
    n = len(data)
    for j, arm in enumerate(policy.arms):  # empirical shares against the mean probabilities: within 4 standard errors
        expected = probs[:, j].mean()
        assert abs((chosen == j).mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n), arm
    greedy = policy.greedy_arms(data)
    for g in np.unique(greedy):  # exploration is independent of what the unit would get
        rows = greedy == g
        explored = (chosen[rows] != g).mean()
        expected = 0.4 * 2 / 3
        assert abs(explored - expected) < 4 * np.sqrt(expected * (1 - expected) / rows.sum())


def test_draws_depend_on_unit_version_and_salt_only(doc, data):
    policy = Policy.from_document(doc).replace(exploration=0.5)
    frame = data.iloc[:2000]
    units = pd.Series([f"u{i}" for i in range(len(frame))])
    arms, _ = policy.decide(frame, units)
    # a unit's decision does not depend on the other rows or their order
    order = np.random.default_rng(0).permutation(len(frame))
    shuffled, _ = policy.decide(frame.iloc[order], units.iloc[order])
    assert (shuffled == arms[order]).all()
    assert (policy.decide(frame.iloc[:10], units.iloc[:10])[0] == arms[:10]).all()
    for other in (policy.replace(version=2), policy.replace(name="other")):
        assert (other.decide(frame, units)[0] != arms).mean() > 0.2
    salted, _ = policy.decide(frame, units, salt=7)
    assert (salted != arms).mean() > 0.2 and (policy.decide(frame, units, salt=7)[0] == salted).all()
    greedy = np.asarray(policy.arms, dtype=object)[policy.greedy_arms(frame)]
    assert (policy.replace(exploration=0.0).decide(frame, units)[0] == greedy).all()
    with pytest.raises(Exception, match="unit ids for"):
        policy.decide(frame, units[:5])


def test_draws_are_the_same_in_a_fresh_process(doc):
    frame = pd.DataFrame({"tenure_days": [5.0, 40.0, None, 400.0] * 50, "age": [20.0, 50.0, 33.0, None] * 50,
                          "country": ["US", "IN", None, "BR"] * 50})
    units = [f"user-{i}" for i in range(len(frame))]
    policy = Policy.from_document(doc).replace(exploration=0.5)
    arms, propensity = policy.decide(frame, units, salt="s")
    script = (
        "import json, sys, pandas as pd\n"
        "from pex.policy.base import Policy\n"
        "frame = pd.DataFrame(json.loads(sys.argv[1]))\n"
        "policy = Policy.from_json(sys.argv[2]).replace(exploration=0.5)\n"
        "arms, p = policy.decide(frame, json.loads(sys.argv[3]), salt='s')\n"
        "print(json.dumps([list(arms), [float(x) for x in p]]))\n")
    out = subprocess.run([sys.executable, "-c", script, frame.to_json(orient="columns"), EXAMPLE.read_text(), json.dumps(units)],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random", "PATH": "/usr/bin:/bin"})
    got_arms, got_p = json.loads(out.stdout)
    assert got_arms == list(arms) and got_p == [float(x) for x in propensity]


def test_the_keyed_uniform_is_uniform_and_the_split_is_unchanged():
    u = keyed_uniform(np.arange(100_000), "pex-decide-key-1")
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10_000) < 4 * np.sqrt(10_000 * 0.9))
    # the held-out split is the same rule as before the hash became shared
    units = np.array([f"u{i}" for i in range(5000)], dtype=object)
    expected = pd.util.hash_array(units, hash_key="pex-split-000003") < np.uint64(0.25 * 2.0**64)
    assert (evaluation_mask(units, 0.25, seed=3) == expected).all()


# -- one decision rule ------------------------------------------------------------------------------------------

def test_the_partial_sort_quantile_is_numpys():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 997, 5000):
        values = rng.normal(size=n)
        for q in (0.0, 0.1, 0.25, 1 / 3, 0.5, 0.6, 0.7, 0.9, 0.999, 1.0, *rng.uniform(size=20)):
            assert linear_quantile(values, q) == float(np.quantile(values, q)), (n, q)


@pytest.mark.parametrize("draw", [[0.9, 0.2, 0.4], [0.3, 0.5, 1.0], [1.0, 0.0, 0.05], [0.2, 0.8, 0.0]])
def test_the_weight_search_and_the_value_policy_choose_the_same_arms(draw):
    rng = np.random.default_rng(5)
    n, arms, metrics = 4000, ["treat", "control", "other"], ["m1", "m2"]
    effects = rng.normal(size=(n, 3, 2))
    effects[:, 1, :] = 0.0
    goal_sign, scale = np.array([1.0, -1.0]), np.array([2.0, 0.5])
    problem = TuningProblem(experiment="x", arms=arms, control="control", metrics=metrics, objectives=metrics,
                            goal_sign=goal_sign, scale=scale, effects=effects, signal=effects, budget=1.0)
    u = np.array([draw])
    coef = problem.weights(u)[0] * goal_sign / scale
    by_metric = {(m, a): effects[:, j, k] for j, a in enumerate(arms) if a != "control" for k, m in enumerate(metrics)}
    meta = {m: {"coefficient": float(c)} for m, c in zip(metrics, coef)}
    cap = float(problem.budgets(u)[0])
    best = best_treated(arm_scores(by_metric, arms, "control", meta, n))
    bar = float(budget_bar(best, cap)[0])
    # the rule as build_value_policy wrote it before it was shared
    old = max(0.0, float(np.quantile(best, 1 - cap)) if cap > 0 else float(best.max())) if (best > 0).mean() > cap else 0.0
    assert bar == old
    policy = ValuePolicy(name="v", arms=arms, default_arm="control", value_model={"fit": "f", "metrics": meta, "min_score": bar})
    chosen = policy.greedy_arms(pd.DataFrame(index=range(n)), effects=by_metric)
    assert (chosen == problem.choices(u)[0]).all()
    assert (chosen == np.argmax(scores_from_effects(by_metric, arms, "control", meta, bar, n), axis=1)).all()
    assert (chosen != 1).mean() <= cap + 1.0 / n


def test_choose_arms_breaks_ties_to_the_first_arm():
    scores = [np.array([1.0, 2.0, 0.0]), None, np.array([1.0, 3.0, 0.0])]
    assert choose_arms(scores, 1, 0.0).tolist() == [0, 2, 0]
    assert choose_arms(scores, 1, np.array([[5.0], [0.5]])).tolist() == [[1, 1, 1], [0, 2, 1]]
