"""The background worker (`pex worker`, and the one `pex ui` starts): runs queued jobs one at a time.

Each loop: mark the jobs of dead workers ``interrupted``, refresh the monitor's rollups, claim the oldest queued
job (atomically: :meth:`pex.store.jobs.JobsMixin.claim_job`) and run it in a child process
(``python -m pex.services.worker --job ID``), so that a crash, a leak or a kill of the job never takes the worker
with it and a stuck job can be stopped by signals.

While the child runs, the worker writes the job's heartbeat every :data:`HEARTBEAT_SECONDS`, keeps the rollups
current, and polls the job's ``cancel_requested`` every half second. A cancel is clean: SIGUSR1 asks the child to
stop at its next progress callback (raising :class:`pex.services.progress.Cancelled`, which unwinds through every
transaction; a run is recorded only at its end), SIGTERM follows after :data:`CANCEL_GRACE` seconds (the child
raises Cancelled from the handler), SIGKILL after twice that. The child writes its own outcome (succeeded with
the run id, failed with the PexError's message and hint, cancelled); an unexpected exception is recorded as its
type and message with the hint "see the worker's log", and its traceback goes to the worker's stderr, never to
the UI. When the child ends without an outcome (killed), the worker writes one.

The child watches its parent: Linux's PR_SET_PDEATHSIG kills it when the worker dies, and a thread checking
``os.getppid()`` every half second does the same elsewhere. A job whose worker died is marked ``interrupted``
("the worker stopped while this job ran; run it again") by the next worker, on start and in its loop: when that
worker ran on this host and its pid is gone, or its heartbeat is older than :data:`STALE_SECONDS`. Jobs are
never retried silently.

SIGTERM (or SIGINT) to the worker: it claims nothing more, stops the running child the same way as a cancel,
and the job ends ``interrupted`` (the owner did not cancel it; "run again" runs it) - a deploy that restarts the
worker never leaves a job "running" for STALE_SECONDS, nor half-runs one twice.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pex.errors import PexError
from pex.services.progress import Cancelled, Progress
from pex.store.jobs import JobRecord
from pex.store.workspace import Workspace

HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 30.0  # a running job whose heartbeat is older belongs to a dead (or cut-off) worker
CANCEL_POLL = 0.5
CANCEL_GRACE = 3.0  # seconds from asking the child to stop to SIGTERM; SIGKILL after twice as long
ROLLUP_SECONDS = 5.0  # the monitor's counts are refreshed at least this often, also while a job runs
WATCH_SECONDS = 30.0  # an idle worker runs the rollout watcher (pex.services.watch.tick) at most this often
WRITE_INTERVAL = 0.5  # the child writes progress at most twice a second (stage changes at once)
INTERRUPTED = "the worker stopped while this job ran; run it again"
INTERRUPTED_HINT = "run it again: the job page's Run again, or `pex jobs rerun ID`"


def worker_name() -> str:
    """This process as a job's ``worker``: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def dead_workers_jobs(ws: Workspace, me: str, now: datetime | None = None) -> list[JobRecord]:
    """The running jobs whose worker is dead: on this host with its pid gone, or with a stale heartbeat.

    Called by an idle worker ``me``: a running job under its own name is a dead predecessor's that had the same host
    name and pid (a restarted container, where the worker is always the same pid), so it counts as dead too.
    """
    now = now or datetime.now(UTC)
    host = socket.gethostname()
    found = []
    for job in ws.list_jobs(status="running", limit=None):
        their_host, _, pid = (job.worker or "").rpartition(":")
        gone = job.worker == me or (their_host == host and pid.isdigit() and not _alive(int(pid)))
        stale = job.heartbeat_at is None or now - job.heartbeat_at > timedelta(seconds=STALE_SECONDS)
        if gone or stale:
            found.append(job)
    return found


def mark_interrupted(ws: Workspace, me: str) -> list[int]:
    """Mark the jobs of dead workers ``interrupted`` (called by the idle worker ``me``); returns their ids."""
    return [job.id for job in dead_workers_jobs(ws, me)
            if ws.interrupt_job(job.id, job.worker, INTERRUPTED, INTERRUPTED_HINT)]


def _say(line: str) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} pex worker: {line}", flush=True)


