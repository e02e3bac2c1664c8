"""Soak: `pex serve` under steady load for minutes, with outcomes, a publish and a rollback in the middle.

Usage (from the repository root)::

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 1000] [--clients 2] [--threads 4] [--workers 2]

``--minutes 1`` is the quick mode. In a temporary workspace it simulates an experiment, runs the pipeline and
publishes a tree policy (bench/serve.py's ``prepare``), stores a second version of the tree (more exploration)
and makes an admin token. Then it starts `pex serve` under gunicorn and drives it for ``--minutes`` at
``--rate`` decisions/s: ``--clients`` processes of ``--threads`` threads, each thread one keep-alive HTTP session
sending single decides at its share of the rate (a thread that falls behind sends at once until it has caught
up, so the achieved rate says how far the server kept up). Every 20th unit (5%) also sends an outcome for
itself. At 40% of the run the second version is published over the API, at 60% the first is restored with
a rollback. Every few seconds the summed resident memory (RSS) of the gunicorn workers is sampled (psutil
when installed, else /proc).

After the load, `pex serve` is stopped gracefully (SIGTERM: each worker flushes its decision log) and the
workspace is read: decisions logged must equal decisions answered 200, and outcomes stored must equal
outcomes answered 200. Latency is each request's own time (send to whole answer).

Prints the figures and exits non-zero when a target is missed: any 5xx (or any request without an answer),
logged != answered, outcomes stored != answered, RSS growth of 10% or more from the sample after the warm-up
(the first 10% of the run, at most 30 s) to the last, a publish or rollback not answered 200, or a server
that does not stop cleanly. The achieved rate is printed against ``--rate`` but is not a pass/fail target:
the machine running the soak decides it as much as the server does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench.serve is imported from this checkout
    sys.path.insert(0, str(ROOT))

from bench.serve import EXPERIMENT, HOST, BenchError, pex, prepare, running, start_pex, wait_ready  # noqa: E402

OUTCOME_EVERY = 20  # every 20th unit reports an outcome: 5%
RSS_EVERY = 5.0  # seconds between memory samples
MAX_RSS_GROWTH = 0.10
SECOND_EXPLORATION = 0.25  # the second version of the tree differs only in its exploration


# -- the load, in each client process ------------------------------------------------------------------------------


@dataclass
class Job:
    """What one client process is to do (picklable: it crosses into the process)."""

    client: int
    threads: int
    rate: float  # this process's decisions per second, over all its threads
    start: float  # wall-clock time (time.time) to begin
    stop: float  # wall-clock time to stop sending
    port: int
    path: str
    token: str
    experiment: str
    metric: str
    rows: list[dict]


@dataclass
class Tally:
    """What a client process saw."""

    decisions: int = 0  # decides answered 200
    outcomes: int = 0  # outcome calls answered 200
    statuses: Counter = field(default_factory=Counter)  # every answer's status
    no_answer: int = 0  # requests that got no answer (connection error or timeout)
    errors: Counter = field(default_factory=Counter)  # their exception types
    latencies_ms: list[float] = field(default_factory=list)  # decides answered 200

    def add(self, other: Tally) -> None:
        self.decisions += other.decisions
        self.outcomes += other.outcomes
        self.statuses.update(other.statuses)
        self.no_answer += other.no_answer
        self.errors.update(other.errors)
        self.latencies_ms += other.latencies_ms


def post(conn: http.client.HTTPConnection, path: str, body: dict, headers: dict[str, str]) -> tuple[int, bytes]:
    """One POST on a keep-alive connection (http.client reconnects by itself when the server closed it)."""
    conn.request("POST", path, body=json.dumps(body, separators=(",", ":")), headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def send(conn: http.client.HTTPConnection, path: str, body: dict, headers: dict[str, str], mine: Tally) -> int | None:
    """:func:`post`, counted in ``mine``: its status, or None (and the connection closed) when no answer came."""
    try:
        status, _ = post(conn, path, body, headers)
    except (OSError, http.client.HTTPException) as exc:
        mine.no_answer += 1
        mine.errors[type(exc).__name__] += 1
        conn.close()
        return None
    mine.statuses[status] += 1
    return status


def session(job: Job, thread: int, tally: Tally, lock: threading.Lock) -> None:
    """One thread: decides at ``job.rate / job.threads`` per second on one connection until ``job.stop``."""
    mine = Tally()
    headers = {"Authorization": f"Bearer {job.token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(HOST, job.port, timeout=30)
    interval = job.threads / job.rate
    due = job.start + thread * interval / job.threads  # the threads' sends are spread over one interval
    i = 0
    while True:
        now = time.time()
        if now >= job.stop:
            break
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # more than a second behind: do not try to make up for all of it at once
            due = now
        due += interval
        unit = f"soak-{job.client}-{thread}-{i}"
        body = {"unit": unit, "features": job.rows[i % len(job.rows)]}
        i += 1
        sent = time.perf_counter()
        if send(conn, job.path, body, headers, mine) != 200:
            continue
        mine.decisions += 1
        mine.latencies_ms.append((time.perf_counter() - sent) * 1e3)
        if i % OUTCOME_EVERY == 1:
            record = {"experiment": job.experiment, "records": [{"unit": unit, "metric": job.metric, "value": 1}]}
            mine.outcomes += send(conn, "/api/v1/outcomes", record, headers, mine) == 200
    conn.close()
    with lock:
        tally.add(mine)


def drive(job: Job) -> Tally:
    """A client process: ``job.threads`` sessions; their tally."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops everything
    tally, lock = Tally(), threading.Lock()
    threads = [threading.Thread(target=session, args=(job, t, tally, lock), daemon=True) for t in range(job.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, job.stop - time.time()) + 60)
    return tally


