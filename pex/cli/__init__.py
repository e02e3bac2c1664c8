"""The ``pex`` command line: parsing, one service call, formatting (:mod:`pex.cli.main`)."""

from pex.cli.main import cli, entry, main

__all__ = ["cli", "entry", "main"]
