"""The pex command line: happy paths, JSON output, and the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from processes import started

PEX = str(Path(sys.executable).parent / "pex")
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
DEMO_SPEC = EXPERIMENTS / "checkout_offer.toml"


def test_ingest_analyze_experiments(run, sim_dir):
    r = run("ingest", sim_dir / "exp.toml")
    assert r.code == 0, r
    assert "stored as new dataset version 1" in r.out and "20,000 units" in r.out
    r = run("ingest", sim_dir / "exp.toml")
    assert r.code == 0 and "identical to existing dataset version 1" in r.out

    r = run("analyze", "exp")
    assert r.code == 0, r
    assert "Sample ratio: OK" in r.out
    for metric in ("sessions", "converted", "unsubscribes"):
        assert metric in r.out
    assert "Guardrails" in r.out and "FAIL" in r.out

    r = run("experiments")
    assert r.code == 0 and "exp" in r.out and "20,000" in r.out


def test_json_outputs(run, sim_dir):
    r = run("ingest", sim_dir / "exp.toml", "--json")
    assert r.code == 0, r
    stored = json.loads(r.out)
    assert stored["version"] == 1 and stored["created"] and stored["dataset"]["n_units"] == 20_000

    r = run("analyze", "exp", "--json")
    result = json.loads(r.out)
    assert result["srm"]["ok"] is True and 0 <= result["srm"]["p_value"] <= 1
    assert {(e["metric"], e["arm"]) for e in result["effects"]} == {
        (m, a) for m in ("sessions", "converted", "unsubscribes") for a in ("daily", "weekly")}
    assert result["dataset_version"]["id"] == stored["id"]

    rows = json.loads(run("experiments", "--json").out)
    assert rows[0]["name"] == "exp" and rows[0]["current_version"] == 1


def test_analyze_unknown_experiment(run, sim_dir):
    assert run("ingest", sim_dir / "exp.toml").code == 0
    r = run("analyze", "nope")
    assert r.code == 2
    assert r.err.startswith("error: no experiment named 'nope'") and "hint: known experiments: exp" in r.err


def test_analyze_without_workspace_does_not_create_one(run, home):
    r = run("analyze", "exp")
    assert r.code == 2 and "no pex workspace" in r.err
    assert not home.exists()


def test_experiments_in_an_empty_workspace(run):
    r = run("experiments")
    assert r.code == 0 and "no experiments" in r.out


def test_usage_errors_exit_2(run):
    assert run("analyze").code == 2
    assert run("no-such-command").code == 2


def test_every_command_has_help(run):
    for cmd in ("ingest", "analyze", "experiments", "simulate", "demo"):
        r = run(cmd, "--help")
        assert r.code == 0 and "Usage:" in r.out


def test_simulate_then_ingest_parquet(run, tmp_path):
    r = run("simulate", tmp_path / "sim", "-n", "3000", "--seed", "4", "--format", "parquet", "--name", "pq")
    assert r.code == 0, r
    assert (tmp_path / "sim" / "pq.parquet").is_file()
    r = run("ingest", tmp_path / "sim" / "pq.toml")
    assert r.code == 0 and "3,000 units" in r.out


def test_demo_console_script_end_to_end(tmp_path):
    """The installed `pex demo` simulates the demo experiment, runs the whole pipeline, publishes the personalized
    policy it certifies and serves the report."""
    spec = tmp_path / "demo.toml"
    spec.write_text(DEMO_SPEC.read_text())
    env = {**os.environ, "PEX_HOME": str(tmp_path / "ws")}
    env.pop("PEX_DATABASE_URL", None)
    out_dir = tmp_path / "demo-out"
    err_path = tmp_path / "demo.err"
    # 4,000 units, not the demo's 20,000, to keep the suite fast: the trade-off already certifies at this size.
    # Started as a background job would be, with SIGINT ignored: Ctrl-C's signal must stop the server all the same
    with started([PEX, "demo", "--spec", str(spec), "-n", "4000", "--out", str(out_dir), "--port", "0", "--trials", "6"],
                 stderr=err_path, env=env, sigint_ignored=True) as demo:
        line = demo.wait_for_line("serving the report at ", timeout=400)
        stdout = demo.stdout()
        assert line, stdout + err_path.read_text()
        with urllib.request.urlopen(line.split()[4], timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200 and "<svg" in page
        returncode = demo.signal_and_wait(signal.SIGINT, timeout=30)
    assert returncode == 0
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
    rec = json.loads((out_dir / "summary.json").read_text())["recommendation"]
    assert rec["verdict"] == "personalize" and rec["kind"] != "constant", rec
    assert rec["policy"] in rec["certification"]["certified"]
    # cross-fitted, nothing is screened out on the building units (they are the other half's test units): treating
    # everyone is tested, fails, and the recommendation says so with its bound
    cert = rec["certification"]
    assert cert["screened_out"] == [] and "checkout_offer-all-treat" in cert["tested"]
    assert "checkout_offer-all-treat" not in cert["certified"]
    assert "giving everyone 'treat' would do better on revenue" in stdout and "cannot be certified to keep complaints" in stdout
    # ... and it is live: published by the demo, served from the store by the keyed draw
    assert f"published {rec['policy']} v" in stdout and "what `pex serve` answers with it" in stdout
    releases = subprocess.run([PEX, "releases", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert releases.returncode == 0, releases.stderr
    assert [(r["policy"], r["action"]) for r in json.loads(releases.stdout)] == [(rec["policy"], "publish")]
    decided = [ln.split(" -> ")[1].split()[0] for ln in stdout.splitlines() if " -> " in ln and "(propensity" in ln]
    assert len(decided) == 4 and set(decided) <= {"control", "treat"}
    # a second run reuses the data and the stored version
    again = subprocess.run([PEX, "demo", "--spec", str(spec), "-n", "4000", "--no-fit"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "already stored" in again.stdout


@pytest.mark.postgres
def test_cli_against_postgresql(tmp_path, sim_dir, empty_postgres_url):
    env = {**os.environ, "PEX_HOME": str(tmp_path / "ws"), "PEX_DATABASE_URL": empty_postgres_url}
    for args in (["ingest", str(sim_dir / "exp.toml")], ["analyze", "exp", "--json"], ["experiments", "--json"]):
        out = subprocess.run([PEX, *args], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["name"] == "exp"
    # fits (with their binary training file) and versioned policies live there too
    for args in (["fit", "exp", "-q", "--learner", "t"], ["policies", "exp", "--json"]):
        out = subprocess.run([PEX, *args], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    assert listing["built"] and {p["name"] for p in listing["policies"]} >= {"exp-value", "exp-tree-d2", "exp-all-control"}
    out = subprocess.run([PEX, "evaluate", "exp", "exp-value", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and json.loads(out.stdout)["version"] == 1, out.stderr
    assert not (tmp_path / "ws" / "pex.db").exists()  # metadata went to PostgreSQL


def test_demo_writes_parquet_when_the_spec_asks_for_it(tmp_path, run):
    """The hard example's spec (notification_cadence) is simulated from its own scenario, here into Parquet."""
    spec = tmp_path / "nested" / "demo.toml"
    spec.parent.mkdir()
    spec.write_text((EXPERIMENTS / "notification_cadence.toml").read_text()
                    .replace('data = "notification_cadence.csv"', 'data = "data/demo.parquet"'))
    r = run("demo", "--spec", spec, "-n", "2000", "--no-fit")
    assert r.code == 0, r
    assert "scenario notification_cadence" in r.out and "[2/2]" in r.out
    assert (tmp_path / "nested" / "data" / "demo.parquet").read_bytes()[:4] == b"PAR1"


def test_demo_refuses_arms_it_cannot_simulate(tmp_path, run):
    spec = tmp_path / "demo.toml"
    spec.write_text((EXPERIMENTS / "notification_cadence.toml").read_text().replace("weekly = 0.33", "monthly = 0.33"))
    r = run("demo", "--spec", spec)
    assert r.code == 2 and "can only simulate data for the arms" in r.err


def test_simulate_rejects_bad_names_and_unwritable_folders(tmp_path, run):
    r = run("simulate", tmp_path / "o", "--name", "Bad Name")
    assert r.code == 2 and "not a valid experiment name" in r.err and "hint:" in r.err
    (tmp_path / "f").write_text("x")
    r = run("simulate", tmp_path / "f" / "o", "-n", "100")
    assert r.code == 2 and r.err.startswith("error: Not a directory") and "Traceback" not in r.err
