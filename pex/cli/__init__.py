"""The ``pex`` command line: parsing, one service call, formatting (:mod:`pex.cli.main`)."""

from pex.cli.main import cli, entry, main
from pex.compat import forward

__all__ = ["cli", "entry", "main"]

# the other names of pex 0.1's pex/cli.py
__getattr__ = forward(__name__, "pex.cli.main")
