"""Names are data, never code: which characters a name or label may not hold, and names made safe to print.

Experiment, policy, metric, feature (column) and arm names and category labels end up in JSON documents, SQL
text, log lines, HTML and HTTP headers. A line break in one ends an SQL ``--`` comment (issue 24: a ``DROP
TABLE`` written into a policy name ran), NUL truncates C strings and is refused by PostgreSQL, and a
bidirectional override makes a reviewed name read differently from what it is ("Trojan Source"). So the spec
(:mod:`pex.experiment.spec`), the data (:mod:`pex.experiment.data`) and the policy document
(:mod:`pex.policy.base` and its kinds) refuse them, each with its own error class, and whatever writes a name
into code-like text escapes it anyway (:func:`printable`), since documents stored before this check may hold one.

Refused (:data:`UNSAFE`): every control character (C0 including NUL, tab, CR and LF; DEL; C1 including NEL),
the Unicode line and paragraph separators, the bidirectional embeddings, overrides and isolates, and lone
surrogates (not UTF-8 text). Everything else, any script, emoji and zero-width joiners included, is allowed.

Text a client sends to be stored or matched (a unit id, a category label in a decide request) is opaque: it
may hold any character a store can keep, so only NUL (PostgreSQL refuses it) and lone surrogates (no UTF-8
encoder takes them; answered, such a row failed every later write of the decision log) are refused there, by
:func:`check_text` with ``opaque=True``. Imports nothing from pex but its errors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from pex.errors import DataError

__all__ = ["HINT", "TEXT_PATTERN", "UNSAFE", "check_name", "check_text", "describe", "printable", "text_problem",
           "unsafe_character"]

# one character class, so that a pandas column can be searched with it in one vectorised pass: TEXT_PATTERN (written
# as the characters themselves, which Python's re and Arrow's RE2 both read) for text already known to be UTF-8
# (Arrow strings cannot hold a lone surrogate), UNSAFE for any Python string
TEXT_PATTERN = "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
UNSAFE = re.compile(TEXT_PATTERN[:-1] + "\ud800-\udfff]")
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # what no store keeps, even in opaque text

HINT = "names and labels are plain text: remove line breaks, tabs, NUL and other control characters"

_NAMES = {"\x00": "NUL", "\t": "tab", "\n": "line feed", "\r": "carriage return", "\x0b": "vertical tab",
          "\x0c": "form feed", "\x1b": "escape", "\x7f": "DEL", "\x85": "next line (NEL)"}


def unsafe_character(text: str) -> str | None:
    """The first character of ``text`` that a name may not hold (see the module docstring), else None."""
    found = UNSAFE.search(text)
    return found.group() if found else None


def check_name(value: object, what: str, error: Callable[[str, str], Exception], hint: str = HINT) -> None:
    """Raise ``error(message, hint)`` when the string ``value`` holds a refused character; ``what`` names the field,
    e.g. ``"spec key 'features'"`` gives "spec key 'features' holds a line feed (U+000A): 'age\\nx'"."""
    if isinstance(value, str) and (char := unsafe_character(value)) is not None:
        raise error(f"{what} holds {describe(char)}: {value!r}", hint)


def text_problem(value: str, max_chars: int, *, opaque: bool = False) -> str | None:
    """What makes ``value`` unfit to keep (None: nothing): more than ``max_chars`` characters, or a refused
    character (every :data:`UNSAFE` one for a name; for ``opaque`` text only NUL and lone surrogates)."""
    if len(value) > max_chars:
        return f"has {len(value):,} characters (at most {max_chars:,})"
    found = (UNSTORABLE if opaque else UNSAFE).search(value)
    if found is not None:
        return f"holds {describe(found.group())} at character {found.start()}"
    return None


def check_text(value: str, where: str, max_chars: int, hint: str, *, opaque: bool = False) -> str:
    """``value`` when :func:`text_problem` finds nothing, else a :class:`~pex.errors.DataError` (422) reading
    "``where`` <problem>"; the message does not repeat the text, which may be long or unprintable."""
    problem = text_problem(value, max_chars, opaque=opaque)
    if problem is not None:
        raise DataError(f"{where} {problem}", hint)
    return value


def describe(char: str) -> str:
    """A character for a message: ``a line feed (U+000A)``, ``a RIGHT-TO-LEFT OVERRIDE (U+202E)``."""
    code = f"U+{ord(char):04X}"
    if char in _NAMES:
        return f"a {_NAMES[char]} ({code})"
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate ({code}, not UTF-8 text)"
    name = unicodedata.name(char, "")
    return f"a {name} ({code})" if name else f"a control character ({code})"


def printable(text: str) -> str:
    """``text`` with every refused character written as an escape (``\\n``, ``\\x00``, ``\\u202e``), for SQL comments
    and other line-based text a name must not break; backslashes are doubled so that the escape reads back unambiguously."""
    text = str(text).replace("\\", "\\\\")
    return UNSAFE.sub(_escape, text)


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in named:
        return named[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
