"""Policies: documents that map a unit's features to an arm, and how they are built.

:mod:`pex.policy.base` is the policy document and its decisions (what serving
needs); :mod:`pex.policy.value` the value-model policy; :mod:`pex.policy.distill`,
:mod:`pex.policy.policy_tree` and :mod:`pex.policy.constrained` build trees.
"""

from pex.policy import value as _value  # registers the "value" kind  # noqa: F401
from pex.policy.base import FORMAT, KINDS, Policy, PolicyError, constant_policy, uniform_policy

__all__ = ["FORMAT", "KINDS", "Policy", "PolicyError", "constant_policy", "uniform_policy"]
