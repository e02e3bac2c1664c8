"""Value one policy off-policy: on the held-out units it may honestly be valued on, or on logged feedback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pex.errors import DataError, PexError
from pex.evaluation.comparison import compare
from pex.evaluation.feedback import LoggedFeedback
from pex.evaluation.logged import value_on_logged
from pex.experiment.data import read_table
from pex.policy.base import Policy
from pex.policy.value import ValuePolicy
from pex.services.crossfit import CrossFit
from pex.services.models import load_policy
from pex.services.outcomes import experiment_spec
from pex.services.policies import load_fit, objective_coefficients
from pex.store.workspace import PolicyRecord, Workspace


def own_fit(policy: Policy, record: PolicyRecord | None) -> str | None:
    """The fit a policy was built from, if it says: its value model's, its stored record's, or its lineage's."""
    if isinstance(policy, ValuePolicy):
        return policy.value_model["fit"]
    if record is not None and record.fit_id:
        return record.fit_id
    return policy.lineage.get("fit_run") if isinstance(policy.lineage, dict) else None


def evaluate_policy(workspace: Callable[[], Workspace], experiment: str, policy_ref: str,
                    fit_id: str | None = None) -> dict[str, Any]:
    """Value, lifts, guardrail verdicts and diagnostics of one policy (a stored name or a JSON file) on ``experiment``'s
    held-out units, with the objective it was built for (the defaults when it does not say): a cross-fitted policy
    on the units of all its folds, each under the route whose fit held it out, as its run valued it."""
    policy, record = _checked_policy(workspace, experiment, policy_ref)
    folds = (policy.lineage.get("crossfit") or {}).get("fits") if isinstance(policy.lineage, dict) else None
    if not folds or fit_id is not None:
        # another fit's held-out units may be units this policy's models were trained on
        built_from = own_fit(policy, record)
        if fit_id is not None and built_from is not None and fit_id != built_from:
            raise PexError(f"policy {policy.name!r} was built from fit {built_from}; the held-out units of fit {fit_id} may "
                           "include units its models were trained on",
                           f"leave out --fit to evaluate it on the held-out units of {built_from}")
        folds = [fit_id or built_from]
    crossfit = CrossFit.of([load_fit(workspace(), experiment, fit) for fit in folds])
    spec = crossfit.contexts[0].dataset.spec
    built_for = policy.lineage.get("objective", {}) if isinstance(policy.lineage, dict) else {}
    coefficients = objective_coefficients(spec, crossfit.building_frame(), built_for.get("weights"),
                                          built_for.get("guardrails", "constraint"))
    row = compare([policy], crossfit.evaluation, coefficients, spec)[0]
    fits = [c.record.id for c in crossfit.contexts]
    row["evaluation_rows"] = {**crossfit.evaluation.description, "fit": fits if crossfit.folds.crossed else fits[0]}
    return row


def _checked_policy(workspace: Callable[[], Workspace], experiment: str, policy_ref: str) -> tuple[Policy, PolicyRecord | None]:
    policy, record = load_policy(workspace, policy_ref)
    if policy.experiment and policy.experiment != experiment:
        raise PexError(f"policy {policy.name!r} was built for experiment {policy.experiment!r}, not {experiment!r}",
                       f"run `pex evaluate {policy.experiment} {policy_ref}`")
    return policy, record


def evaluate_logged(workspace: Callable[[], Workspace], experiment: str, policy_ref: str, path: str | Path) -> dict[str, Any]:
    """IPS and SNIPS per metric of one policy (a stored name or a JSON file) on a logged-feedback file of ``experiment``
    (``pex decisions NAME --out FILE``), beside the served policy's observed mean, with weight diagnostics."""
    policy, _record = _checked_policy(workspace, experiment, policy_ref)
    spec = experiment_spec(workspace(), experiment)
    source = Path(path).name
    frame = read_table(path, text_columns=("decision_id", "unit", "policy", "arm", *policy.categorical_features()))
    hint = f"write it with `pex decisions {experiment} --out FILE`"
    for column in ("arm", "propensity"):
        if column not in frame.columns:
            raise DataError(f"{source} has no {column!r} column: it is not a logged-feedback file", hint)
    metrics = [m for m in spec.metrics if m in frame.columns]
    if not metrics:
        raise DataError(f"{source} has no column for a metric of {experiment!r} ({', '.join(spec.metrics)})", hint)
    if len(frame) < 2:
        raise DataError(f"{source} has {len(frame)} rows; off-policy estimates need at least 2", "log more decisions first")
    missing_arm = frame["arm"].isna()
    if missing_arm.any():
        raise DataError(f"row {int(missing_arm.to_numpy().argmax()) + 1} of {source} has no arm", hint)
    unknown = sorted(set(frame["arm"].astype(str)) - set(policy.arms))
    if unknown:
        raise DataError(f"the logged decisions chose arm {unknown[0]!r}, which policy {policy.name!r} does not have "
                        f"(its arms: {', '.join(policy.arms)})",
                        "evaluate a policy over the arms that were served, or export only the decisions of a policy with "
                        "the same arms (`pex decisions NAME --policy P`)")
    propensity = frame["propensity"]
    if propensity.dtype.kind not in "fi":
        raise DataError(f"the propensity column of {source} holds text", "a propensity is a probability in (0, 1]")
    policy.check_frame(frame, source=source)
    feedback = LoggedFeedback.from_frame(frame, arms=policy.arms, arm_column="arm", propensity_column="propensity",
                                         reward_columns={m: m for m in metrics},
                                         source=f"logged decisions in {source}, propensities as served")
    result = value_on_logged(feedback, policy.action_probabilities(frame))
    served = (frame.groupby(["policy", "version"]).size() if {"policy", "version"} <= set(frame.columns) else None)
    return {"name": policy.name, "kind": policy.kind, "version": policy.version, "exploration": policy.exploration,
            "experiment": experiment,
            "logged": {"file": str(path), "rows": len(frame), "source": feedback.source,
                       "served": {f"{p} v{v}": int(c) for (p, v), c in served.items()} if served is not None else {}},
            **result}
