"""`pex monitor NAME [--watch]`: drift, staleness and live guardrails of live policies."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
