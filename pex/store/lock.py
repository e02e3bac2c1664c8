"""The workspace writers' lock, taken with a deadline: a held lock answers "workspace busy", never a hang.

An advisory ``flock`` on ``$PEX_HOME/.lock`` (across processes on this host). A blocking ``flock`` waits for
ever: with the lock held 40 s, admin publishes hung and, with sync workers, decides and ``/healthz`` timed out
behind them (issue 24). So the lock is polled (``LOCK_NB``, sleeps growing from 5 ms to 100 ms) until a deadline,
:data:`DEFAULT_SECONDS` or ``PEX_LOCK_SECONDS``, and then :class:`~pex.errors.BusyError` is raised (HTTP 503,
CLI exit 2). The holder writes who it is (pid and program name) into the lock file while it holds it, so that the
error can say what holds the workspace; the message never names a path (it is an HTTP answer too).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pex.errors import BusyError, PexError
from pex.names import printable

DEFAULT_SECONDS = 5.0  # longer than any writer's hold on a healthy workspace, far shorter than an HTTP client's timeout
MAX_SECONDS = 600.0
_FIRST_SLEEP, _MAX_SLEEP = 0.005, 0.1


def lock_seconds() -> float:
    """How long a writer waits for the workspace lock: ``PEX_LOCK_SECONDS``, else :data:`DEFAULT_SECONDS`."""
    raw = os.environ.get("PEX_LOCK_SECONDS", "")
    if raw == "":
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0.0 < seconds <= MAX_SECONDS:  # NaN fails too
        raise PexError(f"PEX_LOCK_SECONDS must be a number of seconds above 0 and at most {MAX_SECONDS:g}, got {raw!r}",
                       f"unset it for the default of {DEFAULT_SECONDS:g} s")
    return seconds


@contextmanager
def held(fh: BinaryIO, seconds: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the open lock file ``fh``, waiting at most ``seconds`` (default
    :func:`lock_seconds`) for it, else raise :class:`~pex.errors.BusyError`."""
    wait = lock_seconds() if seconds is None else seconds
    deadline = time.monotonic() + wait
    sleep = _FIRST_SLEEP
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _busy(fh, wait) from None
            time.sleep(min(sleep, left))
            sleep = min(sleep * 2, _MAX_SLEEP)
    try:
        _write_holder(fh)
        yield
    finally:
        _write_holder(fh, clear=True)  # a later reader must not blame a process that has let go
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _busy(fh: BinaryIO, waited: float) -> BusyError:
    holder = _read_holder(fh)
    who = f" (held by {holder})" if holder else ""
    return BusyError(f"workspace busy: another writer has held its lock for more than {waited:g} s{who}",
                     "retry in a few seconds; a publish, rollback, ingest or run is writing to the workspace "
                     "(decisions are served meanwhile); PEX_LOCK_SECONDS sets how long writers wait")


def _write_holder(fh: BinaryIO, clear: bool = False) -> None:
    try:
        fh.truncate(0)
        if not clear:
            fh.write(f"{_program()} pid {os.getpid()}".encode())
        fh.flush()
    except OSError:  # the note is a courtesy for the busy message; a full disk must not fail the write it guards
        pass


def _read_holder(fh: BinaryIO) -> str:
    try:
        text = os.pread(fh.fileno(), 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return printable(text)


def _program() -> str:
    """The program holding the lock, e.g. ``pex`` or ``gunicorn``: its name only, never a path or an argument."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name and not name.startswith("-") else "python"  # `python -c` has argv[0] "-c"
