"""`pex rollout status|stop NAME`: staged rollouts of a policy version."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
