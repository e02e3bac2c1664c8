"""`pex demo` end to end: the whole pipeline, the certified policy published, simulated traffic through it, and the
web UI serving all of it, with the address and a token printed to log in with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from processes import started

PEX = str(Path(sys.executable).parent / "pex")
DEMO_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "checkout_offer.toml"
TRAFFIC = 1_500  # simulated users (the demo's default is 3,000): enough for the monitor, fewer seconds


def wait_answering(url: str, timeout: float = 90) -> None:
    """Wait until the UI answers its login page: the demo prints its address as it starts gunicorn."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ui/login", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"the demo's UI at {url} did not answer within {timeout} s")


def twin(url: str, path: str, token: str) -> dict:
    """A UI page's JSON twin, read with a bearer token as a script would."""
    request = urllib.request.Request(f"{url}{path}.json", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.slow  # 33 s: the whole demo; its parts run in make test (tests/services/test_demo.py, the UI's browser test)
def test_demo_console_script_end_to_end(tmp_path):
    """The installed `pex demo` simulates the demo experiment, runs the whole pipeline, publishes the personalized
    policy it certifies, sends it simulated traffic and serves the UI, where all of it shows."""
    spec = tmp_path / "demo.toml"
    spec.write_text(DEMO_SPEC.read_text())
    env = {**os.environ, "PEX_HOME": str(tmp_path / "ws")}
    env.pop("PEX_DATABASE_URL", None)
    out_dir = tmp_path / "demo-out"
    err_path = tmp_path / "demo.err"
    # 4,000 units, not the demo's 20,000, to keep the suite fast: the trade-off already certifies at this size.
    # Started as a background job would be, with SIGINT ignored: Ctrl-C's signal must stop the UI all the same
    with started([PEX, "demo", "--spec", str(spec), "-n", "4000", "--out", str(out_dir), "--port", "0",
                  "--traffic", str(TRAFFIC)], stderr=err_path, env=env, sigint_ignored=True) as demo:
        line = demo.wait_for_line("      serving the UI at ", timeout=400)
        stdout = demo.stdout()
        assert line, stdout + err_path.read_text()
        url = line.split()[4].removesuffix("/ui/")
        token = next(ln.split()[1] for ln in stdout.splitlines() if ln.strip().startswith("token: "))
        assert f"open {url}/ui/login and paste this token:" in stdout
        wait_answering(url)
        listed = twin(url, "/ui/experiments", token)["experiments"]
        rec = json.loads((out_dir / "summary.json").read_text())["recommendation"]
        policies = twin(url, "/ui/experiments/checkout_offer/policies", token)
        monitor = twin(url, "/ui/monitor", token)
        returncode = demo.signal_and_wait(signal.SIGINT, timeout=90)
    assert returncode == 0, err_path.read_text()[-3000:]
    # the experiment, analysed and run, with its recommendation live
    assert [(e["name"], e["last_run_id"]) for e in listed] == [("checkout_offer", 1)]
    assert [(r["name"], r["live_version"]) for r in policies["live"]] == [(rec["policy"], 1)]
    assert [(r["name"], r["action"]) for r in policies["releases"]] == [(rec["policy"], "publish")]
    # ... and the simulated traffic on the monitor: every decision, and the outcomes of the users who reported
    [live] = monitor["policies"]
    assert (live["policy"], live["decisions_count"]) == (rec["policy"], TRAFFIC)
    assert 2 * 0.8 * TRAFFIC < live["outcomes_count"] <= 2 * TRAFFIC  # two metrics; about a tenth never report
    assert f"{TRAFFIC:,} decisions" in stdout and "the monitor's hourly counts are up to date" in stdout
    assert "[5/5] the web UI" in stdout and "created the admin token 'demo-owner'" in stdout
    # the pipeline's story, as before the UI
    assert (tmp_path / "checkout_offer.csv").is_file()
    assert "scenario segment_harm" in stdout
    assert "Sample ratio: OK" in stdout and "Average effects vs control" in stdout
    assert (tmp_path / "ws" / "pex.db").is_file()
    assert "Leaderboard per metric" in stdout and "Segments" in stdout
    assert "Policies, valued off-policy" in stdout and "checkout_offer-value" in stdout
    assert "checkout_offer-tree-d4" in stdout and "Distilled trees" in stdout
    assert "Weight search" in stdout and "Recommendation: Personalize with " in stdout
    assert {"summary.json", "report.html", "policies"} <= {p.name for p in out_dir.iterdir()}
    # the recommendation is a certified personalized policy, and the trade-off shows: treating everyone is rejected
    assert rec["verdict"] == "personalize" and rec["kind"] != "constant", rec
    assert rec["policy"] in rec["certification"]["certified"]
    cert = rec["certification"]
    assert cert["screened_out"] == [] and "checkout_offer-all-treat" in cert["tested"]
    assert "checkout_offer-all-treat" not in cert["certified"]
    assert "giving everyone 'treat' would do better on revenue" in stdout and "cannot be certified to keep complaints" in stdout
    assert f"published {rec['policy']} v" in stdout and "what `pex serve` answers with it" in stdout
    decided = [ln.split(" -> ")[1].split()[0] for ln in stdout.splitlines() if " -> " in ln and "(propensity" in ln]
    assert len(decided) == 4 and set(decided) <= {"control", "treat"}
    # the owner's token works; the traffic's own decide token was revoked once the traffic was sent
    tokens = subprocess.run([PEX, "token", "list", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert tokens.returncode == 0, tokens.stderr
    state = {(t["name"], t["scope"], t["revoked_at"] is None) for t in json.loads(tokens.stdout)}
    assert state == {("demo-owner", "admin", True), ("demo-traffic", "decide", False)}
    # a second run reuses the data and the stored version
    again = subprocess.run([PEX, "demo", "--spec", str(spec), "-n", "4000", "--no-fit"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "already stored" in again.stdout
