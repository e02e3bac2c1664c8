"""Staged rollouts of a policy version (canary, ramp, holdout): one row per rollout, its step and status."""

from __future__ import annotations


class RolloutsMixin:
    """Workspace methods for staged rollouts (:mod:`pex.services.rollout`)."""
