"""From a stored fit to a stored, evaluated set of policies.

The set every experiment gets: one constant policy per arm and uniform random
(the baselines), the value-model policy (:mod:`pex.value_policy`) and its
distilled trees of depth 1-4 (:mod:`pex.distill`), each valued off-policy on
the fit's held-out units (:mod:`pex.policy_eval`).

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

from pex.distill import DEPTHS, distill
from pex.errors import DataError, StoreError
from pex.hte import TRAINING_FILE, EffectModel
from pex.policy import constant_policy, uniform_policy
from pex.policy_eval import EvaluationData, compare, evaluation_data
from pex.store import PolicyRecord, Workspace
from pex.value_policy import build_value_policy, objective, scores_from_effects

Say = Callable[[str], None]


@dataclass
class BuildOptions:
    """How the value policy and its trees are built (see :mod:`pex.value_policy`)."""

    weights: dict[str, float] = field(default_factory=dict)
    guardrails: str = "constraint"
    budget: float | None = None
    exploration: float = 0.05
    depths: tuple[int, ...] = DEPTHS
    min_leaf_share: float = 0.05
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "guardrails": self.guardrails, "budget": self.budget, "exploration": self.exploration,
                "depths": list(self.depths), "min_leaf_share": self.min_leaf_share, "seed": self.seed}


@dataclass
class FitContext:
    """A stored fit with what policy work needs: model, data, training units, held-out units."""

    record: Any
    summary: dict
    model: EffectModel
    dataset: Any
    training: pd.DataFrame  # training.parquet rows (unit order of the fit)
    _evaluation: EvaluationData | None = None

    def evaluation(self) -> EvaluationData:
        if self._evaluation is None:
            self._evaluation = evaluation_data(self.dataset, self.model.encoder, self.summary.get("holdout") or {})
        return self._evaluation

    def training_frame(self) -> pd.DataFrame:
        unit = self.dataset.spec.unit
        frame = self.dataset.frame.set_index(self.dataset.frame[unit].astype(str))
        return frame.loc[self.training["unit"].to_numpy()].reset_index(drop=True)

    def oof_effects(self) -> dict[tuple[str, str], np.ndarray]:
        return {(m, a): self.training[f"oof__{m}__{a}"].to_numpy(dtype=float)
                for m in self.model.metrics for a in self.model.treated_arms}

    def pseudo_outcomes(self) -> dict[tuple[str, str], np.ndarray]:
        return {(m, a): self.training[f"pseudo__{m}__{a}"].to_numpy(dtype=float)
                for m in self.model.metrics for a in self.model.treated_arms}


def load_fit(ws: Workspace, experiment: str, fit_id: str | None = None) -> FitContext:
    """A stored fit (default: the newest) with its dataset version and training units; it must have held units out."""
    record, summary = ws.get_fit(experiment, fit_id)
    model = EffectModel.from_files(lambda rel: ws.read_fit_file(record, rel))
    if not (summary.get("holdout") or {}).get("share"):
        raise DataError(f"fit {record.id} used every unit, so none is left to evaluate policies on",
                        f"refit keeping units aside: `pex fit {experiment} --holdout 0.25`")
    training = _read_training(ws, record)
    dataset, _dv = ws.load_dataset(experiment, summary["dataset_version"]["version"])
    return FitContext(record, summary, model, dataset, training)


def objective_coefficients(spec, frame: pd.DataFrame, weights: dict[str, float] | None = None,
                           guardrails: str = "constraint") -> dict[str, float]:
    """The owner's objective per unit of each metric: weights over control-arm SDs, without the
    penalties that enforce guardrail constraints (those are a means, not a goal)."""
    metrics, _rails = objective(spec, frame, weights, guardrails)
    return {m: meta["coefficient"] for m, meta in metrics.items()}


def build_policies(ws: Workspace, experiment: str, options: BuildOptions | None = None, fit_id: str | None = None,
                   say: Say | None = None, ctx: FitContext | None = None) -> tuple[list[PolicyRecord], dict[str, Any]]:
    """Build, evaluate and store the policy set of ``experiment`` from a fit (default: the newest; ``ctx``: one loaded)."""
    options = options or BuildOptions()
    say = say or (lambda message: None)
    ctx = ctx or load_fit(ws, experiment, fit_id)
    spec, model = ctx.dataset.spec, ctx.model
    train = ctx.training_frame()
    # the objective travels with every policy of the set, so `pex evaluate` values them the same way later
    lineage = {"dataset": ctx.record.dataset_id, "fit_run": ctx.record.id,
               "objective": {"weights": dict(options.weights), "guardrails": options.guardrails}}
    objective(spec, train, options.weights, options.guardrails)  # bad weights fail before any work is announced
    say(f"building the value policy on {len(train):,} training units (fit {ctx.record.id})")
    oof, pseudo = ctx.oof_effects(), ctx.pseudo_outcomes()
    value, calibration = build_value_policy(
        name=f"{experiment}-value", spec=spec, model=model, frame=train, fit_id=ctx.record.id, weights=options.weights,
        guardrails=options.guardrails, budget=options.budget, exploration=options.exploration, lineage=lineage, effects=oof,
        harm_signal=pseudo)
    vm = value.value_model
    coefficients = {m: meta["coefficient"] for m, meta in vm["metrics"].items()}
    scores = scores_from_effects(oof, value.arms, model.control, vm["metrics"], vm["min_score"], len(train))
    honest = np.zeros_like(scores)
    for j, arm in enumerate(value.arms):
        if arm != model.control:
            honest[:, j] = sum(c * pseudo[(m, arm)] for m, c in coefficients.items())
    say(f"distilling trees of depth {', '.join(map(str, options.depths))}")
    distilled = distill(frame=train, encoder=model.encoder, scores=scores, honest_value=honest, arms=value.arms,
                        control=model.control, name_prefix=experiment, depths=options.depths,
                        min_leaf_share=options.min_leaf_share, exploration=options.exploration, experiment=experiment,
                        lineage=lineage, seed=options.seed)
    baselines = [constant_policy(value.arms, a, name=f"{experiment}-all-{a}") for a in value.arms]
    baselines.append(uniform_policy(value.arms, name=f"{experiment}-uniform"))
    for p in baselines:
        p.experiment, p.lineage = experiment, dict(lineage)
    policies = [*baselines, value, *distilled.trees.values()]
    data = ctx.evaluation()
    say(f"evaluating {len(policies)} policies on {data.n:,} held-out units (IPS, SNIPS, DM, DR)")
    owner_objective = objective_coefficients(spec, train, options.weights, options.guardrails)
    rows = compare(policies, data, owner_objective, spec)
    value_arms = value.greedy_arms(data.frame)
    report = {"fit": ctx.record.id, "options": options.to_dict(), "evaluation_rows": data.description,
              "objective_coefficients": owner_objective, "calibration": calibration, "distillation": distilled.to_dict()}
    items = []
    for policy, row in zip(policies, rows):
        row["evaluation_rows"] = data.description
        if policy.kind == "tree":
            depth = policy.lineage["distilled_depth"]
            row["fidelity"] = {"depth": depth, "chosen": depth == distilled.chosen_depth,
                               "agreement_with_value_policy": float((policy.greedy_arms(data.frame) == value_arms).mean()),
                               "held_out_curve": next(c for c in distilled.curve if c["depth"] == depth)}
        if policy.kind == "value":
            row["calibration"] = calibration
        items.append((policy.to_document(), row))
    records = ws.put_policies(experiment, items, fit_id=ctx.record.id)
    return records, report


def _read_training(ws: Workspace, record) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(ws.read_fit_bytes(record, TRAINING_FILE)))
    except StoreError:
        raise DataError(f"fit {record.id} was stored by an older pex without its training units",
                        f"fit the experiment again: `pex fit {record.experiment}`") from None
