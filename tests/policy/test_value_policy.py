"""Value-model policies and distilled trees against the known truth of a simulated experiment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pex.errors import DataError
from pex.experiment.data import validate
from pex.experiment.simulate import simulate
from pex.experiment.spec import spec_from_dict
from pex.hte.learners import fit_effects
from pex.hte.model import EffectModel
from pex.policy.base import Policy, PolicyError
from pex.policy.distill import _fit_tree, distill
from pex.policy.tree import TreePolicy
from pex.policy.value import build_value_policy, greedy_budget, objective, scores_from_effects, served_share

N_BUILD = 50_000


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A 50k-unit experiment fitted with a 25% holdout, plus fresh units with known truth."""
    sim = simulate(N_BUILD, scenario="notification_cadence", seed=2027)
    d = tmp_path_factory.mktemp("vp")
    spec_path = sim.write(d, name="vp")
    from pex.experiment.spec import load_spec

    dataset = validate(sim.data, load_spec(spec_path))
    fit = fit_effects(dataset, holdout=0.25, seed=0)
    frame = dataset.frame.set_index(dataset.spec.unit).loc[fit.units].reset_index()
    train = fit.training_frame()
    oof = {(m, a): train[f"oof__{m}__{a}"].to_numpy(float) for m in fit.metrics for a in fit.model.treated_arms}
    fresh = simulate(40_000, scenario="notification_cadence", seed=77)
    return {"dataset": dataset, "fit": fit, "frame": frame, "train": train, "oof": oof, "fresh": fresh}


def _true_scores(truth, arms, coefficients) -> np.ndarray:
    scores = np.zeros((len(truth.expected["sessions"]["control"]), len(arms)))
    for j, arm in enumerate(arms):
        if arm != truth.control:
            scores[:, j] = sum(c * truth.cate(m, arm) for m, c in coefficients.items())
    return scores


def _value(scores: np.ndarray, chosen: np.ndarray) -> float:
    return float(scores[np.arange(len(chosen)), chosen].mean())


def test_value_policy_reaches_90_percent_of_the_oracle(built):
    """Same objective (weights, scales, guardrail as a penalty): estimated effects vs the true ones."""
    fit, fresh = built["fit"], built["fresh"]
    policy, _info = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"],
                                       fit_id="test", guardrails="penalty", effects=built["oof"])
    coefficients = {m: meta["coefficient"] for m, meta in policy.value_model["metrics"].items()}
    assert coefficients["unsubscribes"] < 0 < coefficients["sessions"]  # a harm costs, a gain counts
    truth_scores = _true_scores(fresh.truth, policy.arms, coefficients)
    oracle = truth_scores.max(axis=1).mean()  # all-control scores 0
    achieved = _value(truth_scores, policy.greedy_arms(fresh.data))
    assert oracle > 0.05
    assert achieved >= 0.9 * oracle, (achieved, oracle)


def test_guardrail_constraint_holds_on_the_units_it_was_calibrated_on(built):
    fit = built["fit"]
    spec = built["dataset"].spec
    policy, info = build_value_policy(name="vp-value", spec=spec, model=fit.model, frame=built["frame"], fit_id="test",
                                      effects=built["oof"])
    rail = policy.value_model["guardrails"]["unsubscribes"]
    assert rail["mode"] == "constraint" and rail["max_harm"] == 0.05
    # daily doubles unsubscribes for long-tenure users: the constraint must bind
    assert rail["penalty"] > 0
    assert info["predicted_guardrail_harm"]["unsubscribes"] <= 0.05 + 1e-9
    assert info["predicted_guardrail_harm"]["unsubscribes"] >= 0.045  # the smallest penalty: at the limit, not far below
    loose = spec_from_dict({**spec.to_dict(), "metrics": {**spec.to_dict()["metrics"],
                                                          "unsubscribes": {**spec.to_dict()["metrics"]["unsubscribes"], "max_harm": 10.0}}})
    policy2, _ = build_value_policy(name="vp-value", spec=loose, model=fit.model, frame=built["frame"], fit_id="test", effects=built["oof"])
    assert policy2.value_model["guardrails"]["unsubscribes"]["penalty"] == 0.0


