"""pex: personalized experimentation from randomized A/B tests.

From one experiment's data to health checks, average effects, heterogeneous
effects, policies, their off-policy value and a recommendation:
``pex.run("experiments/x.toml")`` does it all (see :func:`pex.services.run.run`).
"""

from pex import compat
from pex.errors import PexError
from pex.version import __version__

compat.install()


def run(spec_path, out=None, **kwargs):
    """The whole offline pipeline (:func:`pex.services.run.run`); imported on first use to keep ``import pex`` light."""
    from pex.services.run import run as _run

    return _run(spec_path, out, **kwargs)


__all__ = ["PexError", "__version__", "run"]
