"""Commands for the feedback a served policy produces: outcomes in, logged decisions out."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
