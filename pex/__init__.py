"""pex: personalized experimentation from randomized A/B tests.

From one experiment's data to health checks, average effects, heterogeneous
effects, policies, their off-policy value and a recommendation:
``pex.run("experiments/x.toml")`` does it all (see :func:`pex.services.run.run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pex.errors import PexError
from pex.version import __version__

if TYPE_CHECKING:
    from pex.services.run import RunResult


def run(spec_path: str | Path, out: str | Path | None = None, **kwargs: Any) -> RunResult:
    """The whole offline pipeline (:func:`pex.services.run.run`); imported on first use to keep ``import pex`` light."""
    from pex.services.run import run as _run

    return _run(spec_path, out, **kwargs)


__all__ = ["PexError", "__version__", "run"]
