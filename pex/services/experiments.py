"""Experiments in the workspace: ingest a spec's data as a dataset version, analyse it, list what is stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pex.experiment.data import Dataset, load_dataset
from pex.experiment.effects import Analysis, analyze
from pex.experiment.spec import ExperimentSpec, load_spec
from pex.store.workspace import DatasetVersion, Workspace, default_home, workspace_exists


@dataclass(frozen=True)
class Ingested:
    """A validated dataset and the stored version it is (new, or identical to one already stored)."""

    dataset: Dataset
    version: DatasetVersion


def ingest(workspace: Callable[[], Workspace], spec_path: str | Path, *, drop_invalid: bool = False) -> Ingested:
    """Validate the spec and its data, then store the data as a dataset version.

    Everything is validated before ``workspace()`` is opened, so bad input leaves the store exactly as it was.
    """
    spec = load_spec(spec_path)
    dataset = load_dataset(spec, drop_invalid=drop_invalid)
    return Ingested(dataset, workspace().put_dataset(dataset, source=str(spec.data)))


def ingest_and_analyze(workspace: Callable[[], Workspace], spec: ExperimentSpec) -> tuple[Ingested, Analysis]:
    """Validate the spec's data, store it as a dataset version and analyse it (what ``pex demo --no-fit`` does)."""
    dataset = load_dataset(spec)
    done = Ingested(dataset, workspace().put_dataset(dataset, source=str(spec.data)))
    analysis, _stored = record_analysis(workspace(), dataset, done.version)
    return done, analysis


def analyze_stored(ws: Workspace, experiment: str, version: int | None = None) -> tuple[Analysis, dict[str, Any]]:
    """Sample-ratio check and average effects of a stored dataset version (default: the current one), recorded."""
    dataset, dv = ws.load_dataset(experiment, version)
    return record_analysis(ws, dataset, dv)


def record_analysis(ws: Workspace, dataset: Dataset, dv: DatasetVersion) -> tuple[Analysis, dict[str, Any]]:
    """Analyse ``dataset`` and store the result with its dataset version; returns the analysis and what was stored."""
    analysis = analyze(dataset)
    result = {**analysis.to_dict(), "dataset_version": dv.to_dict()}
    ws.put_analysis(dataset.spec.name, dv.id, result)
    return analysis, result


def list_experiments(workspace: Callable[[], Workspace], home: str | Path | None) -> tuple[Path, list[dict[str, Any]]]:
    """The workspace folder and its experiments; no workspace there yet means none (nothing is created)."""
    folder = Path(home or default_home())
    return folder, (workspace().list_experiments() if workspace_exists(folder) else [])