@dataclass
class Worker:
    """One worker over the workspace at ``home``: :meth:`loop` until stopped, or :meth:`once`."""

    home: Path
    poll: float = 1.0
    name: str = field(default_factory=worker_name)
    say: Callable[[str], None] = _say
    stopping: threading.Event = field(default_factory=threading.Event)
    _last_rollup: float = 0.0
    _last_watch: float = -WATCH_SECONDS  # so that the first idle loop watches

    def housekeeping(self, ws: Workspace) -> None:
        """Mark dead workers' jobs interrupted and refresh the rollups; a failure is logged, never fatal."""
        try:
            for job_id in mark_interrupted(ws, self.name):
                self.say(f"job {job_id} marked interrupted (its worker is gone)")
        except PexError as exc:
            self.say(f"could not check for interrupted jobs: {exc.message}")
        self.refresh_rollups(ws)
        if time.monotonic() - self._last_watch >= WATCH_SECONDS:
            self.watch(ws)

    def watch(self, ws: Workspace) -> None:
        """One pass of the rollout watcher (:func:`pex.services.watch.tick`); any failure is logged, never fatal:
        a broken rollout check must not stop the worker from running jobs."""
        from pex.services.watch import tick

        self._last_watch = time.monotonic()
        try:
            tick(ws, say=self.say)
        except Exception as exc:  # the worker's job loop outlives any watcher failure
            self.say(f"the rollout watcher failed: {exc.__class__.__name__}: {exc}")

    def refresh_rollups(self, ws: Workspace) -> None:
        """Refresh the monitor's counts (:func:`pex.services.rollups.refresh`); a failure is logged."""
        from pex.services.rollups import refresh

        self._last_rollup = time.monotonic()
        try:
            refresh(ws)
        except PexError as exc:  # e.g. workspace busy: the next loop tries again
            self.say(f"could not refresh the monitor's counts: {exc.message}")

    def once(self, ws: Workspace | None = None) -> JobRecord | None:
        """Housekeeping, then claim one queued job and run it to its end; the job (as it ended), or None."""
        if ws is None:
            with Workspace(self.home) as opened:
                return self.once(opened)
        self.housekeeping(ws)
        if self.stopping.is_set():
            return None
        job = ws.claim_job(self.name)
        if job is None:
            return None
        self.say(f"job {job.id} ({job.kind} {job.experiment}) claimed, asked by {job.actor}")
        self.supervise(ws, job)
        ended = ws.get_job(job.id)
        self.say(f"job {job.id} {ended.status}" + (f": {ended.error}" if ended.error else ""))
        return ended

    def loop(self) -> None:
        """Run jobs until :attr:`stopping` is set (SIGTERM / SIGINT in `pex worker`)."""
        with Workspace(self.home) as ws:
            self.say(f"started as {self.name} on {self.home.resolve()}, polling every {self.poll:g} s")
            while not self.stopping.is_set():
                try:
                    ended = self.once(ws)
                except PexError as exc:  # the database unreachable or busy for a moment: wait, then go on
                    self.say(f"{exc.message}; retrying in {self.poll:g} s")
                    ended = None
                if ended is None:
                    self.stopping.wait(self.poll)
        self.say("stopped")

    def supervise(self, ws: Workspace, job: JobRecord) -> None:
        """Run ``job`` in a child process until it ends: heartbeat, cancel, stop; its outcome written either way."""
        child = subprocess.Popen([sys.executable, "-m", "pex.services.worker", "--job", str(job.id),
                                  "--home", str(self.home.resolve())])
        beat = time.monotonic()
        asked: float | None = None  # when the child was asked to stop
        termed = killed = False
        cancelled = False
        while child.poll() is None:
            time.sleep(CANCEL_POLL)
            now = time.monotonic()
            try:
                if now - beat >= HEARTBEAT_SECONDS:
                    if (not ws.job_heartbeat(job.id) and asked is None
                            and ws.get_job(job.id).status == "interrupted"):
                        # another worker took this one for dead and ended its job: the child must not run on
                        self.say(f"job {job.id} is no longer running here; stopping its process")
                        asked = now
                        _signal(child, signal.SIGTERM)
                        termed = True
                    beat = now
                if asked is None and not cancelled:
                    cancelled = ws.get_job(job.id).cancel_requested
                if now - self._last_rollup >= ROLLUP_SECONDS:
                    self.refresh_rollups(ws)
            except PexError as exc:  # a busy or unreachable database: the child goes on, the next poll retries
                self.say(f"job {job.id}: {exc.message}")
            if asked is None and (cancelled or self.stopping.is_set()):
                asked = now
                self.say(f"job {job.id}: " + ("cancel requested, stopping it" if cancelled else "stopping it (worker stopping)"))
                _signal(child, signal.SIGTERM if self.stopping.is_set() else signal.SIGUSR1)
                termed = self.stopping.is_set()
            elif asked is not None and not termed and now - asked > CANCEL_GRACE:
                _signal(child, signal.SIGTERM)
                termed = True
            elif asked is not None and not killed and now - asked > 2 * CANCEL_GRACE:
                _signal(child, signal.SIGKILL)
                killed = True
        ended = ws.get_job(job.id)
        if ended.status == "running":  # the child ended without writing an outcome: killed, or crashed hard
            if ended.cancel_requested:
                ws.finish_job(job.id, "cancelled", message="cancelled")
            elif self.stopping.is_set():
                ws.finish_job(job.id, "interrupted", message=INTERRUPTED, error=INTERRUPTED, hint=INTERRUPTED_HINT)
            else:
                error = f"the job's process ended unexpectedly (exit code {child.returncode})"
                ws.finish_job(job.id, "failed", message=error, error=error, hint="see the worker's log")


def _signal(child: subprocess.Popen, sig: int) -> None:
    try:
        child.send_signal(sig)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# the child: runs one job


