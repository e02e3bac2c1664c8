"""The workspace: the only place that reads or writes pex's persistent state.

A workspace is a directory (``PEX_HOME``, default ``./.pex``) holding

* ``pex.db`` - metadata in SQLite (WAL mode) through SQLAlchemy, or in
  PostgreSQL when ``PEX_DATABASE_URL`` is set; its schema is versioned by
  Alembic migrations (:mod:`pex.store.migrate`);
* ``artifacts/`` - content-addressed files: datasets as Parquet; fits as
  folders of model files (JSON manifest, LightGBM text models, Parquet).

Policy documents are small JSON and live in the metadata database, versioned
per name, together with their off-policy evaluation.

Writes are atomic. Artifact files are written to a temporary name, flushed to
disk and renamed into place (:mod:`pex.files`); metadata rows are written in one
transaction after the file is complete, and the file is removed again if that
transaction fails. A reader therefore sees either the old state or the new one.
Reads take no lock.

The parts live in their own modules (engine, schema, migrate, records, and one
per aggregate: experiments, fits, policies, runs, decisions and outcomes, releases, tokens, online loops, background
jobs, the monitor's hourly rollups); this module composes them and
keeps the names the rest of pex imports.
"""

from __future__ import annotations

from pex.store.base import WorkspaceBase
from pex.store.decisions import DecisionsMixin
from pex.store.engine import default_home, workspace_exists
from pex.store.experiments import ExperimentsMixin
from pex.store.fits import FitsMixin
from pex.store.jobs import JobRecord, JobsMixin
from pex.store.monitoring import MonitorReportsMixin
from pex.store.online import OnlineLoop, OnlineMixin, OnlineRound
from pex.store.policies import PoliciesMixin
from pex.store.records import DatasetVersion, FitRecord, PolicyRecord
from pex.store.releases import Release, ReleasesMixin
from pex.store.rollouts import RolloutsMixin
from pex.store.rollups import RollupsMixin
from pex.store.runs import RunsMixin
from pex.store.tokens import TokenRecord, TokensMixin

__all__ = ["DatasetVersion", "FitRecord", "JobRecord", "OnlineLoop", "OnlineRound", "PolicyRecord",
           "Release", "TokenRecord", "Workspace",
           "default_home",
           "workspace_exists"]


class Workspace(ExperimentsMixin, FitsMixin, PoliciesMixin, RunsMixin, DecisionsMixin, ReleasesMixin, TokensMixin,
                OnlineMixin, JobsMixin, RollupsMixin, RolloutsMixin, MonitorReportsMixin, WorkspaceBase):
    """Metadata database plus artifact folder.

    Parameters
    ----------
    home
        Workspace directory; defaults to ``PEX_HOME`` or ``./.pex``.
    database_url
        SQLAlchemy URL; defaults to ``PEX_DATABASE_URL`` or SQLite in ``home``.
    create
        Create the workspace when it does not exist (and upgrade an older schema).
        Read-only commands pass False so that a typo in ``PEX_HOME`` does not leave
        empty workspaces behind; such an open neither locks nor writes.
    """

    def __enter__(self) -> Workspace:
        return self
