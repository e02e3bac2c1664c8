"""Experiments, their immutable dataset versions (Parquet artifacts, content-addressed) and their analyses."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from pex.errors import NotFoundError, StoreError
from pex.experiment.data import Dataset
from pex.experiment.spec import ExperimentSpec, spec_from_dict
from pex.files import replacing
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import DatasetVersion, iso
from pex.store.records import dataset_version as version_record
from pex.store.schema import analyses, dataset_versions, experiments


class ExperimentsMixin:
    """Workspace methods for experiments, dataset versions and analyses."""

    @db("read")
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
                 "n_units": r.n_units, "updated_at": iso(r.updated_at)}
                for r in conn.execute(query)
            ]

    @db("write")
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
                with replacing(path) as tmp:
                    pq.write_table(table, tmp)
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
                        return version_record(row)
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

    @db("read")
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

    @db("read")
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

    @db("read")
    def load_dataset_spec(self, dataset_id: str) -> ExperimentSpec:
        """The spec a dataset version was ingested with."""
        with self._read() as conn:
            row = conn.execute(sa.select(dataset_versions.c.spec).where(dataset_versions.c.id == dataset_id)).first()
        if row is None:
            raise NotFoundError(f"no dataset version {dataset_id!r}", "list experiments with `pex experiments`")
        return spec_from_dict(row.spec)

    @db("read")
    def dataset_metric_types(self, dataset_id: str) -> dict[str, str]:
        """Each metric's type in a dataset version, as ingest found it: ``"binary"`` (every value 0 or 1) or
        ``"continuous"``; the same types the models and estimators use (:attr:`pex.experiment.data.Dataset.metric_types`)."""
        with self._read() as conn:
            row = conn.execute(sa.select(dataset_versions.c.summary).where(dataset_versions.c.id == dataset_id)).first()
        if row is None:
            raise NotFoundError(f"no dataset version {dataset_id!r}", "list experiments with `pex experiments`")
        return dict(row.summary.get("metric_types", {}))

    @db("read")
    def list_dataset_versions(self, experiment: str) -> list[DatasetVersion]:
        """Every dataset version of an experiment, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(dataset_versions).where(dataset_versions.c.experiment == experiment)
                                .order_by(dataset_versions.c.version)).all()
        return [version_record(r) for r in rows]

    @db("write")
    def put_analysis(self, experiment: str, dataset_id: str, result: dict[str, Any]) -> int:
        """Store the result of `pex analyze` for a dataset version; returns its id."""
        with self.engine.begin() as conn:
            return int(conn.execute(analyses.insert().values(
                experiment=experiment, dataset_id=dataset_id, result=jsonable(result),
                created_at=datetime.now(UTC),
            )).inserted_primary_key[0])

    @db("read")
    def latest_analysis(self, experiment: str) -> dict[str, Any] | None:
        """The newest analysis result of an experiment, or None."""
        with self._read() as conn:
            row = conn.execute(sa.select(analyses.c.result).where(analyses.c.experiment == experiment)
                               .order_by(analyses.c.id.desc()).limit(1)).first()
        return row.result if row else None

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
        return version_record(row) if row else None
