"""From a stored fit to the set of policies built from its training units.

The set every experiment gets: one constant policy per arm and uniform random
(the baselines), the value-model policy (:mod:`pex.policy.value`) and its
distilled trees of depth 1-4 (:mod:`pex.policy.distill`). They are valued
off-policy on held-out units by :class:`pex.services.crossfit.CrossFit` (``pex run``
over its folds, ``pex policies`` on one fit's held-out units, :mod:`pex.services.catalog`).

Everything is built from the fit's training units only: the value policy is
calibrated and the trees are fitted on out-of-fold effects there, so the
held-out units stay untouched until evaluation.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import DataError, StoreError
from pex.evaluation.comparison import EvaluationData, evaluation_data
from pex.experiment.guardrail import LADDER_POWERS, POWER, certify_margin, rules_for, z_value
from pex.experiment.spec import ExperimentSpec
from pex.hte.learners import TRAINING_FILE
from pex.hte.model import EffectModel
from pex.policy.base import Policy
from pex.policy.constant import constant_policy, uniform_policy
from pex.policy.constrained import Constraint, Screen, check, choose_constrained
from pex.policy.distill import DEPTHS, Distillation, distill
from pex.policy.policy_tree import fit_policy_tree, to_policy_node
from pex.policy.tree import TreePolicy
from pex.policy.value import build_value_policy, objective, scores_from_effects
from pex.services.models import effect_model
from pex.store.workspace import Workspace

Say = Callable[[str], None]


@dataclass
class BuildOptions:
    """How the value policy and its trees are built (see :mod:`pex.policy.value`)."""

    weights: dict[str, float] = field(default_factory=dict)
    guardrails: str = "constraint"
    budget: float | None = None
    exploration: float = 0.05
    depths: tuple[int, ...] = DEPTHS
    min_leaf_share: float = 0.05
    seed: int = 0
    ladder: bool = True  # also the value policy planned for the other powers of pex.experiment.guardrail.LADDER_POWERS

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON (recorded in each policy's lineage)."""
        return {"weights": self.weights, "guardrails": self.guardrails, "budget": self.budget, "exploration": self.exploration,
                "depths": list(self.depths), "min_leaf_share": self.min_leaf_share, "seed": self.seed, "ladder": self.ladder}


