"""One unit's features as a server receives them (JSON), checked and typed for a policy's decision.

Lenient where serving must be: a feature absent or null is missing (it follows the policy's declared path)
and keys the policy does not read are left out. Strict about types: a numeric feature takes a JSON number,
a categorical one a string (or a number, read as its label, as files are); anything else is a
:class:`pex.errors.DataError`, since it is the caller's mistake rather than a missing value.
Batch files are checked by :meth:`pex.policy.base.Policy.check_frame` instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pex.errors import DataError
from pex.names import check_text

if TYPE_CHECKING:
    from pex.policy.base import Policy

Record = dict[str, float | str | None]

MAX_LABEL_CHARS = 1_000  # a category label as a request sends it: longer is a mistake (or an attack), not a label


def check_record(policy: Policy, features: Any, where: str = "features") -> Record:
    """``features`` (one unit's, as JSON sent them) checked and typed for ``policy.decide_records``.

    ``where`` names the features in messages (e.g. ``units[3].features``).
    """
    if not isinstance(features, Mapping):
        example = ", ".join(f'"{f}": ...' for f in policy.features[:3])
        raise DataError(f"{where} must be an object mapping feature names to values, got {json_type(features)}",
                        f"send e.g. {{{example}}}")
    out: Record = {}
    for name, kind in policy.feature_kinds().items():
        value = features.get(name)
        if value is None:
            out[name] = None
        elif kind == "numeric":
            out[name] = _number(value, f"{where}.{name}", policy.name, name)
        elif isinstance(value, str):
            out[name] = check_text(value, f"{where}.{name}", MAX_LABEL_CHARS,
                                   f"send the category label of {name!r} as the policy's data spells it", opaque=True)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = number_label(value)
        else:
            raise DataError(f"{where}.{name} must be a string label or null, got {json_type(value)} {value!r}"[:300],
                            f"policy {policy.name!r} compares {name!r} as a category label")
    return out


def records_frame(policy: Policy, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Checked records (:func:`check_record`) as the frame ``policy.greedy_arms`` reads: numbers as floats
    (NaN where missing), labels as text (None where missing)."""
    columns: dict[str, Any] = {}
    for name, kind in policy.feature_kinds().items():
        values = [r[name] for r in records]
        if kind == "numeric":
            columns[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            columns[name] = np.array(values, dtype=object)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


def number_label(value: int | float) -> str:
    """A number read as a category label, as :func:`pex.experiment.data.as_text` reads a file's (1.0 -> "1")."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def json_type(value: Any) -> str:
    """What JSON calls the type of a parsed value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _number(value: Any, where: str, policy: str, feature: str) -> float | None:
    """A numeric feature's JSON value as a float (None for NaN, which is missing as in a file)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where} must be a number or null, got {json_type(value)} {value!r}"[:300],
                        f"policy {policy!r} compares {feature!r} as a number; send null when it is unknown")
    try:
        number = float(value)
    except OverflowError:  # JSON integers have no bound; floats end at 1.8e308
        raise DataError(f"{where} must be a finite number, got an integer beyond the float range",
                        "send the number as a float, or null when it is unknown") from None
    if number != number:  # NaN (Python's json reads it)
        return None
    if math.isinf(number):
        raise DataError(f"{where} must be a finite number, got {number}",
                        "JSON has no infinity; send the number, or null when it is unknown")
    return number
