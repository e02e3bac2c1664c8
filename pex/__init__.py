"""pex: personalized experimentation from randomized A/B tests.

From one experiment's data to health checks, average effects and (in later
modules) heterogeneous effects, policies and their off-policy value.
"""

__version__ = "0.1.0"

from pex.errors import PexError  # noqa: E402

__all__ = ["PexError", "__version__"]
