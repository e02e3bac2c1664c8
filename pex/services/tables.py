"""Tables the user names on the command line or posts: read one with the right column types, write one whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pex.errors import DataError
from pex.experiment.data import read_table
from pex.files import replacing

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def check_output(path: str | Path, example: str) -> Path:
    """The output path, refused before any work when it is neither CSV nor Parquet (``example`` names a good one)."""
    out = Path(path)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"output file {out} is neither .csv nor .parquet", f"name the output e.g. {example}.csv or {example}.parquet")
    return out


def read_units(path: str | Path, unit: str, text_columns: tuple[str, ...], purpose: str, missing_unit_hint: str) -> pd.DataFrame:
    """One row per unit from CSV or Parquet: the ``unit`` column must be there (else ``missing_unit_hint``) and the
    file not empty. ``text_columns`` (categorical features) are read as text, as the unit id is, so "007" or "1"
    keep their meaning.
    """
    frame = read_table(path, text_columns=(unit, *text_columns))
    name = Path(path).name
    if unit not in frame.columns:
        raise DataError(f"unit column {unit!r} is not in {name}", missing_unit_hint)
    if len(frame) == 0:
        raise DataError(f"{name} has no rows", f"pass a file with one row per unit to {purpose}")
    return frame


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV or Parquet (by suffix), whole or not at all (:func:`pex.files.replacing`)."""
    with replacing(path) as tmp:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
