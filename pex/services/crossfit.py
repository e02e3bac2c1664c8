"""K-fold cross-fitting: the one procedure by which ``pex run`` builds policies and certifies them.

The held-out split's hash (:mod:`pex.experiment.split`) puts every unit on a circle; :class:`Folds` names arcs
of it, one fit per arc, each holding its arc's units out of every model (EconML's ``_OrthoLearner`` has the same
shape: the single hold-out is its one-fold case).

1. **One fit per fold.** Each fit trains on the units outside its arc and builds the whole policy set from them
   (:func:`pex.services.policies.assemble_policies`, the weight search's candidates too), planned for
   certification on every unit the run certifies on.
2. **One policy per recipe.** With several folds (the arcs tile the circle), the policies of the same recipe
   (``value``, ``tree-d2``, ``pareto-1``, ...) become one :class:`pex.policy.routing.RoutingPolicy` that serves
   each fold's policy to the units its fit held out, by the same hash: on the experiment's units every decision
   comes from models that never saw the unit. With one fold a recipe is its single policy.
3. **Valued on the held-out units.** The folds' held-out units, each fold with its own cross-fitted reward models,
   are one evaluation set (:func:`pex.evaluation.comparison.combined_evaluation`; every unit when the arcs tile).
   A routing policy's estimate there is the average of each fold policy's estimate on the units it did not see,
   which is what serving the routing policy to new units (split the same way) is worth.

``pex run``'s default is two halves (A: hash in [0, 0.5), B: [0.5, 1)), which certifies on every unit and so
can certify bolder policies than one fit holding out a quarter (measured in ``bench/guardrails.py``). The price:
each model trains on half the units instead of three quarters, and the guarantee becomes asymptotic (the fold
policies must settle as the sample grows, the cross-validated targeted-learning argument) where a single
hold-out's is exact. ``pex run --no-crossfit`` is the one fold holding out ``--holdout`` of the units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import PexError
from pex.evaluation.comparison import EvaluationData, combined_evaluation, compare
from pex.experiment.spec import ExperimentSpec
from pex.experiment.split import evaluation_mask, holdout_key
from pex.policy.base import Policy
from pex.policy.constrained import Screen
from pex.policy.routing import TILE_TOLERANCE, RoutingPolicy, routing_policy
from pex.services.policies import FitContext, PolicySet, fidelity

# the evaluation note of pex run's default two folds, as summary.json has always published it (other K: _note)
NOTE = ("every unit of the experiment: each half of the units (by the held-out split's hash) was held out of one of two "
        "fits, and each routing policy decides for a unit with the half-policy whose fit held that unit out")


@dataclass(frozen=True)
class Folds:
    """The held-out arcs of a run's fits, ``(offset, share)`` fractions of the split's hash circle, one fit each.

    One arc is a single hold-out; several must tile the circle, so that every unit is held out of exactly one fit
    and a routing policy has a route for every unit.
    """

    arcs: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.arcs:
            raise PexError("a cross-fit needs at least one fold", "e.g. Folds.kfold(2), or Folds.holdout(0.25) for one fold")
        for offset, share in self.arcs:
            if not (0.0 <= offset < 1.0 and 0.0 < share < 1.0):
                raise PexError(f"a fold holds out the arc at offset {offset} of share {share}; both must be in [0, 1) "
                               "and the share above 0", "e.g. Folds.holdout(0.25)")
        if len(self.arcs) > 1:
            at = 0.0
            for offset, share in self.arcs:
                if abs(offset - at) > TILE_TOLERANCE:
                    raise PexError(f"the folds' held-out arcs {list(self.arcs)} do not tile the hash circle",
                                   "several folds hold out consecutive arcs from 0 that add up to 1, e.g. Folds.kfold(2)")
                at += share
            if abs(at - 1.0) > TILE_TOLERANCE:
                raise PexError(f"the folds' held-out shares add up to {at:g}, not 1",
                               "several folds hold out consecutive arcs from 0 that add up to 1, e.g. Folds.kfold(2)")

    @classmethod
    def kfold(cls, k: int) -> Folds:
        """``k`` folds of equal arcs that tile the circle (``k`` = 2: the halves, ``pex run``'s default)."""
        if k < 2:
            raise PexError(f"k-fold cross-fitting needs at least two folds, got {k}",
                           "e.g. 2; one fold is a single hold-out, Folds.holdout(share)")
        return cls(tuple((i / k, 1 / k) for i in range(k)))

    @classmethod
    def holdout(cls, share: float) -> Folds:
        """One fold holding out ``share`` of the units from hash 0 (``pex run --no-crossfit``)."""
        return cls(((0.0, float(share)),))

    def __len__(self) -> int:
        return len(self.arcs)

    @property
    def share(self) -> float:
        """The share of units policies are certified on: every unit when the arcs tile the circle."""
        return sum(share for _offset, share in self.arcs)

    @property
    def crossed(self) -> bool:
        """Whether there are several folds, so each recipe is served by a routing policy over them."""
        return len(self.arcs) > 1

    @property
    def part(self) -> str:
        """The word for one fold's share of the units in names and messages ("half" of two)."""
        return "half" if len(self.arcs) == 2 else "fold"

    def label(self, i: int) -> str:
        """The prefix of fold ``i``'s progress messages (none for a single fold)."""
        return f"{self.part} {i + 1}: " if self.crossed else ""


@dataclass
class CrossFit:
    """The folds' loaded fits and the union of their held-out units."""

    folds: Folds
    contexts: list[FitContext]  # in the folds' order
    evaluation: EvaluationData

    @classmethod
    def of(cls, contexts: list[FitContext]) -> CrossFit:
        """The cross-fit of loaded fits of one dataset version whose held-out arcs are its folds (one fit: a single
        hold-out). With several folds, every fit is planned for certification on every unit."""
        holdouts = [c.summary.get("holdout") or {} for c in contexts]
        # fits stored before cross-fitting have no offset: their arc starts at 0
        folds = Folds(tuple((float(h.get("offset", 0.0)), float(h.get("share", 0.0))) for h in holdouts))
        if len({holdout_key(h) for h in holdouts}) > 1 or len({c.record.dataset_id for c in contexts}) > 1:
            raise PexError("the fits of a cross-fit must split one dataset version by the same key",
                           "fit each fold of the same dataset version with this pex (the key is the dataset version's)")
        if folds.crossed:
            for c in contexts:
                c.certify_units = c.dataset.n_units
        evaluation = (combined_evaluation([c.evaluation() for c in contexts], NOTE if len(folds) == 2 else _note(len(folds)))
                      if folds.crossed else contexts[0].evaluation())
        return cls(folds, contexts, evaluation)

    @property
    def key(self) -> str:
        """The hash key of the fits' split, which the routing policies route by: the dataset version's
        (:func:`pex.experiment.split.dataset_split_key`), or the seed's for fits stored before keys were recorded."""
        return holdout_key(self.contexts[0].summary["holdout"])

    def building_frame(self) -> pd.DataFrame:
        """The dataset's rows of the units some fit trained on (every unit when the folds tile), in dataset order:
        where the owner's objective is scaled (:func:`pex.services.policies.objective_coefficients`)."""
        dataset = self.contexts[0].dataset
        units = dataset.frame[dataset.spec.unit].to_numpy()
        held_by_all = np.logical_and.reduce([evaluation_mask(units, share, offset=offset, key=self.key)
                                             for offset, share in self.folds.arcs])
        return dataset.frame.loc[~held_by_all]

    def route(self, per_fold: list[list[Policy]], *, unit: str, experiment: str) -> list[Policy]:
        """One policy per recipe built in every fold (:func:`recipe`), in the first fold's order: a recipe of one
        fold, or a constant policy the same in every fold, as it is; any other as a routing policy of its fold
        policies."""
        by_recipe = [{recipe(p): p for p in policies} for policies in per_fold]
        # each fold's distillation chose a depth; the cross-fitted candidate is the shallowest of them (a distillation
        # prefers the simplest depth within reach, and one tree depth competes, as in a single fit)
        chosen = [d for policies in per_fold for p in policies if _distilled(p) and p.lineage.get("candidate")
                  for d in [p.lineage["distilled_depth"]]]
        tree_depth = min(chosen) if chosen else None
        out: list[Policy] = []
        for key, first in by_recipe[0].items():
            parts = [policies.get(key) for policies in by_recipe]
            if any(p is None for p in parts):
                continue  # e.g. a ladder step one fold found identical to its default: not a recipe of every fold
            if len(parts) == 1 or (first.single_arm is not None
                                   and all((p.single_arm, p.exploration) == (first.single_arm, first.exploration) for p in parts)):
                # the same decisions for every unit: nothing to route (a baseline's lineage names the first fit)
                out.append(first)
                continue
            lineage = {**first.lineage, "crossfit": {"fits": [c.record.id for c in self.contexts],
                                                     "halves": [p.name for p in parts]},
                       "candidate": (first.lineage["distilled_depth"] == tree_depth) if _distilled(first)
                       else any(bool(p.lineage.get("candidate", True)) for p in parts)}
            for k in ("fit_run", "distilled_depth", "tuning", "guardrail_multiplier", "planned_power"):
                if k in lineage and any(p.lineage.get(k) != lineage[k] for p in parts[1:]):
                    lineage.pop(k)  # each fold's own: it stays in the routes' documents
            routes = [(offset, share, p.replace(name=f"{key}-{self.folds.part}{i + 1}"))
                      for i, ((offset, share), p) in enumerate(zip(self.folds.arcs, parts))]
            out.append(routing_policy(key, routes, key=self.key, unit=unit, experiment=experiment,
                                      trained_at=first.trained_at, lineage=lineage))
        return out

    def compare(self, policies: list[Policy], first: PolicySet, coefficients: dict[str, float],
                spec: ExperimentSpec) -> tuple[list[dict], list[dict[str, Screen]]]:
        """The comparison rows of ``policies`` on the held-out units and their building-units screens. Rows also
        carry what the report shows of the first fold (``first``: its policy set), whose fit the summary describes:
        the value policy's calibration, a distilled depth's fidelity, a Pareto policy's search values."""
        data = self.evaluation
        rows = compare(policies, data, coefficients, spec)
        screens = [self.screen(p) for p in policies]
        value_arms = next(p for p in policies if p.name == first.value.name).greedy_arms(data.frame)
        curve = {c["depth"]: c for c in first.distilled.curve}
        for policy, row, screen in zip(policies, rows, screens):
            row["evaluation_rows"] = data.description
            row["screen"] = {m: cell.to_dict() for m, cell in screen.items()}
            if policy.name in first.calibrations:
                row["calibration"] = first.calibrations[policy.name]
            if isinstance(policy, RoutingPolicy):
                if "tuning" in policy.routes[0].lineage:
                    row["tuning"] = {**policy.routes[0].lineage["tuning"], "half": 1}  # the first fold's search
            elif "tuning" in policy.lineage:
                row["tuning"] = policy.lineage["tuning"]
            if _distilled(policy):
                row["fidelity"] = fidelity(policy, data, value_arms, chosen=bool(policy.lineage.get("candidate")),
                                           curve=curve.get(policy.lineage["distilled_depth"], {}))
        return rows, screens

    def screen(self, policy: Policy) -> dict[str, Screen]:
        """The building-units check of a policy: a routing policy's fold policies each screened on its own fit's
        training units (planned for certification on every unit), averaged. The routing policy's harm on every
        unit is the fold policies' average, and its certifiable bound about the average of theirs."""
        if not isinstance(policy, RoutingPolicy):
            return self.contexts[0].guardrail_screen(policy)
        screens = [c.guardrail_screen(p) for c, p in zip(self.contexts, policy.routes)]
        return {metric: Screen.average([s[metric] for s in screens]) for metric in screens[0]}

    def description(self) -> dict[str, Any] | None:
        """The cross-fit as JSON (summary.json's ``crossfit``); None for a single hold-out."""
        if not self.folds.crossed:
            return None
        return {"fits": [c.record.id for c in self.contexts], "halves": [
            {"fit": c.record.id, "held_out": {"offset": offset, "share": share}, "n_training": len(c.training)}
            for c, (offset, share) in zip(self.contexts, self.folds.arcs)], "key": self.key, "n_units": self.evaluation.n,
            "note": self.evaluation.description["note"]}


def _note(k: int) -> str:
    return (f"every unit of the experiment: each of {k} folds of the units (by the held-out split's hash) was held out of "
            "one fit, and each routing policy decides for a unit with the fold policy whose fit held that unit out")


def _distilled(policy: Policy) -> bool:
    """Whether ``policy`` is one depth of the default value policy's distilled trees."""
    return "distilled_depth" in policy.lineage and "distilled_from" not in policy.lineage


def recipe(policy: Policy) -> str:
    """What a policy of one fold is the counterpart of in another: its name, except for a candidate tree
    distilled from a Pareto policy, whose name carries the depth its own fold chose."""
    source = policy.lineage.get("distilled_from")
    return f"{source}-tree" if source else policy.name
