"""Requests per second and latency of `pex serve` over HTTP, against a bare Flask JSON endpoint.

Usage (from the repository root)::

    .venv/bin/python bench/serve.py [--workers 2] [--threads 4] [--seconds 20] [--quick] [--tree-only]

In a temporary workspace it simulates an experiment (20,000 units), runs the pipeline (`pex run`, which
stores tree, value and constant policies), publishes a tree and a value policy and creates a decide token.
Then it starts two gunicorn servers with the same settings (web/gunicorn_conf.py: pex's threaded worker class,
keep-alive; the same numbers of workers and threads), each in its own process group: the bare Flask app
(bench/bare_app.py) and `pex serve`. It loads them with wrk (closed loop: each
connection sends its next request when the last one is answered) and, for the fixed-rate scenario, with an
open-loop generator of its own (Debian has no wrk2): requests leave at fixed times whether or not earlier
ones were answered, and a request's latency runs from the time it was due, so a stalled server cannot hide
its queue (no coordinated omission). Every request body is a real unit of the simulated data under a new
unit id. Any answer other than 2xx stops the benchmark with an error. The bare endpoint is measured right
before and right after the tree policy's decide, which is compared with the mean of the two (other work on
the machine drifts less within that window).

After the runs `pex serve` is stopped gracefully (SIGTERM to the gunicorn master, which flushes each
worker's decision log) and the decisions logged in the workspace are compared with the decisions served.

Prints the figures as it goes, then a Markdown table. Exits 0 whether or not a goal is met (it prints which
are not); non-zero on a non-2xx answer, a server that does not start, or a decision log that disagrees
with what was served. Nothing is written outside the temporary directory, which is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's pex and web, here and (through PYTHONPATH) in every child

HOST = "127.0.0.1"
EXPERIMENT = "notification_cadence"
TREE = f"{EXPERIMENT}-tree-d3"  # the deepest tree `pex run` stores with a depth in its name, else any tree
VALUE = f"{EXPERIMENT}-value"  # the value policy at the pipeline's own weights, else any value policy
BATCH_UNITS = 10_000
SAMPLE_ROWS = 64  # real unit rows the load generators cycle through
PEX_CLI = "from pex.cli.main import entry; entry()"

GOAL_RATIO = 0.8  # decide with a tree policy: at least this share of the bare endpoint's requests/s
GOAL_P99_MS = 25.0  # decide with a value policy at GOAL_RATE requests/s: p99 at most this
GOAL_RATE = 100.0
GOAL_BATCH = 100_000  # decisions/s through decide-batch


class BenchError(RuntimeError):
    """The benchmark cannot give honest figures (a server failed, an answer was not 2xx, decisions went missing)."""


# -- the workspace ---------------------------------------------------------------------------------------------


@dataclass
class Workspace:
    """The prepared temporary workspace: its home, the published policies, a decide token, sample units."""

    home: Path
    tree: str
    value: str
    token: str
    rows: list[dict] = field(repr=False)  # feature objects of real units (JSON-ready: missing is None)


def child_env(home: Path | None = None) -> dict[str, str]:
    """The environment of every child: this checkout first on the path, and the workspace when given."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if home is not None:
        env["PEX_HOME"] = str(home)
    return env


def pex(args: Sequence[str], home: Path, timeout: float = 600) -> str:
    """Run a pex command of this checkout in ``home``; its stdout (stderr shown when it fails)."""
    done = subprocess.run([sys.executable, "-c", PEX_CLI, *args], env=child_env(home), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"`pex {' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def pick(names: list[str], kinds: dict[str, str], preferred: str, kind: str) -> str:
    """``preferred`` when it was stored, else the first stored policy of ``kind``."""
    if preferred in names:
        return preferred
    found = [n for n in names if kinds[n] == kind]
    if not found:
        raise BenchError(f"`pex run` stored no {kind} policy (stored: {', '.join(names)})")
    return found[0]


def sample_rows(data: Path, spec: Path, n: int) -> list[dict]:
    """``n`` units' covariates as a client would send them: the spec's features, else every column but the unit,
    the arm, the propensity and the outcomes."""
    import pandas as pd

    from pex.experiment.spec import load_spec

    s = load_spec(spec)
    frame = pd.read_csv(data, nrows=n)
    drop = {s.unit, s.arm, s.propensity, *s.metrics}
    features = frame[list(s.features) if s.features else [c for c in frame.columns if c not in drop]]
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in features.to_dict("records")]


