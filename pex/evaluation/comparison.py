"""Compare policies off-policy on held-out randomized units.

Every policy is valued per metric with IPS, self-normalised IPS, the direct
method and doubly robust (:mod:`pex.evaluation.estimators`) on the units of the experiment that
none of the models behind the policies has seen (:mod:`pex.experiment.split`). The
headline value is doubly robust. Lifts over all-control and over the best
single arm (the arm a plain A/B test would ship) are paired differences on the
same units, so their intervals are much narrower than the values' own.

The objective (weighted sum of metrics on the control-arm-SD scale, the same
weights as the value policy, without guardrail penalties) is reported too; it
is what "best single arm" is chosen by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pex.errors import DataError
from pex.evaluation import estimators as ope
from pex.evaluation.feedback import LoggedFeedback
from pex.experiment.data import PROPENSITY, Dataset
from pex.experiment.features import FeatureEncoder
from pex.experiment.guardrail import GuardrailRule, Harm, rules_for
from pex.experiment.spec import ExperimentSpec
from pex.experiment.split import RULE, evaluation_mask, holdout_key
from pex.policy.base import Policy


@dataclass
class EvaluationData:
    """The held-out units as logged feedback, with the cross-fitted reward models DM and DR need."""

    feedback: LoggedFeedback
    control: str
    reward_hat: dict[str, np.ndarray]
    description: dict

    @property
    def frame(self) -> pd.DataFrame:
        """The units' rows (features by name)."""
        return self.feedback.context

    @property
    def arms(self) -> list[str]:
        """The experiment's arms, in the order of the action indices."""
        return list(self.feedback.arms)

    @property
    def action(self) -> np.ndarray:
        """The logged (assigned) arm index per unit."""
        return self.feedback.action

    @property
    def pscore(self) -> np.ndarray:
        """The probability each unit had of its logged arm."""
        return self.feedback.pscore

    @property
    def rewards(self) -> dict[str, np.ndarray]:
        """The observed outcome per metric."""
        return dict(self.feedback.rewards)

    @property
    def n(self) -> int:
        """Number of held-out units."""
        return self.feedback.n

    @property
    def cross_fitted(self) -> bool:
        """Whether these are the halves of a cross-fitted run (:func:`combined_evaluation`): every unit, each held
        out of one of two fits."""
        return "parts" in self.description


def evaluation_data(dataset: Dataset, encoder: FeatureEncoder, holdout: dict, folds: int = 2) -> EvaluationData:
    """Held-out units of ``dataset`` under the fit's ``holdout`` rule, with cross-fitted reward models."""
    spec, frame = dataset.spec, dataset.frame
    share, seed = float(holdout.get("share", 0.0)), int(holdout.get("seed", 0))
    offset = float(holdout.get("offset", 0.0))  # absent in fits stored before cross-fitting: the arc from 0
    key = holdout_key(holdout)  # the dataset version's key; a fit stored before keys were recorded: its seed's
    mask = evaluation_mask(frame[spec.unit].to_numpy(), share, offset=offset, key=key)
    arms = list(dataset.arms)
    held = frame.loc[mask].reset_index(drop=True)
    counts = held[spec.arm].value_counts()
    if mask.sum() == 0 or min(int(counts.get(a, 0)) for a in arms) < 20:
        raise DataError(
            f"the fit kept {int(mask.sum())} units out of its models: too few to evaluate policies honestly",
            f"refit with a held-out share, e.g. `pex fit {spec.name} --holdout 0.25` (every arm needs at least 20 held-out units)",
        )
    feedback = LoggedFeedback.from_frame(held, arms=arms, arm_column=spec.arm, propensity_column=PROPENSITY,
                                         reward_columns={name: m.column for name, m in spec.metrics.items()},
                                         source="the experiment's held-out units, propensities = assignment probabilities")
    X = encoder.transform(held, strict=False)
    reward_hat = {name: ope.cross_fit_rewards(X, feedback.action, y, len(arms), binary=dataset.metric_types[name] == "binary",
                                              categorical=encoder.categorical_indices, folds=folds, seed=seed)
                  for name, y in feedback.rewards.items()}
    description = {"n_units": len(held), "share": share, "seed": seed, "key": key, "offset": offset, "rule": RULE,
                   "arm_counts": {a: int(counts.get(a, 0)) for a in arms},
                   "note": "units whose id hashes into the held-out share; no effect model, reward model of another fold "
                           "or policy-building step used them"}
    return EvaluationData(feedback, spec.control, reward_hat, description)


