"""The workspace: the only module that reads or writes pex's persistent state.

A workspace is a directory (``PEX_HOME``, default ``./.pex``) holding

* ``pex.db`` - metadata in SQLite (WAL mode) through SQLAlchemy, or in
  PostgreSQL when ``PEX_DATABASE_URL`` is set;
* ``artifacts/`` - content-addressed files: datasets as Parquet; fits as
  folders of model files (JSON manifest, LightGBM text models, Parquet).

Policy documents are small JSON and live in the metadata database, versioned
per name, together with their off-policy evaluation.

Writes are atomic. Artifact files are written to a temporary name, flushed to
disk and renamed into place; metadata rows are written in one transaction
after the file is complete, and the file is removed again if that transaction
fails. A reader therefore sees either the old state or the new one.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from pex.errors import NotFoundError, StoreError
from pex.experiment.data import Dataset
from pex.experiment.spec import spec_from_dict
from pex.serialize import jsonable

SCHEMA_VERSION = 1

_metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info", _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

experiments = sa.Table(
    "experiments", _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("owner", sa.String(256), nullable=False, default=""),
    sa.Column("spec", sa.JSON, nullable=False),
    # the dataset version that commands use by default: the one ingested last,
    # also when that ingest found identical data already stored
    sa.Column("current_dataset", sa.String(32), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

dataset_versions = sa.Table(
    "dataset_versions", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("artifact", sa.String(512), nullable=False),
    sa.Column("n_units", sa.Integer, nullable=False),
    sa.Column("n_dropped", sa.Integer, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("experiment", "version", name="uq_dataset_version"),
    sa.UniqueConstraint("experiment", "content_hash", name="uq_dataset_content"),
)

analyses = sa.Table(
    "analyses", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("dataset_id", sa.String(32), sa.ForeignKey("dataset_versions.id"), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


fits = sa.Table(
    "fits", _metadata,
    sa.Column("id", sa.String(48), primary_key=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("dataset_id", sa.String(32), sa.ForeignKey("dataset_versions.id"), nullable=False),
    sa.Column("learner", sa.String(16), nullable=False),
    sa.Column("artifact", sa.String(512), nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

policies = sa.Table(
    "policies", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("fit_id", sa.String(48), sa.ForeignKey("fits.id"), nullable=True),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("evaluation", sa.JSON, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("name", "version", name="uq_policy_version"),
)

# one row per `pex run`: its summary.json, which `pex report` renders again later
runs = sa.Table(
    "runs", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("fit_id", sa.String(48), sa.ForeignKey("fits.id"), nullable=True),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class PolicyRecord:
    """A stored policy version: its ``pex.policy/1`` document and off-policy evaluation."""

    experiment: str
    name: str
    version: int
    kind: str
    fit_id: str | None
    document: dict[str, Any]
    evaluation: dict[str, Any] | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "name": self.name, "version": self.version, "kind": self.kind,
                "fit_id": self.fit_id, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class FitRecord:
    """A stored model fit: its artifact folder holds ``manifest.json`` and model files."""

    id: str
    experiment: str
    dataset_id: str
    learner: str
    artifact: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "experiment": self.experiment, "dataset_id": self.dataset_id,
                "learner": self.learner, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class DatasetVersion:
    """A stored, immutable dataset version."""

    id: str
    experiment: str
    version: int
    content_hash: str
    artifact: str
    n_units: int
    n_dropped: int
    source: str
    created_at: datetime
    created: bool = False  # True when this call stored it, False when it already existed

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "experiment": self.experiment, "version": self.version,
            "content_hash": self.content_hash, "n_units": self.n_units, "n_dropped": self.n_dropped,
            "source": self.source, "created_at": self.created_at.isoformat(), "created": self.created,
        }


def _db(doing: str):
    """Turn database failures inside a Workspace method into a StoreError with a hint."""

    def wrap(method):
        @functools.wraps(method)
        def inner(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except SQLAlchemyError:
                raise self._error(doing) from None
            except OSError as exc:
                raise StoreError(f"cannot {doing} the workspace {self.home}: {exc.strerror or exc}",
                                 "check that PEX_HOME is a writable directory with free space") from None
        return inner

    return wrap


def default_home() -> Path:
    return Path(os.environ.get("PEX_HOME", ".pex"))


def workspace_exists(home: str | Path | None = None) -> bool:
    """Whether opening ``home`` read-only can find metadata (a PEX_DATABASE_URL always may)."""
    if os.environ.get("PEX_DATABASE_URL"):
        return True
    return (Path(home) if home is not None else default_home()).joinpath("pex.db").exists()


class Workspace:
    """Metadata database plus artifact folder.

    Parameters
    ----------
    home
        Workspace directory; defaults to ``PEX_HOME`` or ``./.pex``.
    database_url
        SQLAlchemy URL; defaults to ``PEX_DATABASE_URL`` or SQLite in ``home``.
    create
        Create the workspace when it does not exist. Read-only commands pass
        False so that a typo in ``PEX_HOME`` does not leave empty workspaces behind.
    """

    def __init__(self, home: str | Path | None = None, database_url: str | None = None, *, create: bool = True) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.artifacts = self.home / "artifacts"
        url = database_url or os.environ.get("PEX_DATABASE_URL") or None
        self.is_sqlite = url is None or url.startswith("sqlite")
        if url is None:
            db = self.home / "pex.db"
            if not db.exists() and not create:
                raise NotFoundError(
                    f"no pex workspace at {self.home.resolve()}",
                    "ingest an experiment first (`pex ingest SPEC`), or point PEX_HOME at an existing workspace",
                )
            url = f"sqlite:///{db}"
        if create:
            try:
                self.home.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the workspace {self.home}: {exc.strerror}",
                                 "point --home / PEX_HOME at a writable directory") from None
        try:
            self.engine = sa.create_engine(url)
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot use database URL {_redact(url)}: {exc}",
                             "check PEX_DATABASE_URL, e.g. postgresql+psycopg://user:pass@host/db") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._url = url
        if not create:
            try:
                is_pex = sa.inspect(self.engine).has_table("schema_info")
            except SQLAlchemyError:
                raise self._error("read") from None
            if not is_pex:
                raise StoreError(f"the metadata database {_redact(url)} holds no pex workspace (no such table: schema_info)",
                                 "check PEX_DATABASE_URL / PEX_HOME; the workspace was created by pex with `pex ingest SPEC`")
        # Also for an existing workspace: tables added by a newer pex appear
        # (create_all only creates what is missing and writes nothing otherwise).
        self._create_schema(lock=create or self.home.is_dir())

    def _create_schema(self, lock: bool = True) -> None:
        # Two processes creating the schema at once race on CREATE TABLE and on the
        # version row. The workspace lock serialises them on this host; retries
        # cover processes on other hosts sharing one PostgreSQL database.
        # A read-only open of a database whose workspace folder does not exist
        # (PEX_DATABASE_URL) must not create that folder just to hold a lock file.
        with self._lock() if lock else nullcontext():
            for attempt in range(3):
                try:
                    _metadata.create_all(self.engine)
                    with self.engine.begin() as conn:
                        if conn.execute(sa.select(schema_info.c.value).where(schema_info.c.key == "schema_version")).first() is None:
                            conn.execute(schema_info.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                    return
                except SQLAlchemyError:
                    if attempt == 2:
                        raise self._error("open") from None

    def _error(self, doing: str) -> StoreError:
        exc = sys.exc_info()[1]
        detail = f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}" if exc else ""
        return StoreError(
            f"cannot {doing} the metadata database {_redact(self._url)} ({detail})",
            "check that the database server runs, PEX_DATABASE_URL is right and the workspace was created by pex "
            "(`pex ingest SPEC` creates one)",
        )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- experiments -----------------------------------------------------------------

    @_db("read")
    def list_experiments(self) -> list[dict[str, Any]]:
        """Every experiment with its current dataset version."""
        query = (
            sa.select(experiments, dataset_versions.c.version, dataset_versions.c.n_units)
            .join(dataset_versions, dataset_versions.c.id == experiments.c.current_dataset, isouter=True)
            .order_by(experiments.c.name)
        )
        with self._read() as conn:
            return [
                {"name": r.name, "description": r.description, "owner": r.owner, "current_version": r.version,
                 "n_units": r.n_units, "updated_at": _iso(r.updated_at)}
                for r in conn.execute(query)
            ]

    # -- datasets --------------------------------------------------------------------

    @_db("write")
    def put_dataset(self, dataset: Dataset, source: str = "") -> DatasetVersion:
        """Store a validated dataset as a new version, or return the identical existing one.

        Either way the returned version becomes the experiment's current one.
        """
        spec = dataset.spec
        digest = dataset.content_hash()
        artifact = f"datasets/{digest}.parquet"
        path = self.artifacts / artifact
        with self._lock():  # one writer at a time per workspace: file and row stay in step
            wrote_file = False
            if not path.is_file():
                table = pa.Table.from_pandas(dataset.frame, preserve_index=False)
                _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
                wrote_file = True  # or rewritten: a row may point at a file lost since
            now = datetime.now(UTC)
            spec_dict = spec.to_dict()
            try:
                with self.engine.begin() as conn:
                    row = conn.execute(sa.select(dataset_versions).where(
                        dataset_versions.c.experiment == spec.name, dataset_versions.c.content_hash == digest)).first()
                    values = {"description": spec.description, "owner": spec.owner, "spec": spec_dict, "updated_at": now}
                    if conn.execute(sa.select(experiments.c.name).where(experiments.c.name == spec.name)).first() is None:
                        conn.execute(experiments.insert().values(name=spec.name, created_at=now, **values))
                    if row is not None:
                        conn.execute(experiments.update().where(experiments.c.name == spec.name)
                                     .values(current_dataset=row.id, updated_at=now))
                        return _dataset_version(row)
                    version = conn.execute(
                        sa.select(sa.func.coalesce(sa.func.max(dataset_versions.c.version), 0))
                        .where(dataset_versions.c.experiment == spec.name)
                    ).scalar_one() + 1
                    dataset_id = f"{spec.name[:15]}-{digest[:16]}"
                    conn.execute(dataset_versions.insert().values(
                        id=dataset_id, experiment=spec.name, version=version, content_hash=digest,
                        artifact=artifact, n_units=dataset.n_units, n_dropped=dataset.n_dropped,
                        source=source, spec=spec_dict, summary=jsonable(dataset.summary()), created_at=now,
                    ))
                    conn.execute(experiments.update().where(experiments.c.name == spec.name)
                                 .values(current_dataset=dataset_id, **values))
            except SQLAlchemyError:
                if wrote_file and not self._artifact_referenced(artifact):
                    path.unlink(missing_ok=True)
                raise StoreError("could not record the dataset version: " + str(sys.exc_info()[1]).splitlines()[0],
                                 "nothing was stored; retry, and check the database if it fails again") from None
        return DatasetVersion(dataset_id, spec.name, version, digest, artifact, dataset.n_units,
                              dataset.n_dropped, source, now, created=True)

    @_db("read")
    def dataset_version(self, experiment: str, version: int | None = None) -> DatasetVersion:
        """The given dataset version of an experiment (default: its current one)."""
        found = self._find_dataset(experiment, version=version)
        if found is None:
            names = [e["name"] for e in self.list_experiments()]
            if experiment not in names:
                hint = f"known experiments: {', '.join(names)}" if names else "ingest one first: pex ingest SPEC"
                raise NotFoundError(f"no experiment named {experiment!r} in this workspace", hint)
            raise NotFoundError(f"experiment {experiment!r} has no dataset version {version}", "list versions with `pex experiments`")
        return found

    @_db("read")
    def load_dataset(self, experiment: str, version: int | None = None) -> tuple[Dataset, DatasetVersion]:
        """Read a stored dataset version back into a :class:`Dataset`."""
        dv = self.dataset_version(experiment, version)
        with self._read() as conn:
            row = conn.execute(sa.select(dataset_versions.c.spec, dataset_versions.c.summary)
                               .where(dataset_versions.c.id == dv.id)).one()
        path = self.artifacts / dv.artifact
        if not path.is_file():
            raise StoreError(f"dataset artifact {path} is missing",
                             "the artifact folder was changed by hand or belongs to another workspace; "
                             "`pex ingest` the same data again to restore it")
        try:
            frame = pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise StoreError(f"dataset artifact {path} is unreadable: {str(exc).splitlines()[0]}",
                             "delete the file and `pex ingest` the same data again to restore it") from None
        summary = row.summary
        dataset = Dataset(
            spec=spec_from_dict(row.spec), frame=frame, arms=summary["arms"], features=summary["features"],
            metric_types=summary["metric_types"], propensity_source=summary["propensity_source"],
            missing={c: int(frame[c].isna().sum()) for c in frame.columns},
            n_rows_read=summary["n_rows_read"], dropped=summary["dropped"], warnings=summary["warnings"],
        )
        return dataset, dv

    @_db("read")
    def load_dataset_spec(self, dataset_id: str):
        """The spec a dataset version was ingested with."""
        with self._read() as conn:
            row = conn.execute(sa.select(dataset_versions.c.spec).where(dataset_versions.c.id == dataset_id)).first()
        if row is None:
            raise NotFoundError(f"no dataset version {dataset_id!r}", "list experiments with `pex experiments`")
        return spec_from_dict(row.spec)

    @_db("read")
    def list_dataset_versions(self, experiment: str) -> list[DatasetVersion]:
        with self._read() as conn:
            rows = conn.execute(sa.select(dataset_versions).where(dataset_versions.c.experiment == experiment)
                                .order_by(dataset_versions.c.version)).all()
        return [_dataset_version(r) for r in rows]

    # -- analyses --------------------------------------------------------------------

    @_db("write")
    def put_analysis(self, experiment: str, dataset_id: str, result: dict[str, Any]) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(analyses.insert().values(
                experiment=experiment, dataset_id=dataset_id, result=jsonable(result),
                created_at=datetime.now(UTC),
            )).inserted_primary_key[0])

    @_db("read")
    def latest_analysis(self, experiment: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(sa.select(analyses.c.result).where(analyses.c.experiment == experiment)
                               .order_by(analyses.c.id.desc()).limit(1)).first()
        return row.result if row else None

    # -- model fits ------------------------------------------------------------------

    @_db("write")
    def put_fit(self, dataset_id: str, learner: str, files: dict[str, str | bytes], summary: dict[str, Any]) -> FitRecord:
        """Store a fit's files (relative path -> text or bytes) and summary, linked to its dataset version.

        The files are written into a temporary folder that is renamed into
        place, then the row is committed; a failure removes the folder again.
        """
        with self._read() as conn:
            ds = conn.execute(sa.select(dataset_versions.c.experiment).where(dataset_versions.c.id == dataset_id)).first()
        if ds is None:
            raise NotFoundError(f"no dataset version {dataset_id!r}", "fit a stored dataset version")
        now = datetime.now(UTC)
        fit_id = f"{ds.experiment[:15]}-fit-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        artifact = f"fits/{fit_id}"
        final = self.artifacts / artifact
        with self._lock():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{fit_id}.", dir=final.parent))
            try:
                for rel, text in files.items():
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as fh:
                        fh.write(text.encode("utf-8") if isinstance(text, str) else text)
                        fh.flush()
                        os.fsync(fh.fileno())
                os.replace(tmp, final)
                _fsync_dir(final.parent)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            try:
                with self.engine.begin() as conn:
                    conn.execute(fits.insert().values(id=fit_id, experiment=ds.experiment, dataset_id=dataset_id,
                                                      learner=learner, artifact=artifact, summary=jsonable(summary),
                                                      created_at=now))
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
        return FitRecord(fit_id, ds.experiment, dataset_id, learner, artifact, now)

    @_db("read")
    def get_fit(self, experiment: str, fit_id: str | None = None) -> tuple[FitRecord, dict[str, Any]]:
        """A fit (default: the newest of the experiment) and its summary."""
        query = sa.select(fits).where(fits.c.experiment == experiment)
        if fit_id is not None:
            query = query.where(fits.c.id == fit_id)
        with self._read() as conn:
            row = conn.execute(query.order_by(fits.c.created_at.desc(), fits.c.id.desc()).limit(1)).first()
        if row is None:
            self.dataset_version(experiment)  # NotFoundError for an unknown experiment
            if fit_id:
                raise NotFoundError(f"experiment {experiment!r} has no fit {fit_id!r}",
                                    f"leave out --fit to use the newest fit, or use an id printed by `pex fit {experiment}`")
            raise NotFoundError(f"experiment {experiment!r} has no fitted effect models", f"run `pex fit {experiment}` first")
        return FitRecord(row.id, row.experiment, row.dataset_id, row.learner, row.artifact, _utc(row.created_at)), row.summary

    def read_fit_file(self, record: FitRecord, rel: str) -> str:
        return self.read_fit_bytes(record, rel).decode("utf-8")

    def read_fit_bytes(self, record: FitRecord, rel: str) -> bytes:
        path = self.artifacts / record.artifact / rel
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StoreError(f"model file {path} cannot be read: {exc.strerror}",
                             f"the artifact folder was changed by hand; run `pex fit {record.experiment}` again") from None

    @_db("read")
    def find_fit(self, fit_id: str) -> tuple[FitRecord, dict[str, Any]]:
        """A fit by id alone (policy documents name their fit)."""
        with self._read() as conn:
            row = conn.execute(sa.select(fits).where(fits.c.id == fit_id)).first()
        if row is None:
            raise NotFoundError(f"no fit {fit_id!r} in this workspace",
                                "the policy was built in another workspace; "
                                "point PEX_HOME there or rebuild it with `pex policies NAME --rebuild`")
        return FitRecord(row.id, row.experiment, row.dataset_id, row.learner, row.artifact, _utc(row.created_at)), row.summary

    # -- policies --------------------------------------------------------------------

    @_db("write")
    def put_policies(self, experiment: str, items: list[tuple[dict[str, Any], dict[str, Any] | None]],
                     fit_id: str | None = None) -> list[PolicyRecord]:
        """Store policy documents (each with its evaluation) as new versions, all in one transaction.

        A document's ``version`` is set to one more than the newest stored
        version of that name.
        """
        now = datetime.now(UTC)
        out = []
        with self._lock(), self.engine.begin() as conn:
            if conn.execute(sa.select(experiments.c.name).where(experiments.c.name == experiment)).first() is None:
                raise NotFoundError(f"no experiment {experiment!r} in this workspace", "ingest it first with `pex ingest SPEC`")
            for document, evaluation in items:
                name = document["name"]
                latest = conn.execute(sa.select(sa.func.max(policies.c.version)).where(policies.c.name == name)).scalar()
                other = conn.execute(sa.select(policies.c.experiment).where(policies.c.name == name).limit(1)).scalar()
                if other is not None and other != experiment:
                    raise StoreError(f"policy name {name!r} is already used by experiment {other!r}",
                                     "policy names are unique in a workspace; rename it")
                doc = jsonable({**document, "version": (latest or 0) + 1})
                if evaluation is not None:
                    evaluation = jsonable({**evaluation, "version": doc["version"]})
                conn.execute(policies.insert().values(experiment=experiment, name=name, version=doc["version"], kind=doc["kind"],
                                                      fit_id=fit_id, document=doc, evaluation=evaluation, created_at=now))
                out.append(PolicyRecord(experiment, name, doc["version"], doc["kind"], fit_id, doc, evaluation, now))
        return out

    @_db("read")
    def get_policy(self, name: str, version: int | None = None) -> PolicyRecord:
        """A stored policy by name (default: its newest version)."""
        query = sa.select(policies).where(policies.c.name == name)
        if version is not None:
            query = query.where(policies.c.version == version)
        with self._read() as conn:
            row = conn.execute(query.order_by(policies.c.version.desc()).limit(1)).first()
        if row is None:
            known = self._policy_names()
            raise NotFoundError(f"no policy {name!r}{f' version {version}' if version else ''} in this workspace",
                                f"known policies: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}" if known
                                else "build policies with `pex policies NAME`, or pass a policy JSON file")
        return _policy_record(row)

    @_db("read")
    def list_policies(self, experiment: str, fit_id: str | None = None) -> list[PolicyRecord]:
        """The newest version of every policy of an experiment (optionally: built from one fit), oldest name first."""
        self.dataset_version(experiment)  # NotFoundError for an unknown experiment
        scope = policies.c.experiment == experiment
        if fit_id is not None:
            scope = scope & (policies.c.fit_id == fit_id)  # the newest version built from that fit
        newest = (sa.select(policies.c.name, sa.func.max(policies.c.version).label("version"))
                  .where(scope).group_by(policies.c.name).subquery())
        query = sa.select(policies).join(newest, (policies.c.name == newest.c.name) & (policies.c.version == newest.c.version))
        with self._read() as conn:
            rows = conn.execute(query.order_by(policies.c.id)).all()
        return [_policy_record(r) for r in rows]

    # -- pipeline runs ---------------------------------------------------------------

    @_db("write")
    def put_run(self, experiment: str, summary: dict[str, Any], fit_id: str | None = None) -> int:
        """Store the summary of one `pex run` (the report is rendered from it)."""
        with self.engine.begin() as conn:
            return int(conn.execute(runs.insert().values(
                experiment=experiment, fit_id=fit_id, summary=jsonable(summary), created_at=datetime.now(UTC),
            )).inserted_primary_key[0])

    @_db("read")
    def latest_run(self, experiment: str) -> dict[str, Any]:
        """The summary of the newest `pex run` of an experiment."""
        self.dataset_version(experiment)  # NotFoundError for an unknown experiment
        with self._read() as conn:
            row = conn.execute(sa.select(runs.c.summary).where(runs.c.experiment == experiment)
                               .order_by(runs.c.id.desc()).limit(1)).first()
        if row is None:
            raise NotFoundError(f"experiment {experiment!r} has no pipeline run yet",
                                "run the whole pipeline first: `pex run SPEC` (the spec of that experiment)")
        return row.summary

    def _policy_names(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(sa.select(policies.c.name).distinct().order_by(policies.c.name))]

    # -- helpers ---------------------------------------------------------------------

    def _read(self):
        return self.engine.connect()

    @contextmanager
    def _lock(self):
        """An exclusive advisory lock on the workspace (across processes on this host)."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            fh = open(self.home / ".lock", "a+b")
        except OSError as exc:
            raise StoreError(f"cannot lock the workspace {self.home}: {exc.strerror}", "check that PEX_HOME is writable") from None
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _artifact_referenced(self, artifact: str) -> bool:
        try:
            with self._read() as conn:
                return conn.execute(sa.select(dataset_versions.c.id)
                                    .where(dataset_versions.c.artifact == artifact).limit(1)).first() is not None
        except SQLAlchemyError:
            return True  # cannot tell: keeping a complete file is safe, deleting a used one is not

    def _find_dataset(self, experiment: str, *, content_hash: str | None = None, version: int | None = None) -> DatasetVersion | None:
        query = sa.select(dataset_versions).where(dataset_versions.c.experiment == experiment)
        if content_hash is not None:
            query = query.where(dataset_versions.c.content_hash == content_hash)
        if version is not None:
            query = query.where(dataset_versions.c.version == version)
        elif content_hash is None:
            current = sa.select(experiments.c.current_dataset).where(experiments.c.name == experiment).scalar_subquery()
            query = query.where(dataset_versions.c.id == current)
        with self._read() as conn:
            row = conn.execute(query.order_by(dataset_versions.c.version.desc()).limit(1)).first()
        return _dataset_version(row) if row else None


def _policy_record(row: Any) -> PolicyRecord:
    return PolicyRecord(row.experiment, row.name, row.version, row.kind, row.fit_id, row.document, row.evaluation,
                        _utc(row.created_at))


def _dataset_version(row: Any) -> DatasetVersion:
    return DatasetVersion(row.id, row.experiment, row.version, row.content_hash, row.artifact,
                          row.n_units, row.n_dropped, row.source, _utc(row.created_at))


def _utc(value: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were stored in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write a file so that it either appears complete under ``path`` or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"
