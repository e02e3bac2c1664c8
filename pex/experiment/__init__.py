"""The experiment: its spec, its data and what is measured from the data alone.

Spec and data loading, feature encoding, the held-out split, average effects,
balance checks, the guardrail rule, and the simulator with its ground truth.
Imports nothing else from pex but :mod:`pex.errors`.
"""
