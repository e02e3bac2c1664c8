"""Cross-fitted policies: build on one half of the units, certify on the other, then swap (``pex run``'s default).

A single fit that holds out a quarter of the units certifies its policies on that quarter only. Cross-fitting
certifies on every unit and so can certify bolder policies (measured in ``bench/guardrails.py``):

1. **Two fits.** The held-out split's hash (:mod:`pex.experiment.split`) cuts the units into two halves, A
   (hash in [0, 0.5)) and B ([0.5, 1)). One fit trains on B and holds out A, the other trains on A and holds
   out B, each with the whole policy set built from its own training half (:func:`pex.services.policies.assemble_policies`,
   the weight search's candidates too), planned for certification on every unit.
2. **One routing policy per recipe.** The two policies of the same recipe (``value``, ``tree-d2``, ``pareto-1``,
   ...) become one :class:`pex.policy.routing.RoutingPolicy` that serves each half-policy to the units its fit
   held out, by the same hash: on the experiment's units every decision comes from models that never saw the unit.
3. **Valued on every unit.** The two held-out halves, each with its own cross-fitted reward models, are one
   evaluation set (:func:`pex.evaluation.comparison.combined_evaluation`). A routing policy's estimate there is the
   average of each half-policy's estimate on the half it did not see, which is what serving the routing policy to
   new units (split the same way) is worth. Baselines are the same on both halves.

The price: each model trains on half the units instead of three quarters, and the guarantee becomes asymptotic
(the half-policies must settle as the sample grows, the cross-validated targeted-learning argument) where a
single hold-out's is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pex.evaluation.comparison import EvaluationData, combined_evaluation, compare
from pex.experiment.spec import ExperimentSpec
from pex.experiment.split import split_key
from pex.policy.base import Policy
from pex.policy.constrained import Screen
from pex.policy.routing import RoutingPolicy, routing_policy
from pex.services.policies import FitContext, PolicySet, fidelity

HALVES = (0.0, 0.5)  # each fit's held-out arc starts here and covers half the hash circle
SHARE = 0.5
NOTE = ("every unit of the experiment: each half of the units (by the held-out split's hash) was held out of one of two "
        "fits, and each routing policy decides for a unit with the half-policy whose fit held that unit out")


@dataclass
class CrossFitted:
    """The two fits' contexts and their union of held-out units (every unit)."""

    contexts: list[FitContext]  # in HALVES order
    evaluation: EvaluationData

    @classmethod
    def of(cls, contexts: list[FitContext]) -> CrossFitted:
        """The cross-fit of two loaded fits that hold out complementary halves."""
        offsets = [float((c.summary.get("holdout") or {}).get("offset", 0.0)) for c in contexts]
        if offsets != list(HALVES) or any(float(c.summary["holdout"]["share"]) != SHARE for c in contexts):
            raise ValueError(f"a cross-fit needs two fits holding out halves at offsets {HALVES}, got {offsets}")
        return cls(contexts, combined_evaluation([c.evaluation() for c in contexts], NOTE))

    @property
    def key(self) -> str:
        """The hash key of the fits' split, which the routing policies route by."""
        return split_key(int(self.contexts[0].summary["holdout"]["seed"]))

    def route(self, halves: list[list[Policy]], *, unit: str, experiment: str) -> list[Policy]:
        """One policy per recipe built in both halves (:func:`recipe`), in the first half's order: a constant
        policy as it is, any other as a routing policy of its two half-policies."""
        by_recipe = [{recipe(p): p for p in half} for half in halves]
        # each half's distillation chose a depth; the cross-fitted candidate is the shallower of the two (a distillation
        # prefers the simplest depth within reach, and one tree depth competes, as in a single fit)
        chosen = [d for half in halves for p in half if _distilled(p) and p.lineage.get("candidate")
                  for d in [p.lineage["distilled_depth"]]]
        tree_depth = min(chosen) if chosen else None
        out: list[Policy] = []
        for key, first in by_recipe[0].items():
            parts = [half.get(key) for half in by_recipe]
            if any(p is None for p in parts):
                continue  # e.g. a ladder step one half found identical to its default: not a recipe of both
            if first.single_arm is not None and (parts[1].single_arm, parts[1].exploration) == (first.single_arm, first.exploration):
                # the same decisions in both halves: a baseline needs no routing (its lineage names the first fit)
                out.append(first)
                continue
            lineage = {**first.lineage, "crossfit": {"fits": [c.record.id for c in self.contexts],
                                                     "halves": [p.name for p in parts]},
                       "candidate": (first.lineage["distilled_depth"] == tree_depth) if _distilled(first)
                       else any(bool(p.lineage.get("candidate", True)) for p in parts)}
            for k in ("fit_run", "distilled_depth", "tuning", "guardrail_multiplier", "planned_power"):
                if k in lineage and parts[1].lineage.get(k) != lineage[k]:
                    lineage.pop(k)  # each half's own: it stays in the routes' documents
            routes = [(start, SHARE, p.replace(name=f"{key}-half{i + 1}")) for i, (start, p) in enumerate(zip(HALVES, parts))]
            out.append(routing_policy(key, routes, key=self.key, unit=unit, experiment=experiment,
                                      trained_at=first.trained_at, lineage=lineage))
        return out

    def compare(self, policies: list[Policy], first: PolicySet, coefficients: dict[str, float],
                spec: ExperimentSpec) -> tuple[list[dict], list[dict[str, Screen]]]:
        """The comparison rows of ``policies`` on every unit and their building-units screens. Rows also carry what
        the report shows of the first half (``first``: its policy set), whose fit the summary describes: the value
        policy's calibration, a distilled depth's fidelity, a Pareto policy's search values."""
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
            if isinstance(policy, RoutingPolicy) and "tuning" in policy.routes[0].lineage:
                row["tuning"] = {**policy.routes[0].lineage["tuning"], "half": 1}
            if _distilled(policy):
                row["fidelity"] = fidelity(policy, data, value_arms, chosen=bool(policy.lineage.get("candidate")),
                                           curve=curve.get(policy.lineage["distilled_depth"], {}))
        return rows, screens

    def screen(self, policy: Policy) -> dict[str, Screen]:
        """The building-units check of a routing policy: each half-policy screened on its own fit's training units
        (planned for certification on every unit), averaged. The routing policy's harm on every unit is the two
        half-policies' average, and its certifiable bound about the average of theirs."""
        if not isinstance(policy, RoutingPolicy):
            return self.contexts[0].guardrail_screen(policy)
        screens = [c.guardrail_screen(p) for c, p in zip(self.contexts, policy.routes)]
        return {metric: Screen.average([s[metric] for s in screens]) for metric in screens[0]}

    def description(self) -> dict[str, Any]:
        """The cross-fit as JSON (summary.json's ``crossfit``)."""
        return {"fits": [c.record.id for c in self.contexts], "halves": [
            {"fit": c.record.id, "held_out": {"offset": off, "share": SHARE}, "n_training": len(c.training)}
            for c, off in zip(self.contexts, HALVES)], "key": self.key, "n_units": self.evaluation.n, "note": NOTE}


def _distilled(policy: Policy) -> bool:
    """Whether ``policy`` is one depth of the default value policy's distilled trees."""
    return "distilled_depth" in policy.lineage and "distilled_from" not in policy.lineage


def recipe(policy: Policy) -> str:
    """What a policy of one half is the counterpart of in the other: its name, except for a candidate tree
    distilled from a Pareto policy, whose name carries the depth its own half chose."""
    source = policy.lineage.get("distilled_from")
    return f"{source}-tree" if source else policy.name