@dataclass
class FitContext:
    """A stored fit with what policy work needs: model, data, training units, held-out units."""

    record: Any
    summary: dict
    model: EffectModel
    dataset: Any
    training: pd.DataFrame  # training.parquet rows (unit order of the fit)
    certify_units: int | None = None  # units policies will be certified on, when not only this fit's held-out ones (cross-fitting)
    _evaluation: EvaluationData | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def evaluation(self) -> EvaluationData:
        """The fit's held-out units with cross-fitted reward models (built once)."""
        if self._evaluation is None:
            self._evaluation = evaluation_data(self.dataset, self.model.encoder, self.summary.get("holdout") or {})
        return self._evaluation

    def training_frame(self) -> pd.DataFrame:
        """The fit's training units, in the fit's order (read once)."""
        if "train" not in self._cache:
            self._cache["train"] = self._training_frame()
        return self._cache["train"]

    def _training_frame(self) -> pd.DataFrame:
        unit = self.dataset.spec.unit
        frame = self.dataset.frame.set_index(self.dataset.frame[unit].astype(str))
        return frame.loc[self.training["unit"].to_numpy()].reset_index(drop=True)

    def oof_effects(self) -> dict[tuple[str, str], np.ndarray]:
        """The fit's out-of-fold effects per (metric, arm) on the training units."""
        return {(m, a): self.training[f"oof__{m}__{a}"].to_numpy(dtype=float)
                for m in self.model.metrics for a in self.model.treated_arms}

    def pseudo_outcomes(self) -> dict[tuple[str, str], np.ndarray]:
        """The fit's out-of-fold DR pseudo-outcomes per (metric, arm) on the training units."""
        return {(m, a): self.training[f"pseudo__{m}__{a}"].to_numpy(dtype=float)
                for m in self.model.metrics for a in self.model.treated_arms}

    def n_eval(self) -> int:
        """How many held-out units the policies will be certified on (from the fit's held-out share, so the
        held-out units need not be loaded to know it); a cross-fitted run certifies on every unit (``certify_units``)."""
        if self.certify_units is not None:
            return self.certify_units
        share = float((self.summary.get("holdout") or {}).get("share", 0.0))
        return max(round(len(self.training) * share / (1.0 - share)), 1) if share > 0 else len(self.training)

    def arm_signal(self, metric: str, kind: str = "pseudo") -> np.ndarray:
        """Per training unit and arm (n, A), control 0: out-of-fold doubly-robust pseudo-outcomes of ``metric``
        (``kind="pseudo"``) or its out-of-fold predicted effects (``kind="oof"``)."""
        out = np.zeros((len(self.training), len(self.model.arms)))
        for j, arm in enumerate(self.model.arms):
            if arm != self.model.control:
                out[:, j] = self.training[f"{kind}__{metric}__{arm}"].to_numpy(dtype=float)
        return out

    def honest_values(self, coefficients: dict[str, float]) -> np.ndarray:
        """The objective's per-unit, per-arm value (n, A) by pseudo-outcomes: unbiased, and unseen by any decision."""
        return sum(c * self.arm_signal(m) for m, c in coefficients.items() if c)

    def guardrail_constraints(self) -> list[Constraint]:
        """Each guardrail's rule (control mean of the training units) with its per-unit, per-arm change signal."""
        if "constraints" not in self._cache:
            self._cache["constraints"] = self._guardrail_constraints()
        return self._cache["constraints"]

    def _guardrail_constraints(self) -> list[Constraint]:
        spec = self.dataset.spec
        train = self.training_frame()
        control_rows = (train[spec.arm] == spec.control).to_numpy()
        means = {m: float(train.loc[control_rows, meta.column].to_numpy(dtype=float).mean()) if control_rows.any() else 0.0
                 for m, meta in spec.metrics.items()}
        # measured with pseudo-outcomes, steered by predictions that never saw the unit's outcome
        return [Constraint(rule, self.arm_signal(m), guide=self.arm_signal(m, "oof")) for m, rule in rules_for(spec, means).items()]

    def training_choices(self, policy: Policy) -> np.ndarray:
        """The greedy arm ``policy`` gives each training unit; a value policy decides on out-of-fold effects, as
        when it was built, so its choices do not lean on the units' own outcomes."""
        to_model = np.array([list(self.model.arms).index(a) for a in policy.arms])
        return to_model[policy.greedy_arms(self.training_frame(), effects=self.oof_effects())]

    def guardrail_screen(self, policy: Policy) -> dict[str, Screen]:
        """The building-units check of :mod:`pex.evaluation.recommendation`: per guardrail, the harm on the training units and
        whether a held-out test could pass if that estimate were exact (one-sided 95% bound, no margin for power)."""
        chosen = self.training_choices(policy)
        constraints = self.guardrail_constraints()
        _ok, bounds, harms = check(constraints, chosen, policy.exploration, self.n_eval(), margin=z_value())
        return {c.rule.metric: Screen(c.rule, *harms[c.rule.metric], bounds[c.rule.metric]) for c in constraints}

    def screen(self, policy: Policy) -> dict[str, dict]:
        """:meth:`guardrail_screen` as JSON (a comparison row's ``screen``)."""
        return {m: cell.to_dict() for m, cell in self.guardrail_screen(policy).items()}


def load_fit(ws: Workspace, experiment: str, fit_id: str | None = None) -> FitContext:
    """A stored fit (default: the newest) with its dataset version and training units; it must have held units out."""
    record, summary = ws.get_fit(experiment, fit_id)
    model = effect_model(ws, record)
    if not (summary.get("holdout") or {}).get("share"):
        raise DataError(f"fit {record.id} used every unit, so none is left to evaluate policies on",
                        f"refit keeping units aside: `pex fit {experiment} --holdout 0.25`")
    training = _read_training(ws, record)
    dataset, _dv = ws.load_dataset(experiment, summary["dataset_version"]["version"])
    return FitContext(record, summary, model, dataset, training)


def objective_coefficients(spec: ExperimentSpec, frame: pd.DataFrame, weights: dict[str, float] | None = None,
                           guardrails: str = "constraint") -> dict[str, float]:
    """The owner's objective per unit of each metric: weights over control-arm SDs, without the
    penalties that enforce guardrail constraints (those are a means, not a goal)."""
    metrics, _rails = objective(spec, frame, weights, guardrails)
    return {m: meta["coefficient"] for m, meta in metrics.items()}


