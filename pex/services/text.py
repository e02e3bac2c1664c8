"""Text a client sends (ids, names), checked before it reaches a hash, a message or the store.

JSON can carry strings that no database column or UTF-8 encoder takes: a lone surrogate (``"\\ud800"``) fails
to encode (a 500 once it reached the store or the unit hash), NUL is refused by PostgreSQL, and a control
character in a name echoed into a log line or an export forges a new line. :func:`check_text` refuses all three,
and over-long text, with a :class:`~pex.errors.DataError` naming the field.
"""

from __future__ import annotations

import re

from pex.errors import DataError

# C0 controls (NUL, CR, LF, ...), DEL and the C1 controls: never part of an id or a name
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMES = {"\x00": "the NUL character", "\n": "a line feed", "\r": "a carriage return", "\t": "a tab"}


def text_problem(value: str, max_chars: int, *, controls: bool = False) -> str | None:
    """What is wrong with ``value`` as stored text (None: nothing); ``controls``: whether control characters
    other than NUL are allowed (a unit id is opaque, a name is not)."""
    if not value:
        return "is empty"
    if len(value) > max_chars:
        return f"has {len(value):,} characters (at most {max_chars})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode: a lone surrogate (\\u{ord(value[exc.start]):04x}) at character {exc.start}"
    found = _CONTROL.search(value) if not controls else None
    at = found.start() if found else (value.find("\x00") if controls else -1)
    if at >= 0:
        name = _NAMES.get(value[at], "a control character")
        return f"contains {name} (\\u{ord(value[at]):04x}) at character {at}"
    return None


def check_text(value: str, where: str, max_chars: int, hint: str, *, controls: bool = False) -> str:
    """``value`` if it is storable text (see :func:`text_problem`), else a DataError: "``where`` <problem>"."""
    problem = text_problem(value, max_chars, controls=controls)
    if problem is not None:
        raise DataError(f"{where} {problem}", hint)
    return value
