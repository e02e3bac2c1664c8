"""Reading experiment data and validating it against its spec.

``read_table`` reads CSV or Parquet; ``validate`` checks the rows against an
:class:`~pex.experiment.spec.ExperimentSpec` and returns a :class:`Dataset`: the clean
frame, inferred feature and metric types, per-column missing counts, each
unit's assignment propensity and where that propensity came from. Problems are
:class:`~pex.errors.DataError` with counts and example rows; nothing is dropped
silently.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pex.errors import DataError
from pex.experiment.spec import ExperimentSpec
from pex.names import HINT, TEXT_PATTERN, check_name, describe, unsafe_character

PROPENSITY = "_pex_propensity"  # column added by validate: P(assigned arm) for each unit
MIN_UNITS_PER_ARM = 2
_EXAMPLES = 5
_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "pipes"}


@dataclass
class Dataset:
    """A validated experiment dataset.

    ``frame`` has the unit, arm, feature, metric and pre-period columns, and a
    ``_pex_propensity`` column. Row order follows the input file.
    """

    spec: ExperimentSpec
    frame: pd.DataFrame
    arms: list[str]
    features: dict[str, str]
    metric_types: dict[str, str]
    propensity_source: str
    missing: dict[str, int]
    n_rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_units(self) -> int:
        """Number of units (rows) kept."""
        return len(self.frame)

    @property
    def n_dropped(self) -> int:
        """Number of invalid rows dropped (with ``--drop-invalid``)."""
        return self.n_rows_read - len(self.frame)

    def arm_counts(self) -> dict[str, int]:
        """Units per arm."""
        counts = self.frame[self.spec.arm].value_counts()
        return {arm: int(counts.get(arm, 0)) for arm in self.arms}

    def content_hash(self) -> str:
        """A digest of the rows and of what the spec says they mean.

        Identical data under an identical spec gives the identical digest, which
        is what makes dataset versions content-addressed. The spec's file paths
        and free text are left out: moving a file or rewording a description
        does not make new data.
        """
        h = hashlib.sha256()
        spec = self.spec.to_dict()
        for key in ("data", "description", "owner"):
            spec.pop(key)
        for metric in spec["metrics"].values():
            metric.pop("description")
        h.update(json.dumps(spec, sort_keys=True).encode())
        h.update(json.dumps([[c, str(t)] for c, t in self.frame.dtypes.items()]).encode())
        h.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """JSON-able facts about the dataset (stored with each version)."""
        return {
            "n_units": self.n_units,
            "n_rows_read": self.n_rows_read,
            "n_dropped": self.n_dropped,
            "dropped": dict(self.dropped),
            "arms": list(self.arms),
            "arm_counts": self.arm_counts(),
            "features": dict(self.features),
            "metric_types": dict(self.metric_types),
            "propensity_source": self.propensity_source,
            "missing": {k: v for k, v in self.missing.items() if v},
            "warnings": list(self.warnings),
        }


def read_table(path: str | Path, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame.

    ``text_columns`` are read as strings (unit ids and arm labels), so that
    ``007`` stays ``007`` and arm ``1`` matches ``control = "1"``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}", "check the spec's data path")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path.name} is empty", "export the experiment again; the file has no header and no rows")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path, text_columns)
    return _read_csv(path, text_columns)


def _read_csv(path: Path, text_columns: tuple[str, ...]) -> pd.DataFrame:
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PAR1"):
        raise DataError(f"data file {path.name} is Parquet but named like a CSV", "rename it to .parquet")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise DataError(
            f"data file {path.name} is not UTF-8 text (it looks like UTF-16)",
            "re-save it as UTF-8 CSV (e.g. in Excel: 'CSV UTF-8 (comma delimited)')",
        )
    try:
        frame = pd.read_csv(path, dtype={c: "string" for c in text_columns}, encoding="utf-8",
                            low_memory=False, index_col=False)
        # Unit ids and arm labels are labels, not data: "None", "NA" or "null" is an
        # arm's name there, so only an empty cell counts as missing.
        present = [c for c in text_columns if c in frame.columns]
        if present:
            labels = pd.read_csv(path, usecols=present, dtype="string", encoding="utf-8",
                                 keep_default_na=False, na_values=[""], index_col=False)
            for col in present:
                frame[col] = labels[col]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path.name} is not UTF-8 text (byte {exc.start} cannot be decoded)",
            "re-save it as UTF-8 CSV",
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path.name} has no columns", "the file must start with a header row") from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"data file {path.name} is not a well-formed CSV: {str(exc).strip()}",
            "every row needs the same number of comma-separated fields as the header; quote fields that contain commas",
        ) from None
    # pandas renames a repeated header to "name.1"; a repeated column is ambiguous, so refuse it.
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), [])
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(f"data file {path.name} has the column {repeated[0]!r} more than once", "give every column a unique header")
    if frame.shape[1] == 1:
        header = str(frame.columns[0])
        for delim, name in _DELIMITERS.items():
            if delim in header:
                raise DataError(
                    f"data file {path.name} has a single column {header[:60]!r}: it is separated by {name}, not commas",
                    "save the file as comma-separated CSV, or export it as Parquet",
                )
    return frame


def _read_parquet(path: Path, text_columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"data file {path.name} is not a readable Parquet file: {str(exc).splitlines()[0]}",
            "write it again (e.g. DataFrame.to_parquet) or export CSV instead",
        ) from None
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index()  # a column written as the pandas index (e.g. the unit id)
    for col in text_columns:
        if col in frame.columns:
            frame[col] = as_text(frame[col])
    return frame


def as_text(series: pd.Series) -> pd.Series:
    """Labels as strings; whole floats (1.0, from a column with blanks) become "1"."""
    out = series.astype("string")
    if pd.api.types.is_float_dtype(series):
        # 1.0 -> "1": labels written as floats by a NaN-containing integer column
        # (only where the float holds the integer exactly)
        whole = series.notna() & (series % 1 == 0) & (series.abs() < 2**53)
        out[whole] = series[whole].astype("int64").astype("string")
    return out


def load_dataset(spec: ExperimentSpec, *, drop_invalid: bool = False) -> Dataset:
    """Read the spec's data file and validate it (see :func:`validate`)."""
    frame = read_table(spec.data, text_columns=(spec.unit, spec.arm))
    return validate(frame, spec, drop_invalid=drop_invalid, source=spec.data.name)


