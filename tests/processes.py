"""Processes that tests start: always killed at the end, never waited on without a deadline."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class Started:
    """A running process whose stdout lines are read by a thread, so that waiting for a line has a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, prefix: str, timeout: float) -> str | None:
        """The first stdout line starting with ``prefix`` within ``timeout`` seconds; None on timeout or exit."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        return None

    def stdout(self) -> str:
        """Everything read from stdout so far."""
        return "".join(self.lines)

    def signal_and_wait(self, sig: int, timeout: float) -> int | None:
        """Send ``sig``; the exit code, or None when the process is still running after ``timeout`` seconds."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def ignore_sigint() -> None:
    """Start the child with SIGINT ignored, as a shell starts a background job (``cmd &``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def started(args: Sequence[str], *, stderr: Path, env: dict[str, str] | None = None,
            sigint_ignored: bool = False) -> Iterator[Started]:
    """Run ``args`` in its own process group, stderr to a file (a full pipe can never stall it); on leaving, the
    whole group is killed if anything of it is still running."""
    with open(stderr, "w") as err:
        proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True,
                                preexec_fn=ignore_sigint if sigint_ignored else None)
        try:
            yield Started(proc)
        finally:
            try:  # the group too: whatever the process started must not outlive the test
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=30)
            proc.stdout.close()
