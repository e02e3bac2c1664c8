"""Policies: documents that map a unit's features to an arm, and how they are built.

:mod:`pex.policy.base` is the policy document, its registry of kinds and their decisions (what serving
needs); :mod:`pex.policy.value` the value-model policy; :mod:`pex.policy.routing` policies routed to by unit hash;
:mod:`pex.policy.distill`, :mod:`pex.policy.policy_tree` and :mod:`pex.policy.constrained` build trees.
"""

from pex.compat import forward
from pex.policy.base import (
    FORMAT,
    KINDS,
    ConstantPolicy,
    Policy,
    PolicyError,
    TreePolicy,
    constant_policy,
    uniform_policy,
)
from pex.policy.routing import RoutingPolicy  # importing it registers the "routing" kind
from pex.policy.value import ValuePolicy  # importing it registers the "value" kind

__all__ = ["FORMAT", "KINDS", "ConstantPolicy", "Policy", "PolicyError", "RoutingPolicy", "TreePolicy", "ValuePolicy", "constant_policy",
           "uniform_policy"]

# the other names of pex 0.1's pex/policy.py
__getattr__ = forward(__name__, "pex.policy.base", "pex.policy.value")
