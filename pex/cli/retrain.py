"""`pex retrain NAME`: a new dataset version from the decision log joined with outcomes, fitted, certified and proposed as a canary."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