def prepare(root: Path, units: int, dense: int) -> Workspace:
    """Simulate, run the pipeline, publish a tree and a value policy, create a decide token."""
    from pex.store.workspace import Workspace as Store

    home, data = root / "home", root / "data"
    t = time.perf_counter()
    pex(["simulate", str(data), "-n", str(units), "--seed", "0"], home)
    spec = data / f"{EXPERIMENT}.toml"
    # --trials 0: the dense sweep alone; --dense: few weight vectors (only the Pareto policies depend on them)
    pex(["run", str(spec), "--out", str(root / "run"), "--trials", "0", "--dense", str(dense), "-q"], home)
    with Store(home, create=False) as ws:
        records = ws.list_policies(EXPERIMENT)
    kinds = {r.name: r.kind for r in records}
    tree, value = pick(list(kinds), kinds, TREE, "tree"), pick(list(kinds), kinds, VALUE, "value")
    for name in (tree, value):  # served for their speed, whatever their run thought of their guardrails
        pex(["publish", name, "--force", "--reason", "serving benchmark"], home)
    token = pex(["token", "create", "--scope", "decide", "--name", "bench"], home).strip()
    print(f"workspace: {units:,} simulated units, `pex run` stored {len(kinds)} policies in {time.perf_counter() - t:.0f}s;"
          f" published {tree} and {value}")
    return Workspace(home, tree, value, token, sample_rows(data / f"{EXPERIMENT}.csv", spec, SAMPLE_ROWS))


# -- the servers -----------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """A server started in its own process group (stdout and stderr to a log file); :meth:`stop` ends the group."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path, port: int) -> None:
        self.name, self.port, self.log = name, port, log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(list(argv), env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        """The address of ``path`` on this server."""
        return f"http://{HOST}:{self.port}{path}"

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to the master (gunicorn stops gracefully), SIGKILL to the whole group after ``timeout`` seconds
        or if anything of it is left; the master's exit code (None when it had to be killed)."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
        try:  # workers that outlived their master, or the master itself after the timeout
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=30)
        return code


@contextmanager
def running(server: Server) -> Iterator[Server]:
    """``server``, stopped (its process group killed) on leaving, on errors and Ctrl-C too."""
    try:
        yield server
    finally:
        server.stop()


def answers(url: str, body: bytes | None, headers: dict[str, str]) -> bool:
    """Whether ``url`` answers 200 now (a POST when ``body`` is given)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_up(server: Server, path: str, body: bytes | None = None, timeout: float = 120) -> None:
    """Poll ``path`` until it answers 200; a :class:`BenchError` with the log when the server exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited ({server.proc.returncode}) before answering:\n{server.tail()}")
        if answers(server.url(path), body, {"Content-Type": "application/json"}):
            return
        time.sleep(0.2)
    raise BenchError(f"{server.name} did not answer {path} within {timeout:.0f}s:\n{server.tail()}")


