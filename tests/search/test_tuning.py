"""Offline weight search: vectorised scoring equals the value policy, fronts, hypervolume, Ax."""

from __future__ import annotations

import numpy as np
import pytest

from pex.experiment.guardrail import GuardrailRule
from pex.policy.value import build_value_policy, scores_from_effects
from pex.search.ax_adapter import ax_search, outcome_constraints
from pex.search.pareto import Front, hypervolume, pareto_indices, reference_point
from pex.search.tuning import TuningProblem, dense_sweep, optimize
from pex.services.policies import load_fit
from pex.store.workspace import Workspace


@pytest.fixture(scope="module")
def fit_ctx(pipeline_run):
    ws = Workspace(pipeline_run.out.parent / "ws", create=False)
    return load_fit(ws, "exp", pipeline_run.summary["hte"]["fit"])


@pytest.fixture(scope="module")
def problem(fit_ctx) -> TuningProblem:
    return TuningProblem.from_fit(fit_ctx)


def test_problem_shapes_and_roles(problem, fit_ctx):
    assert problem.metrics == ["sessions", "converted", "unsubscribes"]
    assert problem.objectives == ["sessions", "converted"]
    assert list(problem.rules) == ["unsubscribes"] and problem.rules["unsubscribes"].limit == 0.05
    assert problem.effects.shape == (len(fit_ctx.training), 3, 3) == problem.signal.shape
    control = problem.arms.index(problem.control)
    assert not problem.effects[:, control, :].any() and not problem.signal[:, control, :].any()


@pytest.mark.parametrize("draw", [[0.9, 0.2, 0.4, 1.0], [0.3, 0.5, 0.9, 0.35], [1.0, 0.0, 0.0, 0.1], [0.0, 0.0, 1.0, 1.0]])
def test_vectorised_choices_equal_the_value_policy_built_with_those_weights(problem, fit_ctx, draw):
    """A point of the search is exactly the value policy the pipeline builds from it (same arms, unit by unit)."""
    u = np.array([draw])
    weights, budget = problem.weight_dict(problem.weights(u)[0]), float(problem.budgets(u)[0])
    policy, info = build_value_policy(name="t", spec=fit_ctx.dataset.spec, model=fit_ctx.model, frame=fit_ctx.training_frame(),
                                      fit_id="f", weights=weights, guardrails="penalty", budget=budget, effects=fit_ctx.oof_effects())
    vm = policy.value_model
    expected = np.argmax(scores_from_effects(fit_ctx.oof_effects(), policy.arms, problem.control, vm["metrics"], vm["min_score"],
                                             problem.n), axis=1)
    chosen = problem.choices(u)[0]
    assert (chosen == expected).mean() > 0.9999
    out = problem.evaluate(u)
    assert out["treated_share"][0] == pytest.approx(info["treated_share"], abs=1e-4)
    assert out["treated_share"][0] <= budget + 1e-4


def test_values_are_means_of_pseudo_outcomes_of_the_chosen_arms(problem):
    u = np.array([[0.6, 0.3, 0.5, 0.8]])
    chosen = problem.choices(u)[0]
    lifts = problem.signal[np.arange(problem.n), chosen, :].mean(axis=0)
    out = problem.evaluate(u)
    assert out["objectives"][0] == pytest.approx([lifts[0], lifts[1]])  # sessions, converted: both "increase"
    base = problem.rules["unsubscribes"].scale
    assert out["harms"][0, 0] == pytest.approx(lifts[2] / base)  # unsubscribes should decrease: a rise is harm
    assert out["feasible"][0] == (lifts[2] / base <= 0.05)


def test_zero_weights_treat_nobody(problem):
    out = problem.evaluate(np.zeros((1, problem.dimension)))
    assert out["treated_share"][0] == 0 and not out["objectives"].any() and out["feasible"][0]


def test_ax_outcome_constraints_are_the_rules_limits():
    rules = {"harm0": GuardrailRule("complaints", "decrease", 0.05, control_mean=0.0),  # absolute: limit 0
             "harm1": GuardrailRule("sessions", "increase", 0.1, control_mean=2.0)}
    assert outcome_constraints(rules, ["objective0"]) == ["harm0 <= 0.0", "harm1 <= 0.1"]
    # with several objectives, each at least all-control's lift of 0 (Ax's objective thresholds)
    assert outcome_constraints(rules, ["objective0", "objective1"])[2:] == ["objective0 >= 0.0", "objective1 >= 0.0"]


