"""Outcomes reported back for units: the one validation rule, for `pex outcomes` and `POST /api/v1/outcomes`.

An outcome is ``{"unit", "metric", "value"}``: the value a unit showed on one of the experiment's metrics after
its decision. :func:`record_outcomes` takes the records as parsed from JSON (or built from a file by
:func:`read_outcome_file`), checks every one of them, and stores them all in one transaction or, at the first bad
record, none. A value must suit its metric: a finite number, and 0 or 1 for a binary metric (one whose every
value was 0 or 1 when the experiment was ingested: the models and estimators treat it as yes/no, and a logged -5
would break the off-policy estimates of later rounds). Outcomes are appended, never overwritten: when a unit
reports a metric twice, the join that builds logged feedback (:mod:`pex.services.feedback`) takes the latest, so
sending the same outcomes again is harmless.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import DataError, PexError
from pex.experiment.data import read_table
from pex.experiment.spec import ExperimentSpec
from pex.names import check_text
from pex.store.workspace import Workspace

MAX_RECORDS = 100_000  # per request: a larger body is better sent in parts than held in one transaction
MAX_UNIT_LENGTH = 256  # the width of the unit column of the outcomes and decisions tables
MAX_NAME_LENGTH = 64  # the width of the store's experiment name columns
RECORD_KEYS = ("unit", "metric", "value")
EXAMPLE = '{"unit": "u123", "metric": "sessions", "value": 4}'


def experiment_spec(ws: Workspace, experiment: Any) -> ExperimentSpec:
    """The spec of ``experiment``'s current dataset version (NotFoundError, listing the known ones, if none)."""
    return _current(ws, experiment)[0]


def _current(ws: Workspace, experiment: Any) -> tuple[ExperimentSpec, str]:
    """The spec and the id of ``experiment``'s current dataset version."""
    if not isinstance(experiment, str) or not experiment:
        raise PexError(f"experiment must be a name (text), got {_shown(experiment)}", 'send e.g. "experiment": "notification_cadence"')
    # a malformed name is refused before the store sees it (a lone surrogate cannot be encoded for the query)
    check_text(experiment, "the experiment name", MAX_NAME_LENGTH, 'send e.g. "experiment": "notification_cadence"')
    dataset_id = ws.dataset_version(experiment).id
    return ws.load_dataset_spec(dataset_id), dataset_id


def record_outcomes(ws: Workspace, experiment: Any, records: Any, *, max_records: int | None = MAX_RECORDS,
                    where: Callable[[int], str] | None = None) -> int:
    """Validate and store outcome records of ``experiment``, all or none; returns how many were stored.

    ``records`` is a list of ``{"unit", "metric", "value"}`` objects exactly as parsed from JSON: ``unit`` a
    non-empty string or an integer (stored as its text), ``metric`` one of the experiment's metric names,
    ``value`` a finite number (not a boolean). The first bad record raises a :class:`~pex.errors.PexError`
    naming it (``where(i)`` describes record ``i``, by default "record i") and nothing is stored.
    ``max_records`` bounds one call (None: no bound, for a file, which is one transaction however long).
    """
    spec, dataset_id = _current(ws, experiment)
    where = where or (lambda i: f"record {i}")
    binary = {m for m, kind in ws.dataset_metric_types(dataset_id).items() if kind == "binary"}
    if not isinstance(records, list) or not records:
        got = "an empty list" if isinstance(records, list) else f"{type(records).__name__}"
        raise DataError(f"records must be a non-empty list of outcomes, got {got}", f"send e.g. \"records\": [{EXAMPLE}]")
    if max_records is not None and len(records) > max_records:
        raise DataError(f"{len(records):,} records in one call; at most {max_records:,} are accepted",
                        f"send them in parts of up to {max_records:,} records")
    metrics = list(spec.metrics)
    rows = [_check_record(i, record, metrics, binary, spec.name, where) for i, record in enumerate(records)]
    return ws.put_outcomes(spec.name, rows)


