"""The pex release, in one place (the package, the CLI and every written summary say it)."""

__version__ = "0.1.0"
