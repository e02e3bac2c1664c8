"""The offline weight search as a use case (``pex optimize``), and the Pareto candidates ``pex run`` builds per fold.

:mod:`pex.search.tuning` searches the value model's metric weights and treated-share caps on a fit's training
units; its Pareto candidates become value policies (with the first one's distilled tree), valued off-policy on
the fit's held-out units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pex.evaluation.comparison import compare
from pex.policy.base import Policy
from pex.services.policies import FitContext, distill_value_policy, load_fit, objective_coefficients
from pex.store.workspace import Workspace

if TYPE_CHECKING:  # the search (and Ax behind it) is imported only when a search runs
    from pex.search.tuning import TuningResult
    from pex.services.run import RunOptions

Say = Callable[[str], None]


def optimize(ws: Workspace, experiment: str, options: RunOptions, fit_id: str | None = None,
             say: Say | None = None) -> tuple[str, TuningResult, list[dict[str, Any]]]:
    """The weight search on a stored fit (default: the newest), its Pareto candidates stored as evaluated value
    policies (``pex optimize``); returns the fit's id, the search and the candidates' comparison rows."""
    ctx = load_fit(ws, experiment, fit_id)
    result, _policies, rows = optimize_policies(ws, ctx, options, say=say)
    return ctx.record.id, result, rows


def optimize_policies(ws: Workspace, ctx: FitContext, options: RunOptions,
                      say: Say | None = None) -> tuple[TuningResult, list[Policy], list[dict[str, Any]]]:
    """Search value-model weights on ``ctx`` and store the Pareto candidates as evaluated value policies.

    Returns the :class:`pex.search.tuning.TuningResult`, the candidate policies and their comparison rows.
    """
    say = say or (lambda message: None)
    spec = ctx.dataset.spec
    result, policies = pareto_policies(ctx, options, say)
    rows: list[dict] = []
    if policies:
        data = ctx.evaluation()
        say(f"evaluating {len(policies)} Pareto candidates on {data.n:,} held-out units")
        coefficients = objective_coefficients(spec, ctx.training_frame(), options.build.weights, options.build.guardrails)
        rows = compare(policies, data, coefficients, spec)
        for policy, row in zip(policies, rows):
            row["evaluation_rows"] = data.description
            row["tuning"] = policy.lineage["tuning"]
            row["screen"] = ctx.screen(policy)
        records = ws.put_policies(spec.name, [(p.to_document(), r) for p, r in zip(policies, rows)], fit_id=ctx.record.id)
        policies = [policy.replace(version=record.version) for policy, record in zip(policies, records)]
    return result, policies, rows


def pareto_policies(ctx: FitContext, options: RunOptions, say: Say) -> tuple[TuningResult, list[Policy]]:
    """The weight search on ``ctx``'s training units and its Pareto candidates as value policies, with the first
    one's distilled tree (nothing valued or stored)."""
    from pex.policy.value import build_value_policy
    from pex.search.tuning import TuningProblem
    from pex.search.tuning import optimize as search

    spec, model = ctx.dataset.spec, ctx.model
    experiment = spec.name
    problem = TuningProblem.from_fit(ctx, budget=options.build.budget, exploration=options.build.exploration)
    say(f"searching metric weights on {problem.n:,} training units: a dense sweep ({options.dense:,} weight vectors)"
        + (f" refined by Ax ({options.trials} trials, at most {options.ax_seconds:g} s)" if options.use_ax else ""))
    result = search(problem, trials=options.trials, batch=options.batch, dense=options.dense, candidates=options.candidates,
                    seed=options.seed, use_ax=options.use_ax, say=say, ax_seconds=options.ax_seconds)
    train = ctx.training_frame()
    oof, pseudo = ctx.oof_effects(), ctx.pseudo_outcomes()
    policies = []
    for setting in result.candidate_settings():
        if setting["treated_share"] <= 0:  # all-control is already a baseline
            continue
        lineage = {"dataset": ctx.record.dataset_id, "fit_run": ctx.record.id,
                   "objective": {"weights": dict(options.build.weights), "guardrails": options.build.guardrails},
                   "tuning": {"weights": setting["weights"], "budget": setting["budget"], "training_objectives": setting["objectives"],
                              "training_guardrail_harm": setting["guardrail_harm"],
                              "training_guardrail_bound": setting["guardrail_bound"], "in_sample": True}}
        policy, _info = build_value_policy(
            name=f"{experiment}-pareto-{len(policies) + 1}", spec=spec, model=model, frame=train, fit_id=ctx.record.id,
            weights=setting["weights"], guardrails="penalty", budget=setting["budget"], exploration=options.build.exploration,
            lineage=lineage, effects=oof, harm_signal=pseudo, n_eval=ctx.n_eval())
        policies.append(policy)
    if policies:  # the recommended Pareto policy may be a value model: its readable, model-free version competes too
        owner = objective_coefficients(spec, train, options.build.weights, options.build.guardrails)
        first = policies[0]
        distilled = distill_value_policy(ctx, first, owner, options.build, name_prefix=first.name,
                                         lineage={**first.lineage, "distilled_from": first.name})
        tree = distilled.chosen
        policies.append(tree.replace(lineage={**tree.lineage, "candidate": True}))
    return result, policies