def start_bare(root: Path, workers: int, threads: int) -> Server:
    """gunicorn serving bench/bare_app.py with `pex serve`'s settings, ``workers`` workers of ``threads`` threads."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--config", "python:web.gunicorn_conf", "--workers", str(workers),
            "--threads", str(threads),
            "--bind", f"{HOST}:{port}", "bench.bare_app:app"]
    return Server("bare Flask (gunicorn)", argv, child_env(), root / "bare.log", port)


def start_pex(root: Path, home: Path, workers: int, threads: int) -> Server:
    """`pex serve` with ``workers`` gunicorn workers of ``threads`` threads on ``home`` (it execs gunicorn: the pid
    is the master's)."""
    port = free_port()
    argv = [sys.executable, "-c", PEX_CLI, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers),
            "--threads", str(threads)]
    # TMPDIR: where `pex serve` makes its metrics folder when /dev/shm is not there (it removes it when stopped)
    return Server("pex serve", argv, {**child_env(home), "TMPDIR": str(root)}, root / "pex.log", port)


def group_cpu_seconds(pgid: int) -> float:
    """User and system CPU seconds of the running processes of process group ``pgid`` (a server: its master and
    workers), from /proc; 0 where there is no /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def on_cpu(server: Server, run: Callable[[], Load]) -> Load:
    """``run()``'s load with the server's CPU time per response. Unlike requests/s, this hardly depends on what else
    the machine runs (other work takes cores away, not CPU time from each request), so the tree-over-bare ratio
    by CPU per response is the steadier figure on a shared machine."""
    before = group_cpu_seconds(server.proc.pid)
    load = run()
    load.cpu_ms = (group_cpu_seconds(server.proc.pid) - before) * 1e3 / max(1, load.requests)
    print(f"    {server.name}: {load.cpu_ms:.3f} ms of server CPU per response")
    return load


def wait_ready(server: Server, workers: int) -> None:
    """`/healthz` answers, then `/readyz` (every live policy loaded) several times in a row, so that each worker
    has most likely booted (a worker accepts connections only once its app, policies included, is loaded)."""
    wait_until_up(server, "/healthz")
    for _ in range(4 * workers):
        wait_until_up(server, "/readyz")


# -- load: wrk (closed loop) -------------------------------------------------------------------------------------


@dataclass
class Load:
    """What one load run measured. ``requests`` counts completed responses; ``connections`` bounds how many requests
    may have been served but not counted when the run stopped (one in flight per connection at most)."""

    label: str
    requests: int
    seconds: float
    rate: float  # responses per second
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    connections: int
    units: int = 1  # decisions per request
    cpu_ms: float | None = None  # CPU time of the server's processes per response (see on_cpu)

    @property
    def decisions(self) -> int:
        """Decisions in the counted responses."""
        return self.requests * self.units


def lua_string(text: str) -> str:
    """``text`` as a Lua long-bracket literal."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def lua_headers(token: str) -> str:
    """The headers every script sends."""
    return (f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = {lua_string("Bearer " + token)}\n')


def decide_script(rows: list[dict], token: str, prefix: str) -> str:
    """A wrk script whose every request is one unit: a new id (script prefix, wrk thread, counter) and the features
    of the next sample row."""
    literals = ",\n  ".join(lua_string(json.dumps(r, separators=(",", ":"))) for r in rows)
    return lua_headers(token) + f"""
local rows = {{
  {literals}
}}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  local body = '{{"unit":"{prefix}' .. tid .. '-' .. n .. '","features":' .. rows[(n % #rows) + 1] .. '}}'
  return wrk.format(nil, nil, nil, body)
end
"""


def batch_body(rows: list[dict], units: int, prefix: str) -> bytes:
    """One decide-batch body of ``units`` units cycling through the sample rows."""
    items = [{"unit": f"{prefix}{i}", "features": rows[i % len(rows)]} for i in range(units)]
    return json.dumps({"units": items}, separators=(",", ":")).encode()


def batch_script(body_file: Path, token: str) -> str:
    """A wrk script sending the body in ``body_file`` with every request."""
    return lua_headers(token) + f"""
local f = assert(io.open({lua_string(str(body_file))}, "rb"))
wrk.body = f:read("*a")
f:close()
"""


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text: str) -> float:
    """wrk's duration text (``812.00us``, ``8.56ms``, ``1.02s``, ``1.5m``) in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise BenchError(f"cannot read wrk's duration {text!r}")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def parse_wrk(out: str, label: str, connections: int, units: int) -> Load:
    """The figures of wrk's ``--latency`` report."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", out, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (done and rate and p50 and p99):
        raise BenchError(f"cannot read wrk's report for {label}:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()))) if errors else {}
    return Load(label, int(done.group(1)), to_ms(done.group(2)) / 1e3, float(rate.group(1)), to_ms(p50.group(1)),
                to_ms(p99.group(1)), int(non_2xx.group(1)) if non_2xx else 0, socket_errors, connections, units)


def wrk(url: str, script: Path, label: str, *, connections: int, seconds: float, units: int = 1,
        timeout_s: int = 30) -> Load:
    """One wrk run (2 threads, 1 for a single connection); a :class:`BenchError` when any answer was not 2xx."""
    argv = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={timeout_s}s",
            "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}) for {label}:\n{done.stderr}{done.stdout}")
    return checked(parse_wrk(done.stdout, label, connections, units), done.stdout)


