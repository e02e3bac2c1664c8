"""How pex writes numbers, for every view of a result (the HTML report, the terminal text, the web UI).

Two styles, each with its own names so that one name always means one format:

* **page** (:func:`fmt_num`, :func:`fmt_signed`, :func:`fmt_pct`, :func:`fmt_p`, :func:`fmt_seconds`): significant
  digits, so small and large values both read well in a table; a missing value is an en dash.
* **terminal** (:func:`fmt_decimals`, :func:`fmt_pct1`, :func:`fmt_p_terminal`): fixed decimals, so columns of an
  aligned plain-text table line up; a missing value is an ASCII hyphen.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

MISSING = "–"  # the page's mark for a value that is missing or not finite
MISSING_TERMINAL = "-"


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite real number (not a bool, not None, not NaN or infinite)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


# --------------------------------------------------------------------------- page style


def fmt_num(x: Any, sig: int = 4) -> str:
    """``x`` with ``sig`` significant digits; thousands separated; '–' when missing."""
    if not finite(x):
        return MISSING
    ax = abs(x)
    if ax >= 1000 or (isinstance(x, int) and not isinstance(x, bool)):
        return f"{x:,.0f}"
    if ax == 0:
        return "0"
    if ax < 1e-4:
        return f"{x:.2e}"
    return f"{x:.{sig}g}"


def fmt_signed(x: Any, sig: int = 4) -> str:
    """``x`` as :func:`fmt_num`, with a plus sign when positive."""
    s = fmt_num(x, sig)
    return "+" + s if finite(x) and x > 0 else s


def fmt_pct(x: Any, signed: bool = True) -> str:
    """A share or relative change as a percentage with about three significant digits."""
    if not finite(x):
        return MISSING
    pct = 100 * x
    ap = abs(pct)
    body = f"{pct:.0f}" if ap >= 100 else f"{pct:.3g}" if ap >= 0.01 else ("0" if pct == 0 else f"{pct:.1e}")
    return ("+" + body if signed and pct > 0 else body) + "%"


def fmt_p(p: Any) -> str:
    """A p-value with three decimals, or '< 0.001'."""
    if not finite(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_seconds(s: Any) -> str:
    """A duration in seconds or minutes."""
    if not finite(s):
        return MISSING
    return f"{s:.2g} s" if s < 1 else f"{s:.1f} s" if s < 100 else f"{s / 60:.1f} min"


# --------------------------------------------------------------------------- terminal style


def fmt_decimals(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals (significant digits when tiny); '-' when missing."""
    if not finite(x):
        return MISSING_TERMINAL
    if x != 0 and abs(x) < 10 ** -(digits - 1):
        return f"{x:.{digits}g}"
    return f"{x:,.{digits}f}"


def fmt_pct1(x: float | None, signed: bool = True) -> str:
    """A share or relative change as a percentage with one decimal; '-' when missing."""
    if not finite(x):
        return MISSING_TERMINAL
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def fmt_p_terminal(p: float | None) -> str:
    """A p-value with three decimals, or '<0.001'; '-' when missing."""
    if not finite(p):
        return MISSING_TERMINAL
    return "<0.001" if p < 0.001 else f"{p:.3f}"