@dataclass
class PolicySet:
    """The policies built from one fit, before any is valued on held-out units."""

    policies: list[Policy]
    value: Policy
    calibrations: dict[str, dict]  # value policy and ladder steps: how each was calibrated
    calibration: dict  # the default value policy's
    distilled: Distillation
    owner_objective: dict[str, float]


def assemble_policies(ctx: FitContext, options: BuildOptions, say: Say | None = None) -> PolicySet:
    """Baselines, the value policy and its ladder, the distilled trees and the learned policy tree of ``ctx``'s fit,
    all built from its training units only."""
    say = say or (lambda message: None)
    spec, model = ctx.dataset.spec, ctx.model
    experiment = spec.name
    train = ctx.training_frame()
    # the objective travels with every policy of the set, so `pex evaluate` values them the same way later
    lineage = {"dataset": ctx.record.dataset_id, "fit_run": ctx.record.id,
               "objective": {"weights": dict(options.weights), "guardrails": options.guardrails}}
    objective(spec, train, options.weights, options.guardrails)  # bad weights fail before any work is announced
    say(f"building the value policy on {len(train):,} training units (fit {ctx.record.id})")
    oof, pseudo = ctx.oof_effects(), ctx.pseudo_outcomes()
    # the value policy and its ladder choose arms by out-of-fold predictions alone, with no search over the
    # pseudo-outcomes their building-units screen measures them with: that screen is not optimistic (unsearched)
    honest = dict(lineage, unsearched=True)
    value, calibration = build_value_policy(
        name=f"{experiment}-value", spec=spec, model=model, frame=train, fit_id=ctx.record.id, weights=options.weights,
        guardrails=options.guardrails, budget=options.budget, exploration=options.exploration, lineage=honest, effects=oof,
        harm_signal=pseudo, n_eval=ctx.n_eval())
    ladder = value_ladder(ctx, value, options, lineage=honest) if options.ladder else []
    calibrations = {value.name: calibration, **{p.name: info for p, info in ladder}}
    owner_objective = objective_coefficients(spec, train, options.weights, options.guardrails)
    say(f"distilling trees of depth {', '.join(map(str, options.depths))} (leaf arms certifiable on every guardrail)")
    distilled = distill_value_policy(ctx, value, owner_objective, options, name_prefix=experiment, lineage=lineage)
    say("learning a policy tree directly on the doubly-robust scores under the same guardrail bound")
    learned = learn_policy_tree(ctx, owner_objective, options, name=f"{experiment}-policy-tree", lineage=lineage)
    baselines = [constant_policy(value.arms, a, name=f"{experiment}-all-{a}") for a in value.arms]
    baselines.append(uniform_policy(value.arms, name=f"{experiment}-uniform"))
    baselines = [p.replace(experiment=experiment, lineage=dict(lineage)) for p in baselines]
    policies = [*baselines, value, *(p for p, _info in ladder), *distilled.trees.values(), learned]
    return PolicySet(policies, value, calibrations, calibration, distilled, owner_objective)


def fidelity(tree: Policy, data: EvaluationData, value_arms: np.ndarray, *, chosen: bool, curve: dict) -> dict[str, Any]:
    """A distilled tree's comparison-row entry: its depth, whether it is the depth that competes, how often it
    gives ``data``'s units the value policy's arm (``value_arms``), and its point of the distillation's depth curve."""
    return {"depth": tree.lineage["distilled_depth"], "chosen": chosen,
            "agreement_with_value_policy": float((tree.greedy_arms(data.frame) == value_arms).mean()),
            "held_out_curve": curve}


