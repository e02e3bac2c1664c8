"""Effect models: fit them on a stored dataset version, and predict effects for new units with a stored fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pex.experiment.data import Dataset
from pex.experiment.split import HOLDOUT, dataset_split_key
from pex.hte.learners import HTEFit, Progress, fit_effects
from pex.hte.summary import fit_summary
from pex.monitor.drift import PROFILE_FILE, profile
from pex.services.models import effect_model
from pex.services.tables import read_units
from pex.store.workspace import DatasetVersion, FitRecord, Workspace


def fit_and_store(ws: Workspace, dataset: Dataset, dv: DatasetVersion, *, learner: str = "auto", folds: int = 2, seed: int = 0,
                  holdout: float = HOLDOUT, holdout_offset: float = 0.0,
                  progress: Progress | None = None) -> tuple[FitRecord, dict[str, Any]]:
    """Fit effect models on a stored dataset version, holding out the units of the arc ``holdout_offset`` +
    ``holdout`` of the split's hash (:mod:`pex.experiment.split`), and store them with their summary.

    The split's key is the dataset version's (:func:`pex.experiment.split.dataset_split_key`, recorded in the
    summary's ``holdout``): every fit of one dataset version holds out the same units whatever its ``seed``, which
    seeds only the models."""
    result = fit_effects(dataset, learner=learner, folds=folds, seed=seed, holdout=holdout, holdout_offset=holdout_offset,
                         split_key=dataset_split_key(dv.content_hash), progress=progress)
    summary = {**fit_summary(result, seed=seed), "dataset_version": dv.to_dict(), "seed": seed}
    files = {**result.to_files(), PROFILE_FILE: json.dumps(training_profile(dataset, result))}
    return ws.put_fit(dv.id, learner, files, summary), summary


def training_profile(dataset: Dataset, result: HTEFit) -> dict[str, Any]:
    """The profile (:func:`pex.monitor.drift.profile`) of the fit's training units and of their out-of-fold
    effects: what ``pex monitor`` compares served traffic with."""
    frame = dataset.frame
    training = frame[frame[dataset.spec.unit].astype(str).isin(set(result.units.astype(str)))]
    effects = {(metric, arm): result.oof_effects(metric)[:, j]
               for metric in result.metrics for j, arm in enumerate(result.model.treated_arms)}
    return profile(training, list(dataset.features), dataset.features, effects)


def fit(ws: Workspace, experiment: str, *, version: int | None = None, learner: str = "auto", folds: int = 2, seed: int = 0,
        holdout: float = HOLDOUT, progress: Progress | None = None) -> tuple[FitRecord, dict[str, Any]]:
    """Fit effect models on ``experiment``'s dataset version (default: current) and store them with their summary."""
    dataset, dv = ws.load_dataset(experiment, version)
    return fit_and_store(ws, dataset, dv, learner=learner, folds=folds, seed=seed, holdout=holdout, progress=progress)


def predict(ws: Workspace, experiment: str, data_path: str | Path, fit_id: str | None = None) -> tuple[pd.DataFrame, FitRecord]:
    """Predicted effects per unit of a file: the unit column plus ``cate__<metric>__<arm>``, from a stored fit."""
    record, _summary = ws.get_fit(experiment, fit_id)
    unit = ws.load_dataset_spec(record.dataset_id).unit
    model = effect_model(ws, record)
    categorical = tuple(c for c in model.encoder.columns if model.encoder.kinds[c] == "categorical")
    frame = read_units(data_path, unit, categorical, "score", f"the output is keyed by {unit!r}; add that column")
    return model.predict_frame(frame, unit=unit), record
