"""The ``pex`` command line: parsing, one service call, formatting (:mod:`pex.cli.main`)."""