def checked(load: Load, report: str = "") -> Load:
    """Print ``load``'s figures; a :class:`BenchError` when an answer was not 2xx."""
    errors = ", ".join(f"{k} {v}" for k, v in load.socket_errors.items() if v) or "none"
    print(f"  {load.label}: {load.requests:,} responses in {load.seconds:.1f}s, {load.rate:,.1f} requests/s, "
          f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms; non-2xx {load.non_2xx}, socket errors: {errors}")
    if load.non_2xx:
        raise BenchError(f"{load.non_2xx} answers were not 2xx in {load.label}\n{report}")
    return load


# -- load: fixed rate, open loop -----------------------------------------------------------------------------------


def http_request(path: str, port: int, token: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 POST that asks the server to close the connection after answering."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


async def send_at(due: float, request: bytes, port: int, timeout: float) -> tuple[float, int]:
    """Send ``request`` on a new connection at loop time ``due``; (seconds from ``due`` to the whole answer, status;
    0 for a connection error or timeout)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, due - loop.time()))
    status = 0
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        try:
            writer.write(request)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout)  # to EOF: the server closes after answering
        finally:
            writer.close()
        if answer.startswith(b"HTTP/"):
            status = int(answer.split(b" ", 2)[1])
    except (OSError, TimeoutError):
        pass
    return loop.time() - due, status


async def open_loop(requests: list[bytes], port: int, rate: float, timeout: float) -> tuple[list[float], list[int], float]:
    """Every request due at ``i / rate`` seconds after the start; latencies, statuses and the seconds the run took."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    results = await asyncio.gather(*(send_at(start + i / rate, r, port, timeout) for i, r in enumerate(requests)))
    return [lat for lat, _ in results], [s for _, s in results], loop.time() - start


def fixed_rate(server: Server, path: str, ws: Workspace, *, rate: float, seconds: float, prefix: str) -> Load:
    """Decisions at a fixed ``rate`` requests/s for ``seconds``, a new connection per request (a client without
    keep-alive), latency from each request's due time."""
    n = max(1, round(rate * seconds))
    bodies = [json.dumps({"unit": f"{prefix}{i}", "features": ws.rows[i % len(ws.rows)]}).encode() for i in range(n)]
    requests = [http_request(path, server.port, ws.token, b) for b in bodies]
    latencies, statuses, took = asyncio.run(open_loop(requests, server.port, rate, timeout=30.0))
    ok = sum(200 <= s < 300 for s in statuses)
    failed = sum(s == 0 for s in statuses)
    ms = np.asarray(latencies) * 1e3
    load = Load(f"{path} at {rate:g}/s (open loop)", ok, took, ok / took, float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)), len(statuses) - ok - failed, {"connect/timeout": failed}, 0)
    if failed:  # no answer: the decision may or may not have been made, so the log check could not be exact
        raise BenchError(f"{failed} of {n} requests got no answer in {load.label}")
    return checked(load)


