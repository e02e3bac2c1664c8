"""The decision log's writer: decisions are buffered in the serving process and appended to the store in bulk.

A request only appends its rows to an in-memory list (a lock held for a list extend), so logging never waits
for the database. A background thread flushes the buffer every ``flush_seconds`` (at most 1 s) and
:meth:`DecisionLog.close` flushes what is left, so after a graceful stop every decision served is logged.
After a hard kill (SIGKILL, power loss) the decisions of the last ``flush_seconds`` are lost. When the store
is unreachable the rows stay buffered (oldest first) and the next flush tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("pex.decisions")

MAX_FLUSH_SECONDS = 1.0


class DecisionLog:
    """A per-process buffer of decision rows in front of ``append`` (e.g. ``Workspace.append_decisions``)."""

    def __init__(self, append: Callable[[Sequence[dict[str, Any]]], int], flush_seconds: float = 0.5,
                 observe_depth: Callable[[int], None] | None = None) -> None:
        if not 0 < flush_seconds <= MAX_FLUSH_SECONDS:
            raise ValueError(f"flush_seconds must be in (0, {MAX_FLUSH_SECONDS}], got {flush_seconds}")
        self._append = append
        self.flush_seconds = flush_seconds
        self._buffer: list[dict[str, Any]] = []
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the thread's and close()'s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.logged = 0  # rows this process has written to the store
        self._observe_depth = observe_depth  # told the buffer's depth after every flush (a metrics gauge)

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Buffer decision rows; never touches the store."""
        with self._buffer_lock:
            self._buffer.extend(rows)

    @property
    def depth(self) -> int:
        """Rows buffered and not yet written."""
        return len(self._buffer)

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
            except Exception:  # the store is down or refused the rows: they stay buffered for the next try
                log.exception("decision log flush failed; %d decisions stay buffered", self.depth)
            if self._observe_depth is not None:
                self._observe_depth(self.depth)

    def flush(self) -> int:
        """Write every buffered row to the store now; returns how many. On failure the rows go back in front."""
        with self._flush_lock:
            with self._buffer_lock:
                rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                self._append(rows)
            except BaseException:
                with self._buffer_lock:
                    self._buffer[:0] = rows
                raise
            self.logged += len(rows)
            return len(rows)

    def close(self, attempts: int = 3) -> None:
        """Stop the flusher and write what is left (retrying ``attempts`` times); safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        for attempt in range(attempts):
            try:
                self.flush()
                return
            except Exception:
                log.exception("final decision log flush failed (attempt %d of %d)", attempt + 1, attempts)
        if self.depth:
            log.error("%d decisions could not be logged at shutdown", self.depth)