def test_budget_limits_the_treated_share(built):
    fit = built["fit"]
    policy, info = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"],
                                      fit_id="test", budget=0.3, effects=built["oof"])
    assert info["treated_share"] <= 0.3 + 1e-3
    assert info["treated_share"] >= 0.28
    assert policy.value_model["min_score"] > 0
    fresh_share = 1 - (policy.greedy_arms(built["fresh"].data) == policy.arms.index("control")).mean()
    assert 0.2 <= fresh_share <= 0.4


@pytest.mark.parametrize("budget, exploration, arms", [(0.3, 0.05, 3), (0.5, 0.1, 2), (0.9, 0.2, 4)])
def test_the_greedy_budget_is_what_exploration_leaves_of_the_served_budget(budget, exploration, arms):
    greedy = greedy_budget(budget, exploration, arms)
    assert float(served_share(greedy, exploration, arms)) == pytest.approx(budget)


def test_the_greedy_budget_stays_a_share():
    assert greedy_budget(0.01, 0.3, 3) == 0.0  # exploration alone treats more than the budget
    assert greedy_budget(1.0, 0.05, 3) == 1.0
    assert greedy_budget(0.5, 1.0, 3) == 0.0  # all exploration: nothing left to the greedy part


def test_budget_counts_the_served_mixture_with_exploration(built):
    """The served policy is (1 - e) greedy + e uniform: a 30% budget with 5% exploration over 3 arms leaves the
    greedy part (0.30 - 0.05 * 2/3) / 0.95 = 28.1%, so what is served treats at most 30%."""
    fit = built["fit"]
    policy, info = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"],
                                      fit_id="test", budget=0.3, exploration=0.05, effects=built["oof"])
    assert info["greedy_treated_share"] == pytest.approx((0.3 - 0.05 * 2 / 3) / 0.95, abs=2e-3)
    served = policy.action_probabilities(built["frame"])[:, policy.arms.index("control")]
    assert 1 - served.mean() <= 0.3 + 1e-3
    assert info["treated_share"] == pytest.approx(0.3, abs=2e-3)  # on the out-of-fold effects it was calibrated on


def test_certifiable_calibration_keeps_every_guardrail_on_its_bound(built):
    """With the pseudo-outcome signal, the policy's harm bound for a held-out test of the given size is within the
    limit (not its point estimate sitting at the limit), and the true harm on fresh units stays within it."""
    fit = built["fit"]
    train = built["train"]
    pseudo = {(m, a): train[f"pseudo__{m}__{a}"].to_numpy(float) for m in fit.metrics for a in fit.model.treated_arms}
    policy, info = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"],
                                      fit_id="test", exploration=0.05, effects=built["oof"], harm_signal=pseudo,
                                      n_eval=12_500)
    bound = info["certifiable_bound"]["unsubscribes"]
    assert bound <= 0.05
    assert info["estimated_guardrail_harm"]["unsubscribes"] < bound
    from pex.experiment.truth import policy_truth

    assert policy_truth(policy, built["fresh"])["harm"]["unsubscribes"] <= 0.05


@pytest.mark.parametrize(("weights", "match"), [
    ({"nope": 1.0}, "unknown metric 'nope'"),
    ({"sessions": 0.0, "converted": 0.0}, "every metric weight is 0"),
    ({"sessions": -1.0}, "finite number >= 0"),
])
def test_bad_weights(built, weights, match):
    with pytest.raises(PolicyError, match=match):
        objective(built["dataset"].spec, built["frame"], weights)