def combined_evaluation(parts: list[EvaluationData], note: str) -> EvaluationData:
    """Disjoint sets of held-out units as one (a cross-fitted run's two halves), each with its own reward models.

    A unit's reward model never saw the unit either way (each part's models are cross-fitted within it), so DM
    and DR stay honest on the union; the description lists the parts.
    """
    first = parts[0]
    feedback = LoggedFeedback(
        context=pd.concat([p.feedback.context for p in parts], ignore_index=True), arms=first.feedback.arms,
        action=np.concatenate([p.action for p in parts]), pscore=np.concatenate([p.pscore for p in parts]),
        rewards={m: np.concatenate([p.feedback.rewards[m] for p in parts]) for m in first.feedback.rewards},
        source=first.feedback.source)
    reward_hat = {m: np.concatenate([p.reward_hat[m] for p in parts]) for m in first.reward_hat}
    arms = list(first.feedback.arms)
    description = {"n_units": feedback.n, "share": sum(p.description["share"] for p in parts), "seed": first.description["seed"],
                   "key": first.description.get("key"), "rule": RULE,
                   "arm_counts": {a: sum(p.description["arm_counts"][a] for p in parts) for a in arms},
                   "parts": [p.description for p in parts], "note": note}
    return EvaluationData(feedback, first.control, reward_hat, description)


def action_distribution(policy: Policy, data: EvaluationData) -> np.ndarray:
    """The policy's (n, n_arms) probabilities with columns in the experiment's arm order."""
    if sorted(policy.arms) != sorted(data.arms):
        raise DataError(f"policy {policy.name!r} chooses among {policy.arms} but the experiment's arms are {data.arms}",
                        "evaluate a policy against the experiment it was built for")
    probs = policy.action_probabilities(data.frame)
    order = [policy.arms.index(a) for a in data.arms]
    return probs[:, order]


def compare(policies: list[Policy], data: EvaluationData, coefficients: dict[str, float], spec: ExperimentSpec) -> list[dict]:
    """Value, lifts and diagnostics of every policy, one dict per policy.

    ``coefficients`` weigh each metric in the objective. Guardrail metrics of
    ``spec`` also get their harm versus all-control with the one-sided bounds and
    verdict of :mod:`pex.experiment.guardrail` (paired contributions, Fieller's test at
    the limit), and for count or binary metrics the number of events in control.
    """
    baselines = {f"all-{a}": _constant(data, j) for j, a in enumerate(data.arms)}
    dr = ope.DoublyRobust()
    metrics = list(data.rewards)

    def dr_estimates(dist: np.ndarray) -> dict[str, ope.Estimate]:
        return {m: dr.estimate(data.rewards[m], data.action, data.pscore, dist, data.reward_hat[m]) for m in metrics}

    def objective(est: dict[str, ope.Estimate]) -> ope.Estimate:
        contributions = sum(coefficients.get(m, 0.0) * est[m].contributions for m in metrics)
        return ope.Estimate.from_contributions("dr", np.asarray(contributions, dtype=float))

    base_dr = {name: dr_estimates(dist) for name, dist in baselines.items()}
    base_obj = {name: objective(est) for name, est in base_dr.items()}
    # harm is relative to all-control's value on these same units, whose sampling error the rule carries
    rules = rules_for(spec, {m: base_dr[f"all-{data.control}"][m].value for m in metrics})
    events = {m: control_events(data, m) for m in rules}
    control_name = f"all-{data.control}"
    best_arm_name = max(base_obj, key=lambda k: base_obj[k].value)
    rows = []
    for policy in policies:
        dist = action_distribution(policy, data)
        estimates = {m: ope.evaluate(data.rewards[m], data.action, data.pscore, dist, data.reward_hat[m]) for m in metrics}
        dr_est = {m: estimates[m]["dr"] for m in metrics}
        obj = objective(dr_est)
        row = {
            "name": policy.name, "kind": policy.kind, "version": policy.version, "exploration": policy.exploration,
            "value": {m: dr_est[m].to_dict() for m in metrics},
            "estimators": {m: {k: e.to_dict() for k, e in estimates[m].items()} for m in metrics},
            "disagreement": {m: ope.disagreement(list(estimates[m].values())) for m in metrics},
            "diagnostics": ope.diagnostics(data.action, data.pscore, dist),
            "arm_shares": {a: float(dist[:, j].mean()) for j, a in enumerate(data.arms)},
            "lift_vs_control": {m: ope.difference(dr_est[m], base_dr[control_name][m]).to_dict() for m in metrics},
            "best_arm": best_arm_name.removeprefix("all-"),
            "lift_vs_best_arm": {m: ope.difference(dr_est[m], base_dr[best_arm_name][m]).to_dict() for m in metrics},
            "objective": obj.to_dict(),
            "objective_lift_vs_control": ope.difference(obj, base_obj[control_name]).to_dict(),
            "objective_lift_vs_best_arm": ope.difference(obj, base_obj[best_arm_name]).to_dict(),
        }
        row["guardrails"] = {m: guardrail_entry(rule.assess(dr_est[m].contributions - base_dr[control_name][m].contributions,
                                                            base_dr[control_name][m].contributions, control_events=events[m]))
                             for m, rule in rules.items()}
        rows.append(row)
    return rows