def validate(
    frame: pd.DataFrame,
    spec: ExperimentSpec,
    *,
    drop_invalid: bool = False,
    source: str = "data",
) -> Dataset:
    """Check ``frame`` against ``spec`` and return a clean :class:`Dataset`.

    Rows with a missing unit id, arm or metric value (or an infinite metric)
    are invalid: an error listing counts and example rows, or, with
    ``drop_invalid``, dropped and counted in ``Dataset.dropped``.
    Everything else that is wrong (missing columns, duplicate units, text in a
    metric, unknown arms, no control rows) is always an error.
    """
    frame = frame.reset_index(drop=True)
    n_read = len(frame)
    _check_columns(frame, spec, source)
    if n_read == 0:
        raise DataError(f"{source} has a header but no data rows", "export the experiment's rows, one per unit")

    features = list(spec.features) if spec.features is not None else [
        c for c in frame.columns if c not in spec.reserved_columns
    ]
    keep = [spec.unit, spec.arm, *features, *spec.metric_columns, *spec.pre_columns]
    if spec.propensity:
        keep.append(spec.propensity)
    frame = frame.loc[:, list(dict.fromkeys(keep))].copy()
    frame[spec.unit] = as_text(frame[spec.unit]).str.strip()
    # NFC: the same label typed on two systems can differ in Unicode form ("café")
    frame[spec.arm] = as_text(frame[spec.arm]).str.strip().str.normalize("NFC")

    for m in spec.metrics.values():
        frame[m.column] = _numeric(frame[m.column], m.column, "metric", source, field=f"metrics.{m.name}")
    for m in spec.metrics.values():
        if not m.pre:
            continue
        col = m.pre
        frame[col] = _numeric(frame[col], col, "pre-period", source, field=f"metrics.{m.name}.pre")
        if np.isinf(frame[col]).any():
            raise DataError(f"pre-period column {col!r} has infinite values", "replace them with the real value or leave the cell empty",
                            field=f"metrics.{m.name}.pre")
    if spec.propensity:
        frame[spec.propensity] = _numeric(frame[spec.propensity], spec.propensity, "propensity", source, field="propensity")

    frame, dropped = _invalid_rows(frame, spec, drop_invalid, source)
    _check_units(frame, spec)
    arms = _check_arms(frame, spec)

    feature_types = {}
    for col in features:
        frame[col], feature_types[col] = _feature(frame[col], col)
    _check_names(frame, spec, arms, features, feature_types, source)
    frame = frame.copy()  # consolidate blocks before adding a column to a wide frame

    metric_types = {
        name: "binary" if set(np.unique(frame[m.column])) <= {0.0, 1.0} else "continuous"
        for name, m in spec.metrics.items()
    }
    propensity, prop_source = _propensities(frame, spec, arms)
    frame[PROPENSITY] = propensity
    missing = {col: int(frame[col].isna().sum()) for col in frame.columns if col != PROPENSITY}

    warnings = []
    for col in features:
        if missing[col] == len(frame):
            warnings.append(f"feature {col!r} is empty in every row; it carries no information")
        elif feature_types[col] == "categorical":
            levels = frame[col].nunique()
            if levels > 1000 and levels > 0.5 * len(frame):
                warnings.append(f"feature {col!r} has {levels} distinct values, nearly one per unit; is it an id?")
    return Dataset(
        spec=spec, frame=frame.reset_index(drop=True), arms=arms, features=feature_types,
        metric_types=metric_types, propensity_source=prop_source, missing=missing,
        n_rows_read=n_read, dropped=dropped, warnings=warnings,
    )


