"""The server's settings: defaults, then a TOML file (``PEX_CONFIG``), then ``PEX_*`` environment variables.

Here rather than in the web app so that `pex serve` refuses bad settings (exit 2) before it starts gunicorn.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pex.errors import PexError

# name -> default; each is also read from the file (lower case) and from PEX_<NAME>
DEFAULTS: dict[str, Any] = {
    "HOME": None,  # the workspace folder (PEX_HOME); None: ./.pex
    "DATABASE_URL": None,  # PEX_DATABASE_URL; None: SQLite in the workspace
    "REFRESH_SECONDS": 1.0,  # how often each process polls for newly published versions
    "FLUSH_SECONDS": 0.5,  # how often the decision log is written (at most 1 s)
    "MAX_BATCH": 10_000,  # units per decide-batch request
    "TOKEN_TTL_SECONDS": 2.0,  # how long a token's verdict is reused (a revocation takes effect within it)
    # request bodies larger than this get 413; a decide-batch of 10,000 units with a dozen features is ~2.6 MiB
    "MAX_CONTENT_LENGTH": 4 * 1024 * 1024,
    "HEADER_SECONDS": 10.0,  # a connection's whole request head must arrive within this, else it is closed
    "BODY_SECONDS": 10.0,  # a request's body must arrive within this (else 408), and an answer's write take at most this
    # decisions a worker holds unwritten before decides answer 503 (about 1 KB each)
    "MAX_BUFFERED": 100_000,
    # how long the oldest unwritten decision may wait (the log unwritable) before decides answer 503, /readyz fails
    "LOG_STALL_SECONDS": 5.0,
    # -- the web UI (`pex ui`) --
    # signs the UI's session cookies; None: a random key kept in $PEX_HOME/ui-secret (made once, mode 0600), so
    # sessions survive restarts and every worker agrees
    "SECRET_KEY": None,
    "COOKIE_SECURE": False,  # send the session cookie over HTTPS only (set it behind a TLS proxy)
    "UI_MAX_UPLOAD": 200 * 1024 * 1024,  # the largest data file the UI accepts for a new experiment (bytes)
}
def _flag(value: Any) -> bool:
    """A yes/no setting: TOML's true/false, or 1/0, true/false, yes/no, on/off from a variable."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


_flag.__name__ = "true or false"

TYPES = {"REFRESH_SECONDS": float, "FLUSH_SECONDS": float, "MAX_BATCH": int, "TOKEN_TTL_SECONDS": float,
         "MAX_CONTENT_LENGTH": int, "HOME": str, "DATABASE_URL": str, "HEADER_SECONDS": float, "BODY_SECONDS": float,
         "MAX_BUFFERED": int, "LOG_STALL_SECONDS": float, "SECRET_KEY": str, "COOKIE_SECURE": _flag,
         "UI_MAX_UPLOAD": int}


def load_config(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings in effect: defaults < ``PEX_CONFIG`` file < ``PEX_*`` variables < ``overrides`` (tests)."""
    env = os.environ if environ is None else environ
    values = dict(DEFAULTS)
    path = (overrides or {}).get("CONFIG_FILE") or env.get("PEX_CONFIG")
    if path:
        values.update(_read_file(Path(path)))
    for name in DEFAULTS:
        if f"PEX_{name}" in env and env[f"PEX_{name}"] != "":
            values[name] = _cast(name, env[f"PEX_{name}"], f"PEX_{name}")
    for name, value in (overrides or {}).items():
        if name != "CONFIG_FILE":
            values[name] = value
    _check(values)
    return values


def _check(values: dict[str, Any]) -> None:
    limits = {"REFRESH_SECONDS": (0.0, 60.0), "FLUSH_SECONDS": (0.0, 1.0), "TOKEN_TTL_SECONDS": (0.0, 300.0),
              "HEADER_SECONDS": (0.0, 300.0), "BODY_SECONDS": (0.0, 300.0), "LOG_STALL_SECONDS": (0.0, 300.0)}
    for name, (low, high) in limits.items():
        if not low < values[name] <= high:
            raise PexError(f"setting {name.lower()} must be above {low:g} and at most {high:g}, got {values[name]}",
                           f"fix PEX_{name} or {name.lower()} in the PEX_CONFIG file")
    for name in ("MAX_BATCH", "MAX_CONTENT_LENGTH", "MAX_BUFFERED", "UI_MAX_UPLOAD"):
        if values[name] < 1:
            raise PexError(f"setting {name.lower()} must be at least 1, got {values[name]}", f"fix PEX_{name}")
    if values["MAX_BUFFERED"] < values["MAX_BATCH"]:  # else a full batch could never be taken
        raise PexError(f"setting max_buffered ({values['MAX_BUFFERED']}) must be at least max_batch ({values['MAX_BATCH']})",
                       "raise PEX_MAX_BUFFERED or lower PEX_MAX_BATCH")
    if values["SECRET_KEY"] is not None and len(values["SECRET_KEY"]) < 16:  # a short key can be guessed offline
        raise PexError("setting secret_key must be at least 16 characters long",
                       "set PEX_SECRET_KEY to a long random text, or unset it to let pex keep one in $PEX_HOME/ui-secret")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PexError(f"cannot read the server config file {path}: {exc.strerror}", "check PEX_CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise PexError(f"the server config file {path} is not valid TOML: {exc}", "fix the file") from None
    out = {}
    for key, value in data.items():
        name = key.upper()
        if name not in DEFAULTS:
            raise PexError(f"unknown setting {key!r} in {path}", f"known: {', '.join(k.lower() for k in DEFAULTS)}")
        out[name] = _cast(name, value, f"{key} in {path}")
    return out


def _cast(name: str, value: Any, where: str) -> Any:
    try:
        return TYPES[name](value)
    except (TypeError, ValueError):
        raise PexError(f"{where} must be {TYPES[name].__name__}, got {value!r}", "fix the setting") from None