def run_client(job: Job, results: Any) -> None:
    """The body of a client process: drive, then hand the tally to the parent."""
    results.put(drive(job))


@contextmanager
def clients(jobs: list[Job]) -> Iterator[Callable[[], Tally]]:
    """One process per job, started now; yields a function that waits for them all and returns their summed tally.
    On leaving, whatever is still running of them is terminated (Ctrl-C does not wait for the load to end)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    queue = context.Queue()
    procs = [context.Process(target=run_client, args=(job, queue), daemon=True) for job in jobs]
    for p in procs:
        p.start()
    deadline = max(job.stop for job in jobs) + 120

    def results() -> Tally:
        tally = Tally()
        for _ in procs:  # read before joining: a child cannot exit while its tally is still in the pipe
            try:
                tally.add(queue.get(timeout=max(1.0, deadline - time.time())))
            except Empty:
                raise BenchError("a client process sent no tally within 2 minutes of the end of the load") from None
        for p in procs:
            p.join(timeout=30)
        return tally

    try:
        yield results
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)


# -- memory of the server's workers ---------------------------------------------------------------------------------


def worker_rss(master: int) -> tuple[int, int]:
    """(summed RSS in bytes, number) of the direct children of the gunicorn master ``master``: its workers."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        total, n = 0, 0
        for child in psutil.Process(master).children():
            try:
                total += child.memory_info().rss
                n += 1
            except psutil.NoSuchProcess:  # a worker that just exited
                pass
        return total, n
    total, n = 0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == master:
                total += int((entry / "statm").read_text().split()[1]) * page
                n += 1
        except (OSError, ValueError, IndexError):
            pass
    return total, n


# -- admin calls -----------------------------------------------------------------------------------------------------


