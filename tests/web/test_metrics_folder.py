"""Each `pex serve` keeps its Prometheus files in a folder of its own on tmpfs, which no other server touches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from pex.services import metrics_folder
from tests.gunicorn import PEX, call, free_port, serve, wait_ready


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_prepare_removes_only_this_hosts_folders_of_dead_masters(tmp_path):
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            dead = metrics_folder.folder_for(dead_pid(), tmp_path)
            running = metrics_folder.folder_for(live.pid, tmp_path)
            other_host = tmp_path / f"{metrics_folder.PREFIX}elsewhere-{dead_pid()}"
            unrelated = tmp_path / "pex-metrics-by-hand"
            for folder in (dead, running, other_host, unrelated):
                folder.mkdir()
                (folder / "counter_1.db").write_bytes(b"x")
            mine = metrics_folder.prepare(os.getpid(), tmp_path)
            assert mine == metrics_folder.folder_for(os.getpid(), tmp_path) and mine.is_dir()
            assert not list(mine.iterdir())  # empty: a server starts from zero
            assert not dead.exists()
            assert (running / "counter_1.db").exists() and (other_host / "counter_1.db").exists()
            assert (unrelated / "counter_1.db").exists()
            # remove() takes only this process's own folder
            assert not metrics_folder.remove(running) and running.exists()
            assert not metrics_folder.remove(unrelated) and unrelated.exists()
            assert metrics_folder.remove(mine) and not mine.exists()
        finally:
            live.kill()


@pytest.mark.slow  # two servers; the folder rules are tested above
def test_a_second_serve_on_a_busy_port_leaves_the_first_ones_metrics(tmp_path, served):
    port = free_port()
    with serve(served.home, port, tmp_path) as first:
        wait_ready(port, first)
        folder = metrics_folder.folder_for(first.proc.pid)  # `pex serve` execs gunicorn: its pid is the master's
        assert folder.is_dir() and any(folder.iterdir())
        assert not folder.resolve().is_relative_to(served.home.resolve())
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(lambda i: call(port, "POST", f"/api/v1/policies/{served.constant}/decide",
                                                    {"unit": f"m{i}"}, served.decide)[0], range(50)))
        assert statuses == [200] * 50
        second = subprocess.run([*PEX, "serve", "--port", str(port)], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PEX_HOME": str(served.home)})
        assert second.returncode == 2 and "another server uses this port" in second.stderr, second.stderr
        assert folder.is_dir() and any(folder.iterdir())
        status, answer = call(port, "GET", "/metrics", token=served.admin)
        assert status == 200
        counts = [ln for ln in answer["text"].splitlines()
                  if ln.startswith("pex_decisions_total{") and f'policy="{served.constant}"' in ln]
        assert sum(float(ln.rsplit(" ", 1)[1]) for ln in counts) == 50, counts
        assert first.signal_and_wait(signal.SIGTERM, timeout=60) == 0
    assert not folder.exists()  # removed when the server stopped