@pytest.mark.slow  # 8-12 s; the document round trip is tested on small data in tests/policy and by the serving tests
def test_value_document_round_trip_agrees_on_20k_rows(built):
    """In-memory policy vs its JSON document with the model rebuilt from its stored files (every booster predicts
    each row three times here, so 20k fresh rows, not 100k: most of the suite's time for no further check)."""
    fit = built["fit"]
    policy, _ = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"],
                                   fit_id="fit-1", exploration=0.05, effects=built["oof"])
    files = fit.model.to_files()
    text = json.dumps(policy.to_document())
    assert "fit-1" in text and "pickle" not in text
    loaded = Policy.from_json(text, lambda vm: EffectModel.from_files(lambda rel: files[rel]) if vm["fit"] == "fit-1" else None)
    rows = simulate(20_000, scenario="notification_cadence", seed=5).data
    greedy = policy.greedy_arms(rows)
    assert np.array_equal(greedy, loaded.greedy_arms(rows))
    assert len(np.unique(greedy)) == 3  # a real personalised policy, not one arm for all
    small = rows.head(2000)
    assert np.allclose(policy.action_probabilities(small), loaded.action_probabilities(small))
    # missing feature columns follow the models' missing-value branches, never an exception
    assert len(loaded.greedy_arms(rows.drop(columns=["age", "platform"]))) == len(rows)
    with pytest.raises(PolicyError, match="needs its stored effect models"):
        Policy.from_json(text)


def test_value_document_refuses_a_model_with_other_arms(built):
    fit = built["fit"]
    policy, _ = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"], fit_id="f")
    doc = policy.to_document()
    doc["arms"] = ["control", "daily", "monthly"]
    with pytest.raises(PolicyError, match="arms"):
        Policy.from_document(doc, lambda vm: fit.model)


def _honest_and_scores(built, policy):
    vm = policy.value_model
    scores = scores_from_effects(built["oof"], policy.arms, "control", vm["metrics"], vm["min_score"], len(built["frame"]))
    honest = np.zeros_like(scores)
    for j, arm in enumerate(policy.arms):
        if arm != "control":
            honest[:, j] = sum(meta["coefficient"] * built["train"][f"pseudo__{m}__{arm}"].to_numpy(float)
                               for m, meta in vm["metrics"].items())
    return scores, honest


def test_chosen_tree_keeps_90_percent_of_the_value_policy_lift(built):
    fit, fresh = built["fit"], built["fresh"]
    policy, _ = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"],
                                   fit_id="f", guardrails="penalty", effects=built["oof"])
    scores, honest = _honest_and_scores(built, policy)
    result = distill(frame=built["frame"], encoder=fit.model.encoder, scores=scores, honest_value=honest, arms=policy.arms,
                     control="control", name_prefix="vp")
    assert sorted(result.trees) == [1, 2, 3, 4]
    assert [c["depth"] for c in result.curve] == [1, 2, 3, 4]
    assert all(0.0 <= c["agreement"] <= 1.0 for c in result.curve)
    coefficients = {m: meta["coefficient"] for m, meta in policy.value_model["metrics"].items()}
    truth_scores = _true_scores(fresh.truth, policy.arms, coefficients)
    value_lift = _value(truth_scores, policy.greedy_arms(fresh.data))
    tree_lift = _value(truth_scores, result.chosen.greedy_arms(fresh.data))
    assert tree_lift >= 0.9 * value_lift, (tree_lift, value_lift, result.chosen_depth)
    # every tree is a plain, self-contained document
    for tree in result.trees.values():
        doc = json.loads(tree.to_json())
        assert doc["kind"] == "tree" and "value_model" not in doc
        assert Policy.from_document(doc).greedy_arms(fresh.data[:10]).shape == (10,)


def test_tree_document_matches_the_fitted_sklearn_tree_on_100k_rows(built):
    """The translation (numeric and category splits, missing values, unseen labels) is exact."""
    fit = built["fit"]
    enc = fit.model.encoder
    policy, _ = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"],
                                   fit_id="f", effects=built["oof"])
    scores, _ = _honest_and_scores(built, policy)
    X = enc.transform(built["frame"], strict=False)
    from pex.policy.distill import _to_node

    for depth in (2, 4):
        tree = _fit_tree(X, scores, depth, 0.02, seed=0)
        leaf_of = tree.apply(X)
        leaf_arm = {int(leaf): int(np.argmax(scores[leaf_of == leaf].sum(axis=0))) for leaf in np.unique(leaf_of)}
        doc_tree = _to_node(tree, leaf_arm, enc, policy.arms)
        rows = simulate(100_000, scenario="notification_cadence", seed=8, missing_rate=0.2).data
        rows.loc[rows.index[:500], "country"] = "ZZ"  # never seen in training
        expected = np.array([leaf_arm[leaf] for leaf in tree.apply(enc.transform(rows, strict=False))])
        doc = TreePolicy(name="t", arms=policy.arms, default_arm="control", tree=doc_tree)
        assert np.array_equal(doc.greedy_arms(rows), expected)