def test_pareto_indices_on_known_points():
    Y = np.array([[1.0, 5.0], [2.0, 4.0], [1.5, 3.0], [3.0, 1.0], [3.0, 1.0], [4.0, 0.5], [0.5, 6.0]])
    feasible = np.array([True, True, True, True, True, True, False])
    front = sorted(pareto_indices(Y, feasible).tolist())
    assert front == [0, 1, 3, 5]  # 2 is dominated by 1; 4 duplicates 3; 6 is infeasible
    assert pareto_indices(Y, np.zeros(len(Y), dtype=bool)).size == 0


def test_hypervolume_on_known_fronts():
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([0.0, 0.0])) == pytest.approx(3.0)
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([0.5, 0.5])) == pytest.approx(0.75 + 0.75 - 0.25)
    assert hypervolume(np.array([[3.0]]), np.array([1.0])) == pytest.approx(2.0)
    assert hypervolume(np.array([[-1.0, 2.0]]), np.array([0.0, 0.0])) == 0.0
    assert hypervolume(np.zeros((0, 2)), np.array([0.0, 0.0])) == 0.0
    three = np.array([[1.0, 1.0, 1.0]])
    assert hypervolume(three, np.zeros(3)) == pytest.approx(1.0)


def test_caps_are_valued_exactly_like_single_points(problem):
    """Valuing a weight vector at many caps with one sort gives what scoring each (weights, cap) point alone gives."""
    draws, out = problem.evaluate_caps(np.array([[0.6, 0.3, 0.5, 0.0], [0.2, 0.7, 0.9, 0.0]]), levels=8)
    assert draws.shape == (2 * (8 + len(problem.objectives)), problem.dimension)
    alone = problem.evaluate(draws)
    np.testing.assert_allclose(out["objectives"], alone["objectives"], atol=1e-3 * np.abs(alone["objectives"]).max())
    np.testing.assert_allclose(out["treated_share"], alone["treated_share"], atol=2 / problem.n)
    # the extra points are the best feasible cap per goal metric: no grid cap of that vector beats them
    for v in range(2):
        rows = slice(v * 10, v * 10 + 10)
        ok = out["feasible"][rows]
        for j in range(len(problem.objectives)):
            best = out["objectives"][rows][8 + j, j]
            assert best >= out["objectives"][rows][ok, j].max() - 1e-12


def test_dense_sweep_is_reproducible_and_its_front_is_feasible(problem):
    a, b = dense_sweep(problem, points=256, seed=5), dense_sweep(problem, points=256, seed=5)
    assert a.draws.shape == (256 * (32 + len(problem.objectives)), problem.dimension)
    np.testing.assert_array_equal(a.objectives, b.objectives)
    assert a.feasible[a.pareto].all()
    assert (a.harms[a.pareto, 0] <= 0.05).all()
    # the trade-off is real: treating more units raises the guardrail harm, so some draws are infeasible
    assert 0 < a.feasible.sum() < len(a.draws)


def test_ax_search_reports_what_the_problem_computes(problem):
    front = ax_search(problem, trials=6, batch=3, seed=1)
    assert front.draws.shape == (6, problem.dimension)
    assert ((front.draws >= 0) & (front.draws <= 1)).all()
    again = problem.evaluate(front.draws)
    np.testing.assert_allclose(front.objectives, again["objectives"])
    np.testing.assert_allclose(front.harms, again["harms"])


def test_kept_front_dominates_both_and_candidates_come_from_it(problem):
    result = optimize(problem, trials=0, dense=256, candidates=3, seed=2, use_ax=False)
    other = dense_sweep(problem, points=128, seed=9)
    kept = Front.merge("kept", [result.fronts["dense"], other])
    ref = reference_point([result.fronts["dense"], other, kept])
    assert hypervolume(kept.front, ref) >= max(hypervolume(result.fronts["dense"].front, ref), hypervolume(other.front, ref)) - 1e-12
    assert 1 <= len(result.candidates) <= 3
    assert set(result.candidates) <= set(result.fronts["kept"].pareto.tolist())
    doc = result.to_dict()
    assert set(doc["fronts"]) == {"dense", "kept"}
    assert doc["fronts"]["kept"]["hypervolume"] >= doc["fronts"]["dense"]["hypervolume"] - 1e-12
