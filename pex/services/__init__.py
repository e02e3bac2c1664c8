"""Use cases over the store, the ones the CLI (and later the web app) call: one function per thing a user does.

Every use case takes the workspace first, as ``ws: Workspace`` (open, the caller closes it), or as
``workspace: Callable[[], Workspace]`` when it may finish without one (a policy file, input that fails
validation) and opens it on first need; an experiment is named by ``experiment: str``.
"""