def _check_columns(frame: pd.DataFrame, spec: ExperimentSpec, source: str) -> None:
    needed = [
        ("unit", spec.unit), ("arm", spec.arm),
        *((f"metrics.{m.name}", m.column) for m in spec.metrics.values()),
        *((f"metrics.{m.name}.pre", m.pre) for m in spec.metrics.values() if m.pre),
        *(("features", f) for f in spec.features or ()),
    ]
    if spec.propensity:
        needed.append(("propensity", spec.propensity))
    columns = [str(c) for c in frame.columns]
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise DataError(f"{source} has the column {dup[0]!r} more than once", "give every column a unique header")
    missing = [(key, col) for key, col in needed if col not in columns]
    if missing:
        key, col = missing[0]
        close = difflib.get_close_matches(col, columns, n=1)
        more = f" (and {len(missing) - 1} more: {', '.join(c for _, c in missing[1:4])})" if len(missing) > 1 else ""
        hint = f"did you mean {close[0]!r}? fix the spec's '{key}' or rename the column" if close else (
            f"the file's columns are: {', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''}"
        )
        raise DataError(f"column {col!r} (spec '{key}') is not in {source}{more}", hint, field=key)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _rows(mask: np.ndarray | pd.Series) -> str:
    idx = np.flatnonzero(np.asarray(mask))[:_EXAMPLES] + 1
    return ("row " if len(idx) == 1 else "rows ") + ", ".join(str(i) for i in idx)


