"""Spec inference: on every simulated scenario the proposal loads, ingests and recovers the scenario's own design;
odd tables get a clear error or a proposal that says what it left out."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pex.errors import DataError
from pex.experiment.data import load_dataset, read_table
from pex.experiment.infer import DEFAULT_MAX_HARM, experiment_name, propose_spec
from pex.experiment.simulate import SCENARIOS, scenario_design, simulate, write_product_export
from pex.experiment.spec import load_spec, parse_spec, spec_from_dict
from pex.experiment.spec_toml import spec_to_toml

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _propose(frame: pd.DataFrame, tmp_path: Path, name: str = "x") -> dict:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return propose_spec(read_table(path), name, "data.csv")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_is_recovered_and_loads(tmp_path, scenario):
    sim = simulate(1_500, scenario=scenario, seed=4)
    proposal = _propose(sim.data, tmp_path, scenario.replace("_", "-"))
    spec_dict = proposal["spec"]
    design = scenario_design(scenario)

    assert (spec_dict["unit"], spec_dict["arm"], spec_dict["control"]) == ("user_id", "arm", design.control)
    assert list(spec_dict["metrics"]) == list(design.metrics)
    for metric, truth in design.metrics.items():
        got = spec_dict["metrics"][metric]
        assert (got["goal"], got["role"]) == (truth["goal"], truth["role"]), metric
        assert got.get("pre") == truth.get("pre"), metric
        assert ("max_harm" in got) == (truth["role"] == "guardrail")
    assert sorted(spec_dict["allocation"]) == sorted(design.arms)
    # the features are the unit-level columns the simulator draws, pre-period covariates included
    assert set(spec_dict["features"]) == {c for c in sim.data.columns if c not in ("user_id", "arm", *design.metrics)}

    # it loads, through TOML and as a dict, and its data ingests
    written = tmp_path / "spec.toml"
    written.write_text(spec_to_toml(spec_dict), encoding="utf-8")
    spec = load_spec(written)
    assert spec == parse_spec(spec_dict, base_dir=tmp_path)
    assert spec_from_dict(spec.to_dict()) == spec
    dataset = load_dataset(spec)
    assert dataset.n_units == 1_500 and dataset.propensity_source == "allocation"

    # every guess has its reason
    fields = {n["field"] for n in proposal["notes"]}
    assert {"unit", "arm", "control", "features", "allocation", *(f"metrics.{m}" for m in design.metrics)} <= fields


@pytest.mark.parametrize("shipped", ["notification_cadence", "checkout_offer"])
def test_the_shipped_specs_roles_are_recovered(tmp_path, shipped):
    with open(EXPERIMENTS / f"{shipped}.toml", "rb") as fh:
        shipped_spec = tomllib.load(fh)
    scenario = "segment_harm" if shipped == "checkout_offer" else "notification_cadence"
    proposal = _propose(simulate(1_000, scenario=scenario, seed=1).data, tmp_path)["spec"]
    for key in ("unit", "arm", "control"):
        assert proposal[key] == shipped_spec[key]
    assert set(proposal["features"]) == set(shipped_spec["features"])
    assert {m: (e["goal"], e["role"]) for m, e in proposal["metrics"].items()} == \
        {m: (e["goal"], e["role"]) for m, e in shipped_spec["metrics"].items()}


def test_a_product_export_with_spaced_names_and_unnamed_arm(tmp_path):
    write_product_export(tmp_path, n=800, seed=3)
    proposal = propose_spec(read_table(tmp_path / "pricing.csv"), "pricing", "pricing.csv")
    spec = proposal["spec"]
    assert (spec["unit"], spec["arm"]) == ("Customer ID", "Plan Shown")
    assert spec["control"] in ("free", "trial")  # no label is named like a control: the most common one, said so
    assert any(n["field"] == "control" and "guess" in n["reason"] for n in proposal["notes"])
    assert spec["metrics"]["revenue_usd"] == {"column": "Revenue (USD)", "goal": "increase", "role": "primary"}
    assert spec["metrics"]["refunded"] == {"column": "Refunded", "goal": "decrease", "role": "guardrail",
                                           "max_harm": DEFAULT_MAX_HARM}
    assert spec["features"] == ["Device Type", "Region", "Visits (30d)", "Age"]
    (tmp_path / "p.toml").write_text(spec_to_toml(spec), encoding="utf-8")
    assert load_dataset(load_spec(tmp_path / "p.toml")).n_units == 800


def _table(n: int = 200, seed: int = 0, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "variant": rng.choice(["A", "B"], n),
                          "age": rng.integers(18, 70, n), "revenue": rng.gamma(2.0, 2.0, n).round(2)})
    for key, value in extra.items():
        frame[key] = value
    return frame


def test_no_plausible_arm_column_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": range(300), "age": rng.integers(18, 70, 300), "revenue": rng.normal(5, 1, 300)})
    with pytest.raises(DataError, match="no column looks like the assigned arm") as err:
        _propose(frame, tmp_path)
    assert err.value.field == "arm" and "arm" in err.value.hint
    # a categorical feature is not taken for the arm, though its shares sit on a 5% grid (35/20/15/10/10/10)
    sim = simulate(3_000, scenario="segment_harm", seed=0).data.drop(columns="arm")
    with pytest.raises(DataError, match="no column looks like the assigned arm"):
        _propose(sim, tmp_path)


def test_duplicate_ids_are_a_clear_error(tmp_path):
    frame = _table()
    frame.loc[5, "user_id"] = frame.loc[3, "user_id"]
    with pytest.raises(DataError, match=r"no column holds a unique id per row: 'user_id' repeats 1 ids \(e.g. 'u3'\)") as err:
        _propose(frame, tmp_path)
    assert err.value.field == "unit"


def test_one_arm_only_is_a_clear_error(tmp_path):
    frame = _table()
    frame["variant"] = "A"
    with pytest.raises(DataError, match="single arm label 'A'") as err:
        _propose(frame, tmp_path)
    assert err.value.field == "arm"


def test_no_metric_is_a_clear_error(tmp_path):
    frame = _table().rename(columns={"revenue": "x"})
    with pytest.raises(DataError, match="no numeric column reads like an outcome metric") as err:
        _propose(frame, tmp_path)
    assert err.value.field == "metrics"


def test_odd_bytes_in_column_names_are_left_out_with_a_note(tmp_path):
    frame = _table(**{"bad\nname": 1.0, "rtl\u202eeman": 2.0, "naïve score ✓": np.arange(200) % 3})
    proposal = _propose(frame, tmp_path)
    spec = proposal["spec"]
    everything = json.dumps(spec, ensure_ascii=False)
    assert "bad" not in everything and "\u202e" not in everything and "rtl" not in everything
    reasons = " ".join(n["reason"] for n in proposal["notes"])
    assert "a line feed (U+000A)" in reasons and "RIGHT-TO-LEFT OVERRIDE" in reasons
    # a name with any other character is fine, and TOML quotes it
    assert spec["metrics"]["na_ve_score"]["column"] == "naïve score ✓"  # "score" reads like an outcome
    (tmp_path / "s.toml").write_text(spec_to_toml(spec), encoding="utf-8")
    load_dataset(load_spec(tmp_path / "s.toml"))


def test_control_allocation_and_propensity_rules(tmp_path):
    n = 3_000
    rng = np.random.default_rng(5)
    arm = rng.choice(["treatment", "baseline"], n, p=[0.8, 0.2])
    frame = pd.DataFrame({"account": [f"a{i}" for i in range(n)], "group": arm, "p": np.where(arm == "baseline", 0.2, 0.8),
                          "clicks": rng.poisson(3, n), "error_rate": rng.uniform(size=n), "constant": 1})
    spec = _propose(frame, tmp_path)["spec"]
    assert (spec["unit"], spec["arm"], spec["control"], spec["propensity"]) == ("account", "group", "baseline", "p")
    assert spec["allocation"] == {"baseline": 0.2, "treatment": 0.8}  # control first, a 5%-grid plan
    assert spec["metrics"]["clicks"]["role"] == "primary"
    assert spec["metrics"]["error_rate"] == {"goal": "decrease", "role": "guardrail", "max_harm": DEFAULT_MAX_HARM}
    assert "features" not in spec  # the constant column is left out, so nothing is left to describe units


def test_an_unplanned_looking_split_is_left_out(tmp_path):
    n = 20_000
    arm = np.array(["control"] * 13_700 + ["treat"] * 6_300)  # 68.5% / 31.5%: too far from 70/30 at this size
    frame = _table(n, variant=arm)
    proposal = _propose(frame, tmp_path)
    assert "allocation" not in proposal["spec"]
    assert any(n["field"] == "allocation" and "do not look like a planned split" in n["reason"]
               for n in proposal["notes"])


@pytest.mark.parametrize(("counts", "plan"), [
    ({"control": 17_000, "daily": 16_500, "weekly": 16_500}, {"control": 0.34, "daily": 0.33, "weekly": 0.33}),
    ({"control": 1_000, "b": 1_020, "c": 990}, {"control": 0.3333, "b": 0.3333, "c": 0.3333}),
    ({"control": 9_030, "b": 970}, {"control": 0.9, "b": 0.1}),
])
def test_planned_splits(tmp_path, counts, plan):
    arm = np.concatenate([[a] * n for a, n in counts.items()])
    spec = _propose(_table(len(arm), variant=arm), tmp_path)["spec"]
    assert spec["allocation"] == plan


def test_proposals_are_deterministic(tmp_path):
    frame = simulate(500, scenario="aligned_harm", seed=9).data
    assert _propose(frame, tmp_path) == _propose(frame.copy(), tmp_path)


@pytest.mark.parametrize(("text", "name"), [("Checkout Test", "checkout_test"), ("../../etc", "etc"), ("", "experiment"),
                                            ("Ünïcode!", "n_code")])
def test_experiment_names_from_file_names(text, name):
    assert experiment_name(text) == name


def test_a_partial_proposal_leaves_what_it_cannot_guess_empty(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": range(300), "segment": rng.choice(["x", "y", "z"], 300, p=[0.6, 0.3, 0.1]),
                          "age": rng.integers(18, 70, 300), "amount": rng.normal(5, 1, 300)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    proposal = propose_spec(read_table(tmp_path / "t.csv"), "t", "t.csv", partial=True)
    spec = proposal["spec"]
    assert (spec["unit"], spec["arm"], spec["control"], spec["metrics"]) == ("user_id", "", "", {})
    assert [e["field"] for e in proposal["errors"]] == ["arm", "metrics"]
    assert all(e["message"] and e["hint"] for e in proposal["errors"])
    assert set(spec["features"]) == {"segment", "age", "amount"}
    # without partial, the first of them is raised
    with pytest.raises(DataError, match="no column looks like the assigned arm"):
        propose_spec(read_table(tmp_path / "t.csv"), "t", "t.csv")
    # a complete proposal has no errors to report
    assert _propose(_table(), tmp_path) == {k: v for k, v in propose_spec(
        read_table(tmp_path / "data.csv"), "x", "data.csv", partial=True).items() if k != "errors"}
