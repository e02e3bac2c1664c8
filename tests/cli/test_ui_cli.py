"""`pex ui`: gunicorn serving the UI and one job worker, started and stopped together."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.gunicorn import PEX, free_port
from tests.processes import started


def _get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode()
    finally:
        conn.close()


def _wait_answering(port: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"pex ui exited with {proc.returncode}"
        try:
            if _get(port, "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("pex ui did not answer /healthz in time")


def _worker_pid(stderr: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"job worker pid (\d+)", stderr.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(f"pex ui did not say its worker's pid: {stderr.read_text()}")


def _group_gone(pgid: int, timeout: float = 30) -> bool:
    """Whether every process of the group ended (gunicorn's master and workers, the job worker) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a child that exited but was not reaped yet is a zombie: ended all the same
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


@pytest.mark.slow  # 8-20 s: gunicorn and a worker; make test's browser test serves every page through `pex ui`
def test_pex_ui_serves_the_pages_with_its_worker_and_stops_both_on_sigterm(tmp_path):
    home, port = tmp_path / "ws", free_port()
    env = {**os.environ, "PEX_HOME": str(home)}
    env.pop("PEX_DATABASE_URL", None)
    err = tmp_path / "ui.err"
    with started([*PEX, "ui", "--port", str(port), "--workers", "1"], stderr=err, env=env) as ui:
        token = ui.wait_for_line("pex_", timeout=60)  # a fresh workspace: an admin token, printed once
        assert token is not None, err.read_text()
        _wait_answering(port, ui.proc)
        worker = _worker_pid(err)
        assert _alive(worker)
        status, headers, body = _get(port, "/ui/login")
        assert status == 200 and "Paste your pex token" in body
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert f"serving the UI on http://127.0.0.1:{port}/ui/" in err.read_text()
        assert ui.signal_and_wait(signal.SIGTERM, timeout=60) == 0, err.read_text()
        assert _group_gone(ui.proc.pid), "gunicorn or the job worker outlived pex ui"
        assert not _alive(worker)
    assert (home / "ui-secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow  # 7 s: a second gunicorn start
def test_pex_ui_stops_the_server_when_its_worker_dies(tmp_path):
    home, port = tmp_path / "ws", free_port()
    env = {**os.environ, "PEX_HOME": str(home)}
    env.pop("PEX_DATABASE_URL", None)
    err = tmp_path / "ui.err"
    with started([*PEX, "ui", "--port", str(port), "--workers", "1"], stderr=err, env=env) as ui:
        _wait_answering(port, ui.proc)
        os.kill(_worker_pid(err), signal.SIGKILL)
        ui.proc.wait(timeout=60)
        assert ui.proc.returncode == 2
        assert "error: the UI's worker stopped (killed by signal 9), so pex ui stopped the rest" in err.read_text()
        assert _group_gone(ui.proc.pid), "gunicorn outlived pex ui"


@pytest.mark.slow  # 7 s: a third gunicorn start
def test_pex_ui_without_worker_starts_none(tmp_path):
    home, port = tmp_path / "ws", free_port()
    env = {**os.environ, "PEX_HOME": str(home)}
    env.pop("PEX_DATABASE_URL", None)
    err = tmp_path / "ui.err"
    with started([*PEX, "ui", "--port", str(port), "--workers", "1", "--no-worker"], stderr=err, env=env) as ui:
        _wait_answering(port, ui.proc)
        assert "no job worker (--no-worker)" in err.read_text()
        assert ui.signal_and_wait(signal.SIGINT, timeout=60) == 0, err.read_text()
        assert _group_gone(ui.proc.pid)


def test_pex_ui_refuses_a_busy_port_before_starting_anything(run, home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("ui", "--port", str(port))
    assert result.code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.err and "--port" in result.err
    assert not home.exists()  # nothing created


def test_pex_ui_refuses_bad_settings(run, home, monkeypatch):
    monkeypatch.setenv("PEX_SECRET_KEY", "short")
    result = run("ui", "--port", str(free_port()))
    assert result.code == 2 and "secret_key must be at least 16 characters" in result.err