def admin(port: int, token: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """An admin POST; (status, JSON answer)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        status, data = post(conn, path, body or {}, {"Authorization": f"Bearer {token}",
                                                      "Content-Type": "application/json"})
    finally:
        conn.close()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, {"text": data[:300].decode(errors="replace")}


# -- the run ---------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """The soak's figures."""

    seconds: float
    tally: Tally
    logged: int
    outcomes_stored: int
    rss_mb: list[tuple[float, float, int]]  # (seconds since the start, MB, workers)
    warmup: float
    releases: list[tuple[str, int, dict]]  # (action, status, answer)
    stop_code: int | None

    @property
    def rss_start(self) -> float:
        after = [mb for t, mb, _ in self.rss_mb if t >= self.warmup]
        return after[0] if after else self.rss_mb[0][1]

    @property
    def rss_end(self) -> float:
        return self.rss_mb[-1][1]

    @property
    def growth(self) -> float:
        return self.rss_end / self.rss_start - 1

    def failures(self) -> list[str]:
        """The targets missed."""
        t = self.tally
        out = []
        five = sum(n for s, n in t.statuses.items() if s >= 500)
        if five:
            out.append(f"{five} answers were 5xx")
        other = sum(n for s, n in t.statuses.items() if s != 200 and s < 500)
        if other:
            out.append(f"{other} answers were neither 200 nor 5xx")
        if t.no_answer:
            out.append(f"{t.no_answer} requests got no answer ({dict(t.errors)})")
        if self.logged != t.decisions:
            out.append(f"{self.logged:,} decisions logged but {t.decisions:,} answered")
        if self.outcomes_stored != t.outcomes:
            out.append(f"{self.outcomes_stored:,} outcomes stored but {t.outcomes:,} answered")
        if self.growth >= MAX_RSS_GROWTH:
            out.append(f"worker RSS grew {self.growth:.1%} (at most {MAX_RSS_GROWTH:.0%})")
        out += [f"{action} answered {status}: {answer}" for action, status, answer in self.releases if status != 200]
        if len(self.releases) < 2:
            out.append("the publish and the rollback were not both made")
        if self.stop_code != 0:
            out.append(f"pex serve did not stop cleanly on SIGTERM (exit {self.stop_code})")
        return out


def report(r: Result, target: float) -> None:
    """Print the figures."""
    t = r.tally
    ms = np.asarray(t.latencies_ms) if t.latencies_ms else np.asarray([np.nan])
    rate = t.decisions / r.seconds
    five = sum(n for s, n in t.statuses.items() if s >= 500)
    print(f"\ndecisions answered: {t.decisions:,} in {r.seconds:.0f} s: {rate:,.0f}/s (target {target:,.0f}/s"
          f"{'' if rate >= 0.9 * target else ', NOT reached'})")
    print(f"answers by status: {dict(sorted(t.statuses.items()))}; 5xx: {five}; no answer: {t.no_answer}")
    print(f"decisions logged after the graceful stop: {r.logged:,} ({'==' if r.logged == t.decisions else '!='} answered)")
    print(f"outcomes answered: {t.outcomes:,}; stored: {r.outcomes_stored:,}")
    print(f"latency: p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {np.max(ms):.1f} ms")
    print(f"worker RSS: start {r.rss_start:.1f} MB (after {r.warmup:.0f} s of warm-up), end {r.rss_end:.1f} MB, "
          f"growth {r.growth:+.1%}, max {max(mb for _, mb, _ in r.rss_mb):.1f} MB; "
          f"{len(r.rss_mb)} samples, workers {sorted({n for _, _, n in r.rss_mb})}")
    for action, status, answer in r.releases:
        print(f"{action}: {status} {answer.get('from_version', '')} -> {answer.get('to_version', '')}")


def second_version(home: Path, tree: str) -> tuple[int, int]:
    """Store a second version of the live tree (more exploration); (live version, new version)."""
    from pex.store.workspace import Workspace as Store

    with Store(home, create=False) as ws:
        record = ws.get_policy(tree)
        stored = ws.put_policies(EXPERIMENT, [({**record.document, "exploration": SECOND_EXPLORATION}, None)],
                                 fit_id=record.fit_id)
    return record.version, stored[0].version


def outcome_metric(root: Path) -> str:
    """The experiment's primary metric (the value 1 sent for it fits a count and a 0/1 metric alike)."""
    from pex.experiment.spec import load_spec

    spec = load_spec(root / "data" / f"{EXPERIMENT}.toml")
    return next((m for m, s in spec.metrics.items() if s.role == "primary"), next(iter(spec.metrics)))


def soak(args: argparse.Namespace, root: Path) -> Result:
    from pex.store.workspace import Workspace as Store

    ws = prepare(root, args.units, dense=16)
    old, new = second_version(ws.home, ws.tree)
    admin_token = pex(["token", "create", "--scope", "admin", "--name", "soak-admin"], ws.home).strip()
    metric = outcome_metric(root)
    with Store(ws.home, create=False) as store:
        outcomes_before = len(store.read_outcomes(EXPERIMENT))
        logged_before = store.count_decisions()
    seconds = args.minutes * 60
    warmup = min(30.0, seconds / 10)
    with running(start_pex(root, ws.home, args.workers, args.server_threads)) as server:
        wait_ready(server, args.workers)
        start = time.time() + 1.0
        stop = start + seconds
        jobs = [Job(c, args.threads, args.rate / args.clients, start, stop, server.port,
                    f"/api/v1/policies/{ws.tree}/decide", ws.token, EXPERIMENT, metric, ws.rows)
                for c in range(args.clients)]
        print(f"soak: {seconds:.0f} s at {args.rate:,.0f} decisions/s on {ws.tree} v{old}, {args.clients} client "
              f"processes x {args.threads} keep-alive sessions, {args.workers} gunicorn workers of {args.server_threads} "
              f"threads; v{new} published at 40%, rolled back at 60%", flush=True)
        rss: list[tuple[float, float, int]] = []
        releases: list[tuple[str, int, dict]] = []
        plan = [(start + 0.4 * seconds, "publish", f"/api/v1/policies/{ws.tree}/publish",
                 {"version": new, "force": True, "reason": "soak benchmark"}),
                (start + 0.6 * seconds, "rollback", f"/api/v1/policies/{ws.tree}/rollback", None)]
        with clients(jobs) as results:
            next_sample = time.time()
            while time.time() < stop:
                now = time.time()
                if plan and now >= plan[0][0]:
                    _, action, path, body = plan.pop(0)
                    status, answer = admin(server.port, admin_token, path, body)
                    releases.append((action, status, answer))
                    print(f"  {now - start:6.0f} s: {action} -> {status}", flush=True)
                if now >= next_sample:
                    total, n = worker_rss(server.proc.pid)
                    rss.append((now - start, total / 2**20, n))
                    if len(rss) % 12 == 1:
                        print(f"  {now - start:6.0f} s: worker RSS {total / 2**20:.1f} MB ({n} workers)", flush=True)
                    next_sample += RSS_EVERY
                time.sleep(0.1)
            total, n = worker_rss(server.proc.pid)
            rss.append((time.time() - start, total / 2**20, n))
            tally = results()
        elapsed = time.time() - start
        code = server.stop(timeout=60)
    with Store(ws.home, create=False) as store:
        logged = store.count_decisions() - logged_before
        stored = len(store.read_outcomes(EXPERIMENT)) - outcomes_before
    return Result(min(elapsed, seconds), tally, logged, stored, rss, warmup, releases, code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (1: the quick mode)")
    ap.add_argument("--rate", type=float, default=1000.0, help="decisions per second to send, over all clients")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--threads", type=int, default=4, help="keep-alive sessions (threads) per client process")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers of `pex serve`")
    ap.add_argument("--server-threads", type=int, default=4, help="request threads per worker of `pex serve` (its default)")
    ap.add_argument("--units", type=int, default=5_000, help="simulated units of the experiment behind the policy")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.clients < 1 or args.threads < 1:
        ap.error("--minutes and --rate must be positive, --clients and --threads at least 1")
    for sig in (signal.SIGINT, signal.SIGTERM):  # both unwind (the server is stopped), SIGINT even when ignored
        signal.signal(sig, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="pex-bench-soak-") as d:
            result = soak(args, Path(d))
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the server is stopped and the temporary workspace is removed", file=sys.stderr)
        return 130
    report(result, args.rate)
    missed = result.failures()
    print("\nevery target met" if not missed else "\ntargets NOT met: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