def _shown(value: Any, limit: int = 80) -> str:
    """``value``'s repr for a message, cut to ``limit`` characters: a message never echoes a whole body back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_record(i: int, record: Any, metrics: list[str], binary: set[str], experiment: str,
                  where: Callable[[int], str]) -> tuple[str, str, float]:
    """One record as (unit, metric, value), or the DataError naming what is wrong with it."""
    if not isinstance(record, dict):
        raise DataError(f"{where(i)} is {type(record).__name__}, not an object", f"each record looks like {EXAMPLE}")
    unknown = sorted(str(k) for k in record if k not in RECORD_KEYS)
    if unknown:
        # a misspelt key ("vaule") must not pass for a record with a key missing
        raise DataError(f"{where(i)} has the unknown key {_shown(unknown[0])}", f"a record has exactly the keys {', '.join(RECORD_KEYS)}")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise DataError(f"{where(i)} has no {missing[0]!r}", f"each record looks like {EXAMPLE}")
    unit, metric, value = record["unit"], record["metric"], record["value"]
    if isinstance(unit, numbers.Integral) and not isinstance(unit, bool):
        unit = str(int(unit))  # the decision log keeps unit ids as text
    if not isinstance(unit, str) or not unit.strip():
        raise DataError(f"{where(i)} has unit {_shown(unit)}: a unit is a non-empty string or an integer",
                        "send the id the decision was requested for, e.g. \"unit\": \"u123\"")
    # NUL (PostgreSQL refuses it) or a lone surrogate (no encoder takes it) would fail the store, not this record
    check_text(unit, f"{where(i)} has a unit id that", MAX_UNIT_LENGTH, "send the id the decision was requested for",
               opaque=True)
    if not isinstance(metric, str) or metric not in metrics:
        raise DataError(f"{where(i)} has metric {_shown(metric)}, which is not a metric of experiment {experiment!r}",
                        f"its metrics are {', '.join(metrics)}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not _finite(value):
        raise DataError(f"{where(i)} has value {_shown(value)}: a value is a finite number",
                        "send the metric's value as a number, e.g. 1 or 0.25 (for a yes/no metric 1 or 0)")
    if metric in binary and value not in (0, 1):
        raise DataError(f"{where(i)} has value {_shown(value)} for metric {metric!r}, which is binary: 0 or 1",
                        f"send 1 where the unit {metric} and 0 where it did not")
    return unit, metric, float(value)


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # a JSON integer beyond the float range (1.8e308)
        return False


@dataclass(frozen=True)
class OutcomeFile:
    """Outcome records read from a file, the file row (1 = first data row) of each, and the file's layout."""

    records: list[dict[str, Any]]
    rows: list[int]
    layout: str  # "long" (unit, metric, value) or "wide" (unit plus a column per metric)
    metrics: list[str]
    skipped: int = 0  # empty cells of a wide file: no outcome for that unit and metric

    def where(self, name: str) -> Callable[[int], str]:
        """Describes record ``i`` by its row of the file ``name``."""
        return lambda i: f"row {self.rows[i]} of {name}"


def read_outcome_file(path: str | Path, spec: ExperimentSpec) -> OutcomeFile:
    """Outcome records from CSV or Parquet, in one of two layouts.

    * long: columns ``unit`` (or the experiment's unit column), ``metric`` and ``value``, a row per outcome;
    * wide: the unit column plus a column per metric, named as the experiment's metrics; an empty cell is no
      outcome for that metric (it is skipped and counted), other columns are ignored.

    The records are checked by :func:`record_outcomes`; this only turns cells into records.
    """
    name = Path(path).name
    frame = read_table(path, text_columns=("unit", spec.unit, "metric"))
    unit = "unit" if "unit" in frame.columns else spec.unit
    metrics = list(spec.metrics)
    if unit not in frame.columns:
        raise DataError(f"{name} has no unit column ('unit' or {spec.unit!r})",
                        "name the column of unit ids 'unit' or as the experiment's unit column")
    if len(frame) == 0:
        raise DataError(f"{name} has no rows", "pass a file with one row per outcome, or per unit")
    units = [u if isinstance(u, str) else None for u in frame[unit].astype(object).where(frame[unit].notna(), None)]
    if {"metric", "value"} <= set(frame.columns):
        values = _numbers(frame["value"], "value", name)
        labels = frame["metric"].astype(object).where(frame["metric"].notna(), None).tolist()
        records = [{"unit": u, "metric": m, "value": v} for u, m, v in zip(units, labels, values, strict=True)]
        return OutcomeFile(records, list(range(1, len(frame) + 1)), "long", sorted({str(m) for m in labels if m}))
    present = [m for m in metrics if m in frame.columns]
    if not present:
        raise DataError(f"{name} has neither the columns metric and value nor a column named as a metric of {spec.name!r}",
                        f"use columns {unit}, metric, value (a row per outcome) or {unit} plus any of {', '.join(metrics)}")
    records, rows, skipped = [], [], 0
    for m in present:
        values = _numbers(frame[m], m, name)
        for row, (u, v) in enumerate(zip(units, values, strict=True), start=1):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                skipped += 1
                continue
            records.append({"unit": u, "metric": m, "value": v})
            rows.append(row)
    if not records:
        raise DataError(f"{name} has no outcome: every cell of {', '.join(present)} is empty", "fill in the metric values")
    return OutcomeFile(records, rows, "wide", present, skipped)


def _numbers(column: pd.Series, label: str, name: str) -> list[Any]:
    """The column's cells as Python floats (empty: NaN, refused later in a long file); text is an error here."""
    if pd.api.types.is_bool_dtype(column):
        raise DataError(f"column {label} of {name} holds true/false values", "write them as 1 and 0")
    values = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise DataError(f"row {row} of {name} has {label} {str(column[bad].iloc[0])!r}: a value is a finite number",
                        f"fix that cell; {label} holds numbers only")
    return values.astype(float).tolist()