def harm_estimates(policies: list[Policy], data: EvaluationData,
                   spec: ExperimentSpec) -> tuple[dict[str, GuardrailRule], dict[tuple[str, str], ope.Estimate]]:
    """The guardrails' rules on ``data`` (relative to all-control's value there) and, per (policy name, guardrail
    with a limit), its harm as an estimate in the form simultaneous bounds need
    (:func:`pex.evaluation.estimators.step_down_upper`), to be held to its rule's limit: the same harm (``value``) and
    standard error (``se``, Fieller's at the limit) as :func:`compare`'s guardrail cells, so that for every ``z``
    ``value + z * se <= limit`` is exactly the rule's test at that ``z``; its contributions are the per-unit
    influence values of :meth:`GuardrailRule.harm_influence`, whose correlation across policies is how alike their
    tests err."""
    dr = ope.DoublyRobust()
    control = {m: dr.estimate(data.rewards[m], data.action, data.pscore, _constant(data, data.arms.index(data.control)),
                              data.reward_hat[m]).contributions for m in data.rewards}
    rules = {m: r for m, r in rules_for(spec, {m: float(c.mean()) for m, c in control.items()}).items()
             if r.has_limit}
    out: dict[tuple[str, str], ope.Estimate] = {}
    for policy in policies:
        dist = action_distribution(policy, data)
        for m, rule in rules.items():
            mine = dr.estimate(data.rewards[m], data.action, data.pscore, dist, data.reward_hat[m]).contributions
            harm, influence = rule.harm_influence(mine - control[m], control[m])
            # centred on the harm, so that the estimate's value is the harm and its spread the test's standard error
            out[(policy.name, m)] = ope.Estimate.from_contributions("harm", influence - influence.mean() + harm)
    return rules, out


def control_events(data: EvaluationData, metric: str) -> float | None:
    """How many events of a count or binary metric (non-negative whole numbers on every unit) the control units of
    ``data`` hold: the sum of the metric over them. None for other metrics. Few events make a ratio bound rough
    (:attr:`pex.experiment.guardrail.Harm.few_events`)."""
    y = data.rewards[metric]
    if not (len(y) and np.all(y >= 0) and np.all(y == np.round(y))):
        return None
    return float(y[data.action == data.arms.index(data.control)].sum())


def guardrail_entry(harm: Harm) -> dict:
    """A comparison row's guardrail cell: the :class:`pex.experiment.guardrail.Harm` fields, plus the harm under the name
    of its basis (``relative_harm`` or ``absolute_harm``) and its one-sided bounds as ``ci_low``/``ci_high``."""
    return {**harm.to_dict(), f"{harm.basis}_harm": harm.estimate, "ci_low": harm.lower, "ci_high": harm.upper}


def _constant(data: EvaluationData, arm: int) -> np.ndarray:
    dist = np.zeros((data.n, len(data.arms)))
    dist[:, arm] = 1.0
    return dist
