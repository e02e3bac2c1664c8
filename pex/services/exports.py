"""A policy written out for use outside pex: its JSON document, or (constant and tree policies) one SQL expression."""

from __future__ import annotations

from collections.abc import Callable

from pex.policy.base import Policy
from pex.services.models import load_policy
from pex.store.workspace import Workspace

FORMATS = ("sql", "json")


def export_policy(policy_ref: str, workspace: Callable[[], Workspace], fmt: str) -> tuple[str, Policy]:
    """The text of a stored policy (or policy file) in ``fmt`` (one of :data:`FORMATS`), and the policy.

    SQL is a ``CASE`` expression giving each row's greedy arm, headed by comments saying which policy it is and
    what it does not do (exploration), e.g. ``SELECT user_id, <expression> AS arm FROM users``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    policy, _record = load_policy(policy_ref, workspace)
    if fmt == "json":
        return policy.to_json() + "\n", policy
    expression = policy.sql_case()
    header = (f"-- pex policy {policy.name} v{policy.version} ({policy.description}): each row's greedy arm.\n"
              f"-- Reads {', '.join(policy.features) or 'no column'}; missing values are NULL and follow the tree's "
              "declared side; category columns hold text labels.\n"
              f"-- Exploration ({policy.exploration:g}) is not applied: serve with `pex decide` to log propensities.\n")
    return header + expression + "\n", policy
