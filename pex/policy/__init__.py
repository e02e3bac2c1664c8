"""Policies: documents that map a unit's features to an arm, and how they are built.

What serving needs: :mod:`pex.policy.base` is the policy document, the base class of its kinds and their
registry; each kind is a module (:mod:`pex.policy.constant`, :mod:`pex.policy.tree`, :mod:`pex.policy.value`
the value-model policy, :mod:`pex.policy.routing` policies routed to by unit hash); :mod:`pex.policy.draws`
the reproducible per-unit draws; :mod:`pex.policy.records` the check of a unit's JSON features.
Exports: :mod:`pex.policy.sql` and :mod:`pex.policy.onnx`. Training: :mod:`pex.policy.distill`,
:mod:`pex.policy.policy_tree` and :mod:`pex.policy.constrained` build trees.
"""

# Importing a kind's module registers the kind (pex.policy.base), and every module of this package runs this
# file first: so Policy.from_document reads a document of any kind whichever module a caller imported.
from pex.policy import constant, routing, tree, value  # noqa: F401
