"""The decision log's writer: decisions are buffered in the serving process and appended to the store in bulk.

A request only appends its rows to an in-memory list (a lock held for a list extend), so logging never waits
for the database. A background thread flushes the buffer every ``flush_seconds`` (at most 1 s) and
:meth:`DecisionLog.close` flushes what is left, so after a graceful stop every decision served is logged.
After a hard kill (SIGKILL, power loss) the decisions of the last ``flush_seconds`` are lost.

No answered decision is dropped silently; each ends in the store or in the workspace's dead-letter file
(:mod:`pex.store.dead_letters`):

* the store is down (unreachable, locked, disk full): the rows stay buffered, oldest first, and the next flush
  tries again;
* the store refuses some rows (a value it cannot hold): the batch is bisected down to the refused rows, which are
  dead-lettered with the store's error, and the rest is logged, so one bad row never blocks the log;
* the workspace's database was removed or replaced under the server: nothing more is written to it and the rows
  are dead-lettered;
* at shutdown, rows the store still does not take are dead-lettered; rows the dead-letter file does not take
  either (the same full disk) are written to the process's log, one JSON line each, as the last resort.

Before a request is answered the server asks :meth:`DecisionLog.admit`, which refuses (a StoreError, 503) while
the buffer is full, the oldest unwritten row has waited longer than ``stall_seconds`` (the store has been
unwritable for that long), or the workspace was replaced; :meth:`DecisionLog.trouble` says the same to the
readiness check, so a load balancer takes the host out instead of piling up decisions that cannot be written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pex.errors import DataError, StoreError, UnavailableError
from pex.store.dead_letters import DeadLetterFile, dead_letter_line

log = logging.getLogger("pex.decisions")

MAX_FLUSH_SECONDS = 1.0
MAX_BUFFERED = 100_000  # rows: about 100 MB of a worker at most, a second or two of a busy server's decisions
STALL_SECONDS = 5.0  # the oldest unwritten row may wait this long before the server stops taking decisions
HINT = "retry on another host, or later; the operator finds the cause in the server's log and /readyz"

Rows = list[dict[str, Any]]


class DecisionLog:
    """A per-process buffer of decision rows in front of ``append`` (e.g. ``Workspace.append_decisions``).

    ``append`` raises :class:`~pex.errors.DataError` when the store refuses a row of the batch and anything else
    (:class:`~pex.errors.StoreError`) when the store cannot be written now. ``check_store`` (e.g.
    ``Workspace.check_identity``) raises a StoreError when the store is no longer the workspace's; ``dead_letter``
    keeps the rows that cannot be logged (without one, they are written to this process's log as errors).
    """

    def __init__(self, append: Callable[[Sequence[dict[str, Any]]], int], flush_seconds: float = 0.5,
                 observe_depth: Callable[[int], None] | None = None, *, dead_letter: DeadLetterFile | None = None,
                 check_store: Callable[[], None] | None = None, max_buffered: int = MAX_BUFFERED,
                 stall_seconds: float = STALL_SECONDS) -> None:
        if not 0 < flush_seconds <= MAX_FLUSH_SECONDS:
            raise ValueError(f"flush_seconds must be in (0, {MAX_FLUSH_SECONDS}], got {flush_seconds}")
        if max_buffered < 1 or stall_seconds <= 0:
            raise ValueError(f"max_buffered must be >= 1 and stall_seconds > 0, got {max_buffered}, {stall_seconds}")
        self._append = append
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.stall_seconds = stall_seconds
        self._dead_letter = dead_letter
        self._check_store = check_store
        self._buffer: Rows = []
        self._buffered_since: float | None = None  # when the oldest row in the buffer arrived
        self._flushing_since: float | None = None  # when the oldest row of the flush in progress arrived
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the thread's and close()'s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.logged = 0  # rows this process has written to the store
        self.dead_lettered = 0  # rows this process has written to the dead-letter file
        self._undeliverable: list[tuple[Rows, str]] = []  # refused rows the dead-letter file did not take yet
        self.replaced: str | None = None  # why the store is not the workspace's any more (then it stays so)
        self.last_error: str | None = None  # the last flush's failure, None after a flush that wrote
        self._observe_depth = observe_depth  # told the buffer's depth after every flush (a metrics gauge)

    # -- the request side --------------------------------------------------------------------------

    def admit(self, n: int = 1) -> None:
        """Raise an UnavailableError (503, its reason in the answer) when ``n`` more decisions must not be answered:
        they could not be logged."""
        if self.replaced is not None or len(self._buffer) + n > self.max_buffered or self._stalled():
            problem = self.trouble(detail=False) or f"the decision log's buffer cannot take {n:,} more decisions"
            raise UnavailableError(f"decisions are not taken now: {problem}", HINT)

    def record(self, rows: Rows) -> None:
        """Buffer decision rows; never touches the store."""
        with self._buffer_lock:
            if not self._buffer:
                self._buffered_since = time.monotonic()
            self._buffer.extend(rows)

    @property
    def depth(self) -> int:
        """Rows buffered and not yet written."""
        return len(self._buffer)

    def trouble(self, detail: bool = True) -> str | None:
        """Why decisions cannot be logged now, or None when they can. ``detail`` adds the store's last error, which
        may name a path or a URL: for the operator (readiness details, the log), not for a client's 503 body."""
        if self.replaced is not None:
            return self.replaced
        if len(self._buffer) >= self.max_buffered:
            return f"the decision log's buffer is full ({self.max_buffered:,} decisions not yet written)"
        if self._stalled():
            why = f"; last error: {self.last_error or 'still writing'}" if detail else ""
            return (f"the decision log could not be written for over {self.stall_seconds:g} s "
                    f"({len(self._buffer):,} decisions buffered{why})")
        return None

    def _stalled(self) -> bool:
        # the rows of a flush in progress arrived before any row now in the buffer: the older of the two is theirs
        oldest = self._flushing_since if self._flushing_since is not None else self._buffered_since
        return oldest is not None and time.monotonic() - oldest > self.stall_seconds

    # -- the flusher -------------------------------------------------------------------------------

    def start(self) -> DecisionLog:
        """Start the background flusher (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pex-decision-log", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # the store is down: the rows stay buffered for the next try
                log.exception("decision log flush failed; %d decisions stay buffered", self.depth)
            if self._observe_depth is not None:
                self._observe_depth(self.depth)

    def flush(self) -> int:
        """Write every buffered row to the store now (refused rows to the dead-letter file); returns how many were
        logged. When the store cannot be written, the unwritten rows go back in front and the error is raised."""
        with self._flush_lock:
            self._retry_undeliverable()
            self._check_replaced()
            with self._buffer_lock:
                rows, self._buffer = self._buffer, []
                self._flushing_since, self._buffered_since = self._buffered_since, None
            if not rows:
                self._flushing_since = None
                return 0
            if self.replaced is not None:
                self._dead(rows, self.replaced)
                self._flushing_since = None
                return 0
            logged = self._write(rows)  # raises when the store is down, the rows back in the buffer
            self._flushing_since = None
            self.last_error = None
            return logged

    def _check_replaced(self) -> None:
        if self._check_store is None or self.replaced is not None:
            return
        try:
            self._check_store()
        except StoreError as exc:
            self.replaced = exc.message
            log.error("decision log: %s; from now on decisions are refused and buffered ones dead-lettered", exc.message)

    def _write(self, rows: Rows) -> int:
        """Append ``rows``, bisecting a refused batch down to its refused rows; returns how many were logged.
        When the store cannot be written, every row not written yet goes back in front of the buffer."""
        logged = 0
        todo = [rows]  # a stack of parts, the next one last: rows keep their order in the log
        while todo:
            part = todo.pop()
            try:
                self._append(part)
            except DataError as exc:  # some row of this part is refused: halve it, or dead-letter the one row
                if len(part) == 1:
                    self._dead(part, exc.message)
                else:
                    middle = len(part) // 2
                    todo += [part[middle:], part[:middle]]
                continue
            except BaseException as exc:  # the store cannot be written now: all that is left goes back, in order
                left = part + [row for later in reversed(todo) for row in later]
                with self._buffer_lock:
                    self._buffer[:0] = left
                    self._buffered_since = self._flushing_since
                self._flushing_since = None
                self.last_error = f"{exc.__class__.__name__}: {exc}"[:500]
                raise
            logged += len(part)
            self.logged += len(part)
        return logged

    def _dead(self, rows: Rows, error: str) -> None:
        """Dead-letter ``rows``; if the file cannot be written either, keep them to try again at the next flush."""
        if self._dead_letter is None:
            _log_rows(rows, error)
            self.dead_lettered += len(rows)
            return
        try:
            self.dead_lettered += self._dead_letter.write(rows, error)
        except OSError as exc:
            log.error("cannot write %d decisions to the dead-letter file (%s); kept in memory to retry", len(rows), exc)
            self._undeliverable.append((rows, error))
            return
        log.error("%d decisions dead-lettered in %s: %s", len(rows), self._dead_letter.folder, error)

    def _retry_undeliverable(self) -> None:
        waiting, self._undeliverable = self._undeliverable, []
        for rows, error in waiting:
            self._dead(rows, error)

    def close(self, attempts: int = 3, pause: float = 0.2, budget: float = 10.0) -> None:
        """Stop the flusher and write what is left (``attempts`` tries, ``pause`` seconds apart, no new try after
        ``budget`` seconds); rows the store still does not take are dead-lettered. Safe to call twice.

        The budget keeps the whole stop within gunicorn's graceful timeout (30 s), after which the worker would be
        killed with its rows: a locked SQLite store makes each try wait up to its busy timeout (10 s)."""
        started = time.monotonic()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=budget)
        error = None
        for attempt in range(attempts):
            try:
                self.flush()
                break
            except Exception as exc:
                error = f"not written at shutdown: {exc.__class__.__name__}: {exc}"[:500]
                log.exception("final decision log flush failed (attempt %d of %d)", attempt + 1, attempts)
                if attempt + 1 == attempts or time.monotonic() - started > budget:
                    break
                time.sleep(pause)
        with self._flush_lock:
            with self._buffer_lock:
                rows, self._buffer = self._buffer, []
                self._buffered_since = None
            if rows:
                self._dead(rows, error or "not written at shutdown")
            self._retry_undeliverable()
            left, self._undeliverable = self._undeliverable, []
        if left:  # the last resort: the process's own log (stderr), one JSON line per decision, so none goes unseen
            log.error("%d decisions could not be logged nor dead-lettered at shutdown; they follow",
                      sum(len(batch) for batch, _ in left))
            for batch, why in left:
                _log_rows(batch, why)


def _log_rows(rows: Rows, error: str) -> None:
    for row in rows:
        log.error("decision not logged: %s", dead_letter_line(row, error))