# -- the report ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    load: Load
    decisions: bool  # whether its requests make decisions (the bare endpoint's do not)
    goal: str = "-"
    met: bool | None = None

    def cells(self) -> list[str]:
        """The row's Markdown cells."""
        rate = self.load.rate
        met = "-" if self.met is None else ("yes" if self.met else "**no**")
        decisions = f"{rate * self.load.units:,.0f}" if self.decisions else "-"
        return [self.scenario, f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}", decisions,
                f"{self.load.p50_ms:.1f} ms", f"{self.load.p99_ms:.1f} ms", self.goal, met]


def table(rows: list[Row]) -> str:
    """The Markdown table of the scenarios."""
    lines = ["| scenario | requests/s | decisions/s | p50 | p99 | goal | met? |",
             "|:---|---:|---:|---:|---:|:---|:---|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def cpu_idle(seconds: float = 1.0) -> float | None:
    """The share of all cores' time that was idle over the next ``seconds`` (from /proc/stat; None elsewhere)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (idle1 - idle0) / max(1, total1 - total0)


def machine(workers: int, threads: int) -> str:
    """Cores, workers, Python, the load average and how idle the cores are now (other work on the machine)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    idle = cpu_idle()
    return (f"{os.cpu_count()} cores ({platform.machine()}), {workers} gunicorn workers x {threads} threads per server, "
            f"Python {platform.python_version()}, wrk -t2; load average {load}"
            + ("" if idle is None else f"; CPU idle over 1 s: {idle:.0%}"))


def check_log(home: Path, served: dict[str, list[Load]]) -> None:
    """Compare the decisions logged in the workspace with those counted in ``served`` (loads by policy), per policy
    and in all; prints both. A :class:`BenchError` when they disagree beyond what wrk can have cut off.

    wrk counts the responses it read before its time ran out. A request still in flight then may have been
    decided (and logged) with its answer never counted, at most one per connection, so the log may hold up to
    ``sum(connections * units)`` more than the count, and never fewer: fewer would be decisions lost. The open-loop
    runs wait for every answer, so they are counted exactly.
    """
    from pex.store.workspace import Workspace as Store

    with Store(home, create=False) as ws:
        logged = {policy: ws.count_decisions(policy) for policy in served}
        total = ws.count_decisions()
    counts = {policy: sum(load.decisions for load in loads) for policy, loads in served.items()}
    slacks = {policy: sum(load.connections * load.units for load in loads) for policy, loads in served.items()}
    print("decision log (logged after a graceful stop vs served: 2xx responses × units per request):")
    for policy in served:
        print(f"  {policy}: {logged[policy]:,} logged, {counts[policy]:,} served and counted, difference "
              f"{logged[policy] - counts[policy]:+,} (allowed 0 to +{slacks[policy]:,}: requests cut off when wrk stopped)")
    print(f"  all policies: {total:,} logged, {sum(counts.values()):,} served and counted")
    for policy in served:
        if logged[policy] < counts[policy]:
            raise BenchError(f"{counts[policy] - logged[policy]:,} decisions of {policy} were served but not logged")
        if logged[policy] - counts[policy] > slacks[policy]:
            raise BenchError(f"{logged[policy] - counts[policy]:,} more decisions of {policy} logged than served, more "
                             f"than wrk can have cut off ({slacks[policy]:,})")
    if total != sum(logged.values()):
        raise BenchError(f"{total - sum(logged.values()):,} decisions logged for policies that were not served")


# -- the scenarios ---------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """How long and how hard each scenario runs."""

    workers: int
    threads: int
    tree_only: bool  # only the bare endpoint and the tree policy's decide (the 0.8x goal)
    seconds: float  # each wrk run
    rate_seconds: float  # the fixed-rate run
    connections: int  # wrk connections for single decisions
    batch_connections: int
    warmup: float


def scripts(root: Path, ws: Workspace) -> dict[str, Path]:
    """Write the wrk scripts and the batch body into ``root``."""
    out = {}
    for key, prefix in (("bare", "b"), ("warm", "w"), ("tree", "t"), ("value", "v")):
        out[key] = root / f"{key}.lua"
        out[key].write_text(decide_script(ws.rows, ws.token, prefix))
    body = root / "batch.json"
    body.write_bytes(batch_body(ws.rows, BATCH_UNITS, "bt"))
    out["batch"] = root / "batch.lua"
    out["batch"].write_text(batch_script(body, ws.token))
    return out


def scenarios(root: Path, ws: Workspace, s: Settings, lua: dict[str, Path]
              ) -> tuple[dict[str, Load], dict[str, list[Load]]]:
    """Every scenario; the measured loads by key, and by policy every load on `pex serve` that made decisions
    (warm-ups too).

    Both servers run from the start (an idle worker costs nothing), so that the bare endpoint is measured
    right before and right after the tree policy's decide: on a machine that other work shares, the ratio of
    the two then compares like with like.
    """
    with ExitStack() as stack:
        bare = stack.enter_context(running(start_bare(root, s.workers, s.threads)))
        server = stack.enter_context(running(start_pex(root, ws.home, s.workers, s.threads)))
        wait_until_up(bare, "/decide", b'{"unit": "u0"}')
        wait_ready(server, s.workers)
        decide, batch = (server.url(f"/api/v1/policies/{{}}/{r}") for r in ("decide", "decide-batch"))
        c = s.connections
        wrk(bare.url("/decide"), lua["bare"], "warm-up bare", connections=c, seconds=s.warmup)
        warm = {p: wrk(decide.format(p), lua["warm"], f"warm-up {p}", connections=c, seconds=s.warmup)
                for p in (ws.tree, ws.value)}
        loads = {"bare": on_cpu(bare, lambda: wrk(bare.url("/decide"), lua["bare"], "bare /decide", connections=c,
                                                  seconds=s.seconds))}
        loads["tree"] = on_cpu(server, lambda: wrk(decide.format(ws.tree), lua["tree"], "tree decide", connections=c,
                                                   seconds=s.seconds))
        loads["bare again"] = on_cpu(bare, lambda: wrk(bare.url("/decide"), lua["bare"], "bare /decide again",
                                                       connections=c, seconds=s.seconds))
        bare.stop()
        if s.tree_only:
            return _stopped(server, loads, {ws.tree: [warm[ws.tree], loads["tree"]], ws.value: [warm[ws.value]]})
        loads["rate"] = fixed_rate(server, f"/api/v1/policies/{ws.value}/decide", ws, rate=GOAL_RATE,
                                   seconds=s.rate_seconds, prefix="r")
        loads["value"] = wrk(decide.format(ws.value), lua["value"], "value decide, closed loop", connections=c,
                             seconds=s.seconds)
        loads["batch"] = wrk(batch.format(ws.tree), lua["batch"], f"tree decide-batch ({BATCH_UNITS:,} units)",
                             connections=s.batch_connections, seconds=s.seconds, units=BATCH_UNITS)
        served = {ws.tree: [warm[ws.tree], loads["tree"], loads["batch"]],
                  ws.value: [warm[ws.value], loads["rate"], loads["value"]]}
        return _stopped(server, loads, served)


def _stopped(server: Server, loads: dict[str, Load], served: dict[str, list[Load]]
             ) -> tuple[dict[str, Load], dict[str, list[Load]]]:
    """Stop `pex serve` gracefully (every worker flushes its decision log); ``loads`` and ``served``."""
    code = server.stop(timeout=60)
    if code != 0:
        raise BenchError(f"pex serve did not stop cleanly on SIGTERM (exit {code}):\n{server.tail()}")
    return loads, served


def rows_of(loads: dict[str, Load], ws: Workspace, s: Settings) -> list[Row]:
    """The table's rows with their goals (the tree policy's against the mean of the bare runs before and after)."""
    bare = (loads["bare"].rate + loads["bare again"].rate) / 2
    ratio = loads["tree"].rate / bare
    # the same ratio from CPU per response (requests/s the servers would reach on cores of their own)
    by_cpu = (loads["bare"].cpu_ms + loads["bare again"].cpu_ms) / 2 / loads["tree"].cpu_ms
    rows = [
        Row("bare Flask JSON endpoint (baseline)", loads["bare"], False),
        Row(f"decide, tree policy ({ws.tree})", loads["tree"], True,
            f"≥ {GOAL_RATIO}× bare (is {ratio:.2f}×; by server CPU per response {by_cpu:.2f}×)", ratio >= GOAL_RATIO),
        Row("bare Flask JSON endpoint again, right after", loads["bare again"], False),
    ]
    if "batch" not in loads:  # --tree-only
        return rows
    batch = loads["batch"]
    return [
        *rows,
        Row(f"decide, value policy at {GOAL_RATE:g} requests/s (open loop)", loads["rate"], True,
            f"p99 ≤ {GOAL_P99_MS:g} ms", loads["rate"].p99_ms <= GOAL_P99_MS),
        Row(f"decide, value policy ({ws.value}), max rate", loads["value"], True),
        Row(f"decide-batch, tree policy, {BATCH_UNITS:,} units per request ({s.batch_connections} connections)",
            batch, True, f"≥ {GOAL_BATCH:,} decisions/s", batch.rate * BATCH_UNITS >= GOAL_BATCH),
    ]


def settings(args: argparse.Namespace) -> Settings:
    """The run's settings from the command line (``--quick``: a short smoke run)."""
    if args.quick:
        return Settings(args.workers, args.threads, args.tree_only, args.seconds or 3, args.rate_seconds or 4,
                        args.connections, args.batch_connections, 1)
    return Settings(args.workers, args.threads, args.tree_only, args.seconds or 20, args.rate_seconds or 20,
                    args.connections, args.batch_connections, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers of each server")
    ap.add_argument("--threads", type=int, default=4, help="threads per worker of each server (pex serve's default)")
    ap.add_argument("--seconds", type=float, default=None, help="each wrk run (default 20; --quick 3)")
    ap.add_argument("--rate-seconds", type=float, default=None, help="the fixed-rate run (default 20; --quick 4)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections for single decisions")
    ap.add_argument("--batch-connections", type=int, default=2, help="wrk connections for decide-batch")
    ap.add_argument("--units", type=int, default=20_000, help="simulated units of the experiment")
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--tree-only", action="store_true",
                    help="only the bare endpoint and the tree policy's decide (the 0.8x goal), not value or batch")
    args = ap.parse_args()
    s = settings(args)
    for sig in (signal.SIGINT, signal.SIGTERM):  # both unwind (servers stopped), SIGINT even when inherited ignored
        signal.signal(sig, signal.default_int_handler)
    print(f"machine: {machine(s.workers, s.threads)}")
    try:
        with tempfile.TemporaryDirectory(prefix="pex-bench-serve-") as d:
            root = Path(d)
            ws = prepare(root, args.units, dense=64)
            lua = scripts(root, ws)
            loads, served = scenarios(root, ws, s, lua)
            check_log(ws.home, served)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the servers are stopped and the temporary workspace is removed", file=sys.stderr)
        return 130
    rows = rows_of(loads, ws, s)
    print(f"\nmachine after the runs: {machine(s.workers, s.threads)}\n")
    print(table(rows))
    missed = [r.scenario for r in rows if r.met is False]
    print("\nevery goal met" if not missed else "\ngoals NOT met: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
