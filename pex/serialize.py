"""Turning results into plain JSON values (for summary files, the store and --json)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars become Python numbers, NaN and inf become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (datetime, Path)):
        return str(obj)
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN) of ``obj``."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)
