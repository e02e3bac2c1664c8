"""The workspace: experiments, dataset versions, fits, policies and runs in SQL, artifacts as files.

Imports no modelling module: what it stores it keeps as documents, tables and files.
"""
