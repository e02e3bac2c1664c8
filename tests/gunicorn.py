"""Starting `pex serve` (gunicorn) in a test and talking to it over loopback HTTP: shared by the web and online tests."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
from pathlib import Path

from tests.processes import started

PEX = [str(Path(sys.executable).parent / "pex")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: object = None, token: str | None = None,
         timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data and response.getheader("Content-Type", "").startswith(
            "application/json") else {"text": data.decode()})
    finally:
        conn.close()


def wait_ready(port: int, server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"pex serve exited with {server.proc.returncode}"
        try:
            if call(port, "GET", "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("pex serve did not become ready")


def serve(home: Path, port: int, tmp_path: Path, *extra: str):
    env = {**os.environ, "PEX_HOME": str(home), "PEX_REFRESH_SECONDS": "0.5"}
    return started([*PEX, "serve", "--port", str(port), "--workers", "2", *extra], stderr=tmp_path / "serve.err", env=env)
