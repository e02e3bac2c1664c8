"""The workspace: experiments, dataset versions, fits, policies and runs in SQL, artifacts as files.

Imports no modelling module: what it stores it keeps as documents, tables and files. ``workspace`` is the
entry point (``Workspace``); ``schema`` holds the tables and ``migrations/`` the Alembic revisions that make
them, which ``migrate`` applies when a workspace is opened for writing.
"""
