"""What the store hands out: immutable records of stored dataset versions, fits and policies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


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
        """The record without document and evaluation, for JSON output."""
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
        """The record for JSON output."""
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
        """The record for JSON output."""
        return {
            "id": self.id, "experiment": self.experiment, "version": self.version,
            "content_hash": self.content_hash, "n_units": self.n_units, "n_dropped": self.n_dropped,
            "source": self.source, "created_at": self.created_at.isoformat(), "created": self.created,
        }


@dataclass(frozen=True)
class RunRecord:
    """A recorded `pex run` on a dataset version: its settings, the reason given, the policy version it recommends
    (``policy``, ``policy_version``), its own choice (``own_policy``, ``own_version``: the same unless the
    recommendation is an earlier run's) and ``bound_to``, the id of the run whose recommendation it carries."""

    id: int
    experiment: str
    dataset_id: str
    fit_id: str | None
    created_at: datetime
    settings: dict[str, Any]
    reason: str | None
    policy: str
    policy_version: int | None
    own_policy: str
    own_version: int | None
    bound_to: int | None

    @property
    def binds(self) -> bool:
        """Whether the run's own recommendation is the one it recommends (not an earlier run's)."""
        return self.bound_to is None

    def to_dict(self) -> dict[str, Any]:
        """The record for JSON output."""
        return {"id": self.id, "experiment": self.experiment, "dataset_id": self.dataset_id, "fit_id": self.fit_id,
                "created_at": self.created_at.isoformat(), "settings": self.settings, "reason": self.reason,
                "policy": self.policy, "policy_version": self.policy_version, "own_policy": self.own_policy,
                "own_version": self.own_version, "bound_to": self.bound_to}


@dataclass(frozen=True)
class NewRun:
    """What a run records beside its summary (:meth:`pex.store.runs.RunsMixin.record_run`): the fields of
    :class:`RunRecord` the run decides."""

    summary: dict[str, Any]
    policy: str
    policy_version: int | None
    own_policy: str
    own_version: int | None
    bound_to: int | None = None


def run_record(row: Any) -> RunRecord:
    """A RunRecord from a row of ``runs``."""
    return RunRecord(row.id, row.experiment, row.dataset_id, row.fit_id, utc(row.created_at), row.settings or {},
                     row.reason, row.policy or "", row.policy_version, row.own_policy or "", row.own_version, row.bound_to)


def policy_record(row: Any) -> PolicyRecord:
    """A PolicyRecord from a row of ``policies``."""
    return PolicyRecord(row.experiment, row.name, row.version, row.kind, row.fit_id, row.document, row.evaluation,
                        utc(row.created_at))


def fit_record(row: Any) -> FitRecord:
    """A FitRecord from a row of ``fits``."""
    return FitRecord(row.id, row.experiment, row.dataset_id, row.learner, row.artifact, utc(row.created_at))


def dataset_version(row: Any) -> DatasetVersion:
    """A DatasetVersion from a row of ``dataset_versions``."""
    return DatasetVersion(row.id, row.experiment, row.version, row.content_hash, row.artifact,
                          row.n_units, row.n_dropped, row.source, utc(row.created_at))


def utc(value: datetime) -> datetime:
    """A stored timestamp with its zone: SQLite hands them back without one; they were stored in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def iso(value: datetime | None) -> str | None:
    """A stored timestamp as ISO 8601 in UTC, or None."""
    return utc(value).isoformat() if value is not None else None
