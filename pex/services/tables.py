"""Tables the user names on the command line or posts: read one with the right column types, write one whole."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pandas as pd

from pex.errors import DataError
from pex.experiment.data import read_table

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def check_output(path: str | Path, example: str) -> Path:
    """The output path, refused before any work when it is neither CSV nor Parquet (``example`` names a good one)."""
    out = Path(path)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"output file {out} is neither .csv nor .parquet", f"name the output e.g. {example}.csv or {example}.parquet")
    return out


def read_units(path: str | Path, unit: str, text_columns: tuple[str, ...], purpose: str) -> pd.DataFrame:
    """One row per unit from CSV or Parquet: the ``unit`` column must be there and the file not empty.

    ``text_columns`` (the unit id and categorical features) are read as text, so "007" or "1" keep their meaning.
    """
    frame = read_table(path, text_columns=(unit, *text_columns))
    name = Path(path).name
    if unit not in frame.columns:
        raise DataError(f"unit column {unit!r} is not in {name}", "add that column, or name the id column with --unit")
    if len(frame) == 0:
        raise DataError(f"{name} has no rows", f"pass a file with one row per unit to {purpose}")
    return frame


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV or Parquet (by suffix) beside ``path``, then rename: never a half-written file."""
    buffer = io.BytesIO()
    if path.suffix.lower() == ".csv":
        buffer.write(frame.to_csv(index=False).encode("utf-8"))
    else:
        frame.to_parquet(buffer, index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