def test_distill_rejects_bad_depths(built):
    with pytest.raises(PolicyError, match="depths must be from 1 to 4"):
        distill(frame=built["frame"][:100], encoder=built["fit"].model.encoder, scores=np.zeros((100, 3)),
                honest_value=np.zeros((100, 3)), arms=["control", "daily", "weekly"], control="control", name_prefix="x",
                depths=(5,))


def test_batch_input_checks(built):
    fit = built["fit"]
    policy, _ = build_value_policy(name="vp-value", spec=built["dataset"].spec, model=fit.model, frame=built["frame"], fit_id="f")
    rows = built["fresh"].data.head(50)
    policy.check_frame(rows)
    with pytest.raises(DataError, match="'tenure_days' is missing"):
        policy.check_frame(rows.drop(columns=["tenure_days"]))
    bad = rows.astype({"age": object})
    bad.loc[bad.index[0], "age"] = "old"
    with pytest.raises(DataError, match="'age' must be numeric"):
        policy.check_frame(bad)


def test_unbiased_harm_signal_keeps_the_true_guardrail_harm_down(built):
    """Calibrating on predicted harm alone lets through units whose harm is underestimated
    (selection on noisy predictions); measuring it with the out-of-fold DR pseudo-outcomes does not."""
    fit, fresh, train = built["fit"], built["fresh"], built["train"]
    pseudo = {(m, a): train[f"pseudo__{m}__{a}"].to_numpy(float) for m in fit.metrics for a in fit.model.treated_arms}
    base = fresh.truth.expected["unsubscribes"]["control"].mean()

    def true_harm(policy) -> float:
        chosen = policy.greedy_arms(fresh.data)
        return sum((fresh.truth.cate("unsubscribes", a) * (chosen == j)).sum()
                   for j, a in enumerate(policy.arms) if a != "control") / len(chosen) / base

    kwargs = {"name": "vp-value", "spec": built["dataset"].spec, "model": fit.model, "frame": built["frame"], "fit_id": "f",
              "effects": built["oof"]}
    predicted_only, _ = build_value_policy(**kwargs)
    measured, info = build_value_policy(**kwargs, harm_signal=pseudo)
    assert info["estimated_guardrail_harm"]["unsubscribes"] <= 0.05 + 1e-9
    assert info["estimated_guardrail_harm_se"]["unsubscribes"] > 0
    assert measured.value_model["guardrails"]["unsubscribes"]["met"] is True
    assert measured.value_model["min_score"] >= predicted_only.value_model["min_score"]
    # every arm truly raises unsubscribes in this scenario, so only fewer treated units can meet the limit
    assert true_harm(predicted_only) > 0.1  # 4x the limit: the optimism this guards against
    assert true_harm(measured) < 0.6 * true_harm(predicted_only)


def test_guardrail_with_a_zero_control_mean_tolerates_no_absolute_harm(built):
    """Relative harm is undefined when the control mean is 0: as in pex.experiment.effects, the absolute change must not be harmful."""
    frame = built["frame"].copy()
    frame.loc[frame["arm"] == "control", "unsubscribes"] = 0.0
    metrics, rails = objective(built["dataset"].spec, frame)
    assert rails["unsubscribes"]["basis"] == "absolute" and rails["unsubscribes"]["limit"] == 0.0
    assert rails["unsubscribes"]["max_harm"] == built["dataset"].spec.metrics["unsubscribes"].max_harm  # the spec's, as written
    assert metrics["unsubscribes"]["scale"] > 0  # the spread over all arms, not a raw unit
