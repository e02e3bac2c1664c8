"""``pex init DATA``: writes a spec next to the data that ``pex ingest`` loads, says why for every guess, never
overwrites without --force."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pandas as pd

from pex.experiment.simulate import simulate


def test_init_writes_a_spec_that_ingests(run, tmp_path):
    data = tmp_path / "data" / "cadence test.csv"
    data.parent.mkdir()
    simulate(500, scenario="notification_cadence", seed=3).data.to_csv(data, index=False)

    result = run("init", data)
    assert result.code == 0, result
    spec_path = data.with_suffix(".toml")
    assert f"wrote {spec_path}" in result.out.replace("'", "")
    assert "unsubscribes: 'unsubscribes' reads like a harm" in result.out
    assert "next: pex run '" in result.out  # quoted, since the path has a space
    spec = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    assert (spec["name"], spec["data"], spec["control"]) == ("cadence_test", "cadence test.csv", "control")
    assert spec_path.read_text(encoding="utf-8").startswith("# proposed by `pex init`")

    ingested = run("ingest", spec_path, "--json")
    assert ingested.code == 0, ingested
    assert json.loads(ingested.out)["n_units"] == 500

    # never overwritten without --force
    refused = run("init", data)
    assert refused.code == 2 and "exists already" in refused.err and "--force" in refused.err
    assert run("init", data, "--force", "--name", "renamed").code == 0
    assert tomllib.loads(spec_path.read_text(encoding="utf-8"))["name"] == "renamed"


def test_init_out_elsewhere_keeps_the_data_path_relative_to_the_spec(run, tmp_path):
    data = tmp_path / "exports" / "offer.parquet"
    data.parent.mkdir()
    simulate(400, scenario="segment_harm", seed=1).data.to_parquet(data, index=False)
    out = tmp_path / "specs" / "offer.toml"
    out.parent.mkdir()

    result = run("init", data, "--out", out, "--json")
    assert result.code == 0, result
    printed = json.loads(result.out)
    assert printed["spec"]["data"] == "../exports/offer.parquet" and printed["problem"] is None
    assert printed["next"] == f"pex run {out}"
    assert {n["field"] for n in printed["notes"]} >= {"unit", "arm", "control", "metrics.revenue", "metrics.complaints"}
    assert run("ingest", out).code == 0


def test_init_refuses_a_table_without_an_arm_and_says_why(run, tmp_path):
    data = tmp_path / "t.csv"
    pd.DataFrame({"user_id": range(50), "revenue": np.arange(50.0)}).to_csv(data, index=False)
    result = run("init", data)
    assert result.code == 2
    assert "no column looks like the assigned arm" in result.err and "hint:" in result.err
    assert not data.with_suffix(".toml").exists()


def test_init_reports_data_the_spec_would_refuse(run, tmp_path):
    data = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": range(200), "arm": rng.choice(["control", "b"], 200), "age": rng.integers(18, 60, 200),
                          "revenue": rng.normal(5, 1, 200)})
    frame.loc[[3, 9], "revenue"] = np.nan
    frame.to_csv(data, index=False)
    result = run("init", data)
    assert result.code == 0  # the spec is written, for the owner to fix what the data lacks
    assert "the data does not pass as proposed: 2 of 200 rows" in result.err
    assert "metrics.revenue" in result.out
