"""`pex` stops cleanly on SIGTERM and SIGINT, also when started with SIGINT ignored (a background job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from processes import started

PEX = str(Path(sys.executable).parent / "pex")
SERVE = ("import sys; from pex.cli.report_server import serve_folder; "
         "serve_folder(__import__('pathlib').Path(sys.argv[1]), '127.0.0.1', 0, say=lambda m: print(m, flush=True))")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_report_server_stops(tmp_path: Path, sig: int):
    (tmp_path / "report.html").write_text("<html>report</html>")
    with started([sys.executable, "-c", SERVE, str(tmp_path)], stderr=tmp_path / "err", sigint_ignored=True) as server:
        line = server.wait_for_line("serving the report at ", timeout=60)
        assert line, server.stdout() + (tmp_path / "err").read_text()
        with urllib.request.urlopen(line.split()[4], timeout=30) as response:
            assert response.read() == b"<html>report</html>"
        assert server.signal_and_wait(sig, timeout=30) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_running_pipeline_stops_and_leaves_the_workspace_usable(tmp_path: Path, sim_dir: Path, sig: int):
    env = {**os.environ, "PEX_HOME": str(tmp_path / "ws")}
    env.pop("PEX_DATABASE_URL", None)
    err = tmp_path / "err"
    with started([PEX, "run", str(sim_dir / "exp.toml"), "--out", str(tmp_path / "out")], stderr=err, env=env,
                 sigint_ignored=True) as run:
        # stderr carries the stages; wait until the models are being fitted, the longest stage
        for _ in range(600):
            if "fitting heterogeneous-effect models" in err.read_text():
                break
            if run.proc.poll() is not None:
                break
            time.sleep(0.5)
        assert run.proc.poll() is None, err.read_text()
        code = run.signal_and_wait(sig, timeout=60)
    assert code == 130, err.read_text()
    assert "aborted" in err.read_text()
    assert not (tmp_path / "out" / "summary.json").exists()
    listed = subprocess.run([PEX, "experiments", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0 and '"exp"' in listed.stdout, listed.stderr
