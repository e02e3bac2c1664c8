"""Value one policy off-policy on the held-out units it may honestly be valued on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pex.errors import PexError
from pex.evaluation.comparison import compare
from pex.policy.base import Policy
from pex.services.models import load_policy
from pex.services.policies import load_fit, objective_coefficients
from pex.store.workspace import PolicyRecord, Workspace


def own_fit(policy: Policy, record: PolicyRecord | None) -> str | None:
    """The fit a policy was built from, if it says: its value model's, its stored record's, or its lineage's."""
    if policy.value_model is not None:
        return policy.value_model["fit"]
    if record is not None and record.fit_id:
        return record.fit_id
    return policy.lineage.get("fit_run") if isinstance(policy.lineage, dict) else None


def evaluate_policy(workspace: Callable[[], Workspace], name: str, policy_ref: str,
                    fit_id: str | None = None) -> dict[str, Any]:
    """Value, lifts, guardrail verdicts and diagnostics of one policy (a stored name or a JSON file) on ``name``'s
    held-out units, with the objective it was built for (the defaults when it does not say)."""
    policy, record = load_policy(policy_ref, workspace)
    if policy.experiment and policy.experiment != name:
        raise PexError(f"policy {policy.name!r} was built for experiment {policy.experiment!r}, not {name!r}",
                       f"run `pex evaluate {policy.experiment} {policy_ref}`")
    # another fit's held-out units may be units this policy's models were trained on
    built_from = own_fit(policy, record)
    if fit_id is not None and built_from is not None and fit_id != built_from:
        raise PexError(f"policy {policy.name!r} was built from fit {built_from}; the held-out units of fit {fit_id} may include "
                       "units its models were trained on", f"leave out --fit to evaluate it on the held-out units of {built_from}")
    fit = load_fit(workspace(), name, fit_id or built_from)
    data = fit.evaluation()
    built_for = policy.lineage.get("objective", {}) if isinstance(policy.lineage, dict) else {}
    coefficients = objective_coefficients(fit.dataset.spec, fit.training_frame(), built_for.get("weights"),
                                          built_for.get("guardrails", "constraint"))
    row = compare([policy], data, coefficients, fit.dataset.spec)[0]
    row["evaluation_rows"] = {**data.description, "fit": fit.record.id}
    return row