def value_ladder(ctx: FitContext, value: Policy, options: BuildOptions, *, lineage: dict) -> list[tuple[Policy, dict]]:
    """``value`` re-thresholded for each power of :data:`pex.experiment.guardrail.LADDER_POWERS` but the default.

    A step planned for power ``p`` treats the most valuable prefix whose building-units bound, with the margin
    a held-out test needs to pass with probability ``p`` if that estimate held, is within every limit: steps
    above 80% are safer than ``value``, those below bolder. The fixed-sequence test of :mod:`pex.evaluation.recommendation`
    tries them safest first, so the certified step is the boldest the held-out units support, at no cost to
    the 95% level. Steps that treat the same units as ``value`` or as a safer step are left out. Empty when
    no guardrail has a limit (there is nothing to certify). Each step comes with its calibration info.
    """
    spec = ctx.dataset.spec
    if not any(m.role == "guardrail" and (m.max_harm is not None or m.max_harm_abs is not None) for m in spec.metrics.values()):
        return []
    train = ctx.training_frame()
    oof, pseudo = ctx.oof_effects(), ctx.pseudo_outcomes()
    seen = {value.value_model["min_score"]}
    steps: list[tuple[Policy, dict]] = []
    for power in LADDER_POWERS:
        if power == POWER:
            continue
        policy, info = build_value_policy(
            name=f"{value.name}-p{round(power * 100)}", spec=spec, model=ctx.model, frame=train, fit_id=ctx.record.id,
            weights=options.weights, guardrails=options.guardrails, budget=options.budget, exploration=options.exploration,
            lineage=dict(lineage, ladder_of=value.name, planned_power=power, candidate=True), effects=oof,
            harm_signal=pseudo, n_eval=ctx.n_eval(), margin=certify_margin(power=power))
        if policy.value_model["min_score"] in seen:
            continue
        seen.add(policy.value_model["min_score"])
        steps.append((policy, info))
    return steps


def distill_value_policy(ctx: FitContext, value: Policy, owner_objective: dict[str, float], options: BuildOptions, *,
                         name_prefix: str, lineage: dict) -> Distillation:
    """Trees imitating ``value`` (on its out-of-fold scores) whose leaf arms maximize the owner's objective by
    pseudo-outcomes subject to certifiable guardrails."""
    vm = value.value_model
    train = ctx.training_frame()
    scores = scores_from_effects(ctx.oof_effects(), value.arms, ctx.model.control, vm["metrics"], vm["min_score"], len(train))
    return distill(frame=train, encoder=ctx.model.encoder, scores=scores, honest_value=ctx.honest_values(owner_objective),
                   arms=value.arms, control=ctx.model.control, name_prefix=name_prefix, depths=options.depths,
                   min_leaf_share=options.min_leaf_share, exploration=options.exploration, experiment=ctx.dataset.spec.name,
                   lineage=lineage, seed=options.seed, guardrails=ctx.guardrail_constraints(), n_eval=ctx.n_eval())


def learn_policy_tree(ctx: FitContext, owner_objective: dict[str, float], options: BuildOptions, *, name: str,
                      lineage: dict, depth: int = 2) -> Policy:
    """A depth-``depth`` tree searched exhaustively on the doubly-robust scores (:mod:`pex.policy.policy_tree`), with
    the guardrails as certifiable constraints (:mod:`pex.policy.constrained`)."""
    train = ctx.training_frame()
    encoder, arms = ctx.model.encoder, list(ctx.model.arms)
    X = encoder.transform(train, strict=False)
    min_leaf = max(1, int(np.ceil(options.min_leaf_share * len(X))))
    fits: dict[int, Any] = {}

    def choose(rewards: np.ndarray) -> np.ndarray:
        fit = fit_policy_tree(X, rewards, depth=depth, min_leaf=min_leaf, categorical=encoder.categorical_indices)
        chosen = fit.apply(X)
        fits[id(chosen)] = (fit, chosen)  # the choice's tree, kept alive with it
        return chosen

    result = choose_constrained(choose, ctx.honest_values(owner_objective), ctx.guardrail_constraints(),
                                arms.index(ctx.model.control), options.exploration, ctx.n_eval())
    if id(result.chosen) in fits:
        node = to_policy_node(fits[id(result.chosen)][0].node, encoder, arms)
    else:  # no multiplier was certifiable: nobody treated
        node = {"arm": ctx.model.control}
    return TreePolicy(name=name, arms=arms, default_arm=ctx.model.control, exploration=options.exploration,
                      tree=node, experiment=ctx.dataset.spec.name,
                      trained_at=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
                      lineage=dict(lineage, learned="policy tree on doubly-robust scores", depth=depth,
                                   guardrail_multiplier=result.multiplier, candidate=True))


def _read_training(ws: Workspace, record) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(ws.read_fit_bytes(record, TRAINING_FILE)))
    except StoreError:
        raise DataError(f"fit {record.id} was stored by an older pex without its training units",
                        f"fit the experiment again: `pex fit {record.experiment}`") from None
