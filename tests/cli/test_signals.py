"""`pex` stops cleanly on SIGTERM and SIGINT, also when started with SIGINT ignored (a background job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import started

PEX = str(Path(sys.executable).parent / "pex")
# SIGINT takes the same path as SIGTERM (pex.cli.main installs one handler for both): make test runs SIGTERM
# both slow: a pipeline in a child process (7-18 s each); the worker and UI tests stop children in make test
@pytest.mark.slow
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