def _feature(series: pd.Series, col: str) -> tuple[pd.Series, str]:
    """A feature as float64 ("numeric") or string ("categorical"), or a DataError."""
    if _is_temporal(series):
        raise DataError(
            f"feature {col!r} holds dates or durations",
            "derive a number from it (e.g. days since signup) or leave it out of features",
            field="features",
        )
    if pd.api.types.is_object_dtype(series):
        values = series.dropna()
        if len(values) and values.map(lambda v: isinstance(v, (bool, np.bool_))).all():
            series = series.astype("boolean")
        elif len(values) and values.map(lambda v: isinstance(v, (int, float, np.number, decimal.Decimal))
                                        and not isinstance(v, bool)).all():
            series = pd.to_numeric(series.astype(object), errors="raise")
        elif len(values) and values.map(lambda v: isinstance(v, (list, tuple, dict, set, bytes, np.ndarray, datetime.date))).any():
            raise DataError(
                f"feature {col!r} holds lists, records, bytes or dates, not single numbers or labels",
                "flatten it into numeric or text columns, or leave it out of features",
                field="features",
            )
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        out = series.astype("float64")
        if np.isinf(out.to_numpy()).any():
            raise DataError(f"feature {col!r} has infinite values", "replace them with the real value or leave the cell empty",
                            field="features")
        return out, "numeric"
    return series.astype("string"), "categorical"


def _check_names(frame: pd.DataFrame, spec: ExperimentSpec, arms: list[str], features: list[str],
                 feature_types: dict[str, str], source: str) -> None:
    """Names are data (:mod:`pex.names`): arm labels, feature column names and category labels end up in policy
    documents, SQL and logs, so a line break, NUL or other control character in one is refused here, at ingest."""
    for arm in arms:
        check_name(arm, f"an arm label in column {spec.arm!r} of {source}", partial(DataError, field="arm"),
                   f"{HINT}; fix the arm labels in the data (and the spec's control and allocation)")
    for col in features:
        check_name(col, f"feature column name in {source}", partial(DataError, field="features"),
                   f"{HINT}; rename the column, or list features in the spec without it")
        if feature_types[col] == "categorical":
            bad = frame[col].str.contains(TEXT_PATTERN, regex=True, na=False).to_numpy(dtype=bool)
            if bad.any():
                label = frame[col][bad].iloc[0]
                raise DataError(f"feature {col!r} in {source} has a category label that holds "
                                f"{describe(unsafe_character(label) or '?')} ({_rows(bad)}): {label!r}",
                                f"{HINT}; clean the labels, or list features in the spec without {col!r}", field="features")


def _is_temporal(series: pd.Series) -> bool:
    return (pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series)
            or isinstance(series.dtype, pd.PeriodDtype))


def _numeric(series: pd.Series, col: str, what: str, source: str, field: str | None = None) -> pd.Series:
    if _is_temporal(series):
        raise DataError(f"{what} column {col!r} holds dates or durations, not numbers", f"{what} values must be numbers",
                        field=field)
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64")
    values = pd.to_numeric(series, errors="coerce")
    text = series.notna() & values.isna()
    if text.any():
        examples = ", ".join(repr(str(v)) for v in series[text].head(3))
        raise DataError(
            f"{what} column {col!r} has {_count(int(text.sum()), 'non-numeric value')} ({_rows(text)}: {examples})",
            f"{what} values must be numbers; fix or empty those cells (rows count from 1 after the header)",
            field=field,
        )
    return values.astype("float64")


