"""Commands for serving policies: the HTTP server, publishing versions, API tokens."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
