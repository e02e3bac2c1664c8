"""`pex check [NAME]`: every alert rule, one line per firing rule, non-zero exit when any fires."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
