"""Effect-model fits: a folder of model files per fit (written whole or not at all) and a row linking it to its data."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.errors import NotFoundError, StoreError
from pex.files import write_folder_atomic
from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import FitRecord, fit_record
from pex.store.schema import dataset_versions, fits


class FitsMixin:
    """Workspace methods for model fits."""

    @db("write")
    def put_fit(self, dataset_id: str, learner: str, files: dict[str, str | bytes], summary: dict[str, Any]) -> FitRecord:
        """Store a fit's files (relative path -> text or bytes) and summary, linked to its dataset version.

        The files are written into a temporary folder that is renamed into
        place, then the row is committed; a failure removes the folder again.
        No workspace lock: the fit's id is new (time and a random suffix), so
        no other writer touches its folder or its row.
        """
        with self._read() as conn:
            ds = conn.execute(sa.select(dataset_versions.c.experiment).where(dataset_versions.c.id == dataset_id)).first()
        if ds is None:
            raise NotFoundError(f"no dataset version {dataset_id!r}", "fit a stored dataset version")
        now = datetime.now(UTC)
        fit_id = f"{ds.experiment[:15]}-fit-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        artifact = f"fits/{fit_id}"
        final = self.artifacts / artifact
        write_folder_atomic(final, files)
        committed = False
        try:
            with self.engine.connect() as conn:
                conn.execute(fits.insert().values(id=fit_id, experiment=ds.experiment, dataset_id=dataset_id,
                                                  learner=learner, artifact=artifact, summary=jsonable(summary),
                                                  created_at=now))
                conn.commit()
                # from here the row exists: an interrupt while the connection closes must not delete its files
                committed = True
        except BaseException:
            if not committed:
                shutil.rmtree(final, ignore_errors=True)
            raise
        return FitRecord(fit_id, ds.experiment, dataset_id, learner, artifact, now)

    @db("read")
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
        return fit_record(row), row.summary

    def read_fit_file(self, record: FitRecord, rel: str) -> str:
        """A text file of a fit's folder (e.g. ``manifest.json``)."""
        return self.read_fit_bytes(record, rel).decode("utf-8")

    def read_fit_bytes(self, record: FitRecord, rel: str) -> bytes:
        """A file of a fit's folder, as bytes."""
        path = self.artifacts / record.artifact / rel
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StoreError(f"model file {path} cannot be read: {exc.strerror}",
                             f"the artifact folder was changed by hand; run `pex fit {record.experiment}` again") from None

    @db("read")
    def find_fit(self, fit_id: str) -> tuple[FitRecord, dict[str, Any]]:
        """A fit by id alone (policy documents name their fit)."""
        with self._read() as conn:
            row = conn.execute(sa.select(fits).where(fits.c.id == fit_id)).first()
        if row is None:
            raise NotFoundError(f"no fit {fit_id!r} in this workspace",
                                "the policy was built in another workspace; "
                                "point PEX_HOME there or rebuild it with `pex policies NAME --rebuild`")
        return fit_record(row), row.summary
