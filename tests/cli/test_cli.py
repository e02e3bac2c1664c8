"""The pex command line: happy paths, JSON output, and the demo (its end-to-end run: tests/cli/test_demo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PEX = str(Path(sys.executable).parent / "pex")
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


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