def _invalid_rows(frame: pd.DataFrame, spec: ExperimentSpec, drop: bool, source: str):
    checks: list[tuple[str, pd.Series]] = [
        (f"missing unit id ({spec.unit!r})", frame[spec.unit].isna() | (frame[spec.unit].str.strip() == "")),
        (f"missing arm ({spec.arm!r})", frame[spec.arm].isna() | (frame[spec.arm] == "")),
    ]
    fields = ["unit", "arm"]  # the spec field each check concerns, in the same order
    for m in spec.metrics.values():
        checks.append((f"missing metric {m.name!r}", frame[m.column].isna()))
        checks.append((f"infinite metric {m.name!r}", pd.Series(np.isinf(frame[m.column].to_numpy()))))
        fields += [f"metrics.{m.name}"] * 2
    if spec.propensity:
        p = frame[spec.propensity]
        checks.append((f"missing propensity ({spec.propensity!r})", p.isna()))
        fields.append("propensity")
        bad = p.notna() & ~((p > 0) & (p <= 1))
        if bad.any():
            raise DataError(
                f"propensity column {spec.propensity!r} has {_count(int(bad.sum()), 'value')} outside (0, 1] ({_rows(bad)})",
                "each value must be the probability that the unit got its assigned arm",
                field="propensity",
            )
    problems = [(label, mask) for label, mask in checks if mask.any()]
    if not problems:
        return frame, {}
    first_field = next(f for (_, mask), f in zip(checks, fields) if mask.any())
    invalid = np.logical_or.reduce([mask.to_numpy() for _, mask in problems])
    dropped = {label: int(mask.sum()) for label, mask in problems}
    if not drop:
        parts = "; ".join(f"{label}: {_count(n, 'row')} (e.g. {_rows(mask)})" for (label, mask), n in zip(problems, dropped.values()))
        raise DataError(
            f"{int(invalid.sum()):,} of {len(frame):,} rows in {source} are invalid - {parts}",
            "fix those rows, or pass --drop-invalid to drop them (the count is recorded with the dataset version)",
            field=first_field,
        )
    if invalid.all():
        raise DataError(f"every row of {source} is invalid", "check that the spec names the right columns")
    return frame.loc[~invalid], dropped


def _check_units(frame: pd.DataFrame, spec: ExperimentSpec) -> None:
    dup = frame[spec.unit].duplicated(keep=False)
    if dup.any():
        ids = frame.loc[dup, spec.unit].unique()
        raise DataError(
            f"unit id column {spec.unit!r} repeats {_count(len(ids), 'id')} "
            f"(e.g. {', '.join(repr(str(i)) for i in ids[:3])}; {_rows(dup)})",
            "each unit must appear in exactly one row; aggregate per unit or remove the repeated rows",
            field="unit",
        )


def _check_arms(frame: pd.DataFrame, spec: ExperimentSpec) -> list[str]:
    observed = frame[spec.arm].value_counts()
    if spec.allocation:
        unknown = [a for a in observed.index if a not in spec.allocation]
        if unknown:
            mask = frame[spec.arm].isin(unknown)
            raise DataError(
                f"arm column {spec.arm!r} has labels not in the spec's allocation: "
                f"{', '.join(repr(a) for a in unknown[:5])} ({_count(int(mask.sum()), 'row')}, e.g. {_rows(mask)})",
                f"the allocation lists {', '.join(spec.allocation)}; add the arm to [allocation] or fix the labels",
                field="allocation",
            )
        arms = list(spec.allocation)
    else:
        arms = sorted(observed.index)
    if spec.control not in observed.index:
        raise DataError(
            f"no rows have the control arm {spec.control!r} in column {spec.arm!r} "
            f"(labels found: {', '.join(map(repr, sorted(observed.index)[:6]))})",
            "set control in the spec to the control arm's label exactly as it appears in the data",
            field="control",
        )
    if len(arms) < 2:
        raise DataError(f"column {spec.arm!r} holds only the control arm", "an experiment needs at least one arm besides control",
                        field="arm")
    for arm in arms:
        n = int(observed.get(arm, 0))
        if n < MIN_UNITS_PER_ARM:
            raise DataError(
                f"arm {arm!r} has {n} units; at least {MIN_UNITS_PER_ARM} are needed to estimate anything",
                "remove the arm from [allocation] if it was never run, or check the arm labels",
                field=f"allocation.{arm}" if spec.allocation else "arm",
            )
    return [spec.control, *[a for a in arms if a != spec.control]]


def _propensities(frame: pd.DataFrame, spec: ExperimentSpec, arms: list[str]) -> tuple[np.ndarray, str]:
    """P(assigned arm) per unit: the spec's column, else the allocation, else observed shares."""
    if spec.propensity:
        return frame[spec.propensity].to_numpy(dtype=float), "column"
    if spec.allocation:
        shares, source = spec.allocation, "allocation"
    else:
        counts = frame[spec.arm].value_counts()
        shares, source = {a: counts[a] / len(frame) for a in arms}, "observed"
    return frame[spec.arm].map(shares).to_numpy(dtype=float), source
