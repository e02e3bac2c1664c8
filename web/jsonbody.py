"""Request bodies read as strict JSON (RFC 8259), by the Flask views and the fast decide path alike.

Python's json module accepts two things JSON does not have: the tokens ``NaN``, ``Infinity`` and ``-Infinity``
(a NaN feature would silently read as missing), and an object with the same key twice (the last one wins,
so ``{"unit": "a", "unit": "b"}`` was decided for a unit the sender may not have meant). Both are refused here,
so every route reads a body the same way and a bad one is a 400 wherever it arrives.
"""

from __future__ import annotations

import json
from typing import Any


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {repeated[:80]!r} appears twice in one object")
    return out


def _constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def loads(data: bytes | str) -> Any:
    """``data`` parsed as strict JSON; ``ValueError`` when it is not (``RecursionError`` when nested too deeply)."""
    return json.loads(data, object_pairs_hook=_object, parse_constant=_constant)