class _Reporter:
    """The child's progress and log lines, written to the job's row at most every WRITE_INTERVAL seconds (at once on
    a change of stage); raises Cancelled at a callback once the worker asked to stop, until the run starts to be
    recorded (from then on it finishes: it takes a moment, and stopping it would only undo it)."""

    def __init__(self, ws: Workspace, job_id: int, stop: threading.Event) -> None:
        self.ws, self.job_id, self.stop = ws, job_id, stop
        self.values: dict[str, Any] = {}
        self.lines: list[str] = []
        self.stage: str | None = None
        self.committing = False
        self._written = 0.0

    def check(self) -> None:
        if self.stop.is_set() and not self.committing:
            raise Cancelled("the job was asked to stop")

    def progress(self, event: Progress) -> None:
        self.check()
        changed = event.stage != self.stage
        self.stage = event.stage
        self.committing = self.committing or event.stage == "report"
        self.values = {"stage": event.stage, "message": event.message, "fraction": event.fraction}
        self.flush(force=changed)

    def line(self, text: str) -> None:
        self.lines.append(f"{datetime.now(UTC):%H:%M:%S} {text.strip()}")
        self.check()
        self.flush()

    def flush(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._written < WRITE_INTERVAL:
            return
        lines, self.lines = self.lines, []
        self.ws.job_progress(self.job_id, lines=lines, **self.values)
        self._written = now


def _watch_parent() -> None:
    """End this process when its parent (the worker) dies, so that a SIGKILLed worker's job never runs on."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:  # PR_SET_PDEATHSIG (1): the kernel sends SIGKILL when the parent thread exits
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(70)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    if os.getppid() != parent:  # it died before the kernel knew to tell us
        os._exit(70)


def execute(home: str | Path, job_id: int) -> str:
    """Run job ``job_id`` in this process (the worker's child) and write its outcome; returns its final status."""
    stop = threading.Event()
    reporter: _Reporter | None = None

    def on_usr1(_signum: int, _frame: object) -> None:
        stop.set()

    def on_term(_signum: int, _frame: object) -> None:
        stop.set()
        if reporter is not None and not reporter.committing:
            raise Cancelled("the job was stopped")

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at the worker's terminal is the worker's to handle
    with Workspace(home) as ws:
        job = ws.get_job(job_id)
        reporter = _Reporter(ws, job_id, stop)
        outcome: dict[str, Any]
        try:
            run_id = _dispatch(ws, job, reporter)
            outcome = {"status": "succeeded", "message": "done", "run_id": run_id, "fraction": 1.0}
        except Cancelled:
            if ws.get_job(job_id).cancel_requested:
                outcome = {"status": "cancelled", "message": "cancelled"}
            else:
                outcome = {"status": "interrupted", "message": INTERRUPTED, "error": INTERRUPTED, "hint": INTERRUPTED_HINT}
        except PexError as exc:
            outcome = {"status": "failed", "message": exc.message, "error": exc.message, "hint": exc.hint}
        except Exception as exc:  # any failure of the job is its outcome; the traceback goes to the worker's log
            print(f"job {job_id} failed:", file=sys.stderr)
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
            outcome = {"status": "failed", "message": error, "error": error, "hint": "see the worker's log"}
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # from here a stop may kill, never raise half-way through
        try:
            reporter.committing = True
            reporter.flush()
        except PexError:
            pass  # the log tail is a convenience; the outcome below is what counts
        status = outcome.pop("status")
        ws.finish_job(job_id, status, **outcome)
        return status


def _dispatch(ws: Workspace, job: JobRecord, reporter: _Reporter) -> int | None:
    """Do the work of ``job``; the id of the run it recorded, if any."""
    params = {k: v for k, v in job.params.items() if k != "experiment"}
    if job.kind == "run":
        from pex.services.run import RunOptions, run_stored

        version = params.pop("dataset_version", None)
        result = run_stored(ws, job.experiment, version, options=RunOptions(**params), say=reporter.line,
                            on_progress=reporter.progress)
        return result.run_id
    if job.kind == "online_start":
        from pex.services.online import LoopOptions, start_loop

        reporter.progress(Progress("online", 1, 1, "building round 1's candidate policies", 0.1))
        start_loop(ws, job.experiment, LoopOptions(**params), say=reporter.line)
        return None
    if job.kind == "online_complete":
        from pex.services.online import complete_round

        reporter.progress(Progress("online", 1, 1, "measuring the open round", 0.1))
        complete_round(ws, job.experiment, next_round=params.get("next_round", False),
                       abandon_empty=params.get("abandon_empty", False), say=reporter.line)
        return None
    raise PexError(f"unknown job kind {job.kind!r}", "this worker is older than whoever queued the job: upgrade it")


def main(argv: list[str] | None = None) -> int:
    """``python -m pex.services.worker --job ID --home DIR``: the child process of one job."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pex.services.worker")
    parser.add_argument("--job", type=int, required=True)
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    _watch_parent()
    execute(args.home, args.job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
