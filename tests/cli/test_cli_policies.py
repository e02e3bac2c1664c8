"""`pex policies`, `pex evaluate` and `pex decide` from the command line, including bad inputs.

One workspace per module (the simulated 20k-unit experiment, fitted once with
the default 25% held-out share and its policy set built once); tests read it,
and tests that change state work on a copy.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pex.cli.main import main
from pex.experiment.data import read_table
from pex.experiment.guardrail import LADDER_POWERS, POWER
from pex.experiment.simulate import simulate
from pex.experiment.split import dataset_split_key, evaluation_mask
from pex.policy.base import FORMAT, Policy, PolicyError
from pex.services.models import effect_model_by_id
from pex.store.workspace import Workspace
from tests.shared import N_UNITS, CliResult, snapshot

EXPLORATION, N_ARMS = 0.05, 3
HIGH, LOW = 1.0 - EXPLORATION + EXPLORATION / N_ARMS, EXPLORATION / N_ARMS
ARMS = ["control", "daily", "weekly"]
METRICS = ["sessions", "converted", "unsubscribes"]
TREES = [f"exp-tree-d{d}" for d in (1, 2, 3, 4)]
NAMES = ["exp-all-control", "exp-all-daily", "exp-all-weekly", "exp-uniform", "exp-value", *TREES, "exp-policy-tree"]
# the value policy's ladder (pex.experiment.guardrail.LADDER_POWERS but the default); steps that treat the same units are left out
LADDER = [f"exp-value-p{round(p * 100)}" for p in LADDER_POWERS if p != POWER]


def standard_set(names: list[str]) -> list[str]:
    """``names`` without the ladder steps, after checking those that are there sit right after the value policy."""
    steps = [n for n in names if n in LADDER]
    assert steps == [n for n in LADDER if n in steps]
    at = names.index("exp-value")
    assert names[at + 1:at + 1 + len(steps)] == steps
    return [n for n in names if n not in LADDER]
EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "notification_cadence-tree-example.json"


def cli(home: Path, *args: object) -> CliResult:
    """Run the pex CLI in-process against ``home`` (usable from module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--home", str(home), *map(str, args)])
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_bad_input(r: CliResult, message: str) -> str:
    """Exit 2, an ``error:`` line matching ``message``, a ``hint:`` line and no traceback; returns the error line."""
    assert r.code == 2, r
    assert "Traceback" not in r.err + r.out, r
    lines = r.err.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, r
    assert re.search(message, lines[errors[0]]), r.err
    assert errors[0] + 1 < len(lines) and lines[errors[0] + 1].startswith("hint: ") and len(lines[errors[0] + 1]) > 8, r.err
    return lines[errors[0]]


@dataclass
class Built:
    home: Path
    data: Path  # the experiment's CSV (unit, arm, features, metrics)
    fit_id: str
    fit_summary: dict  # as stored by `pex fit`
    first: CliResult  # the `pex policies exp` call that built the set
    listing: dict  # `pex policies exp --json` afterwards

    @property
    def policies(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.listing["policies"]}

    def document(self, name: str) -> dict:
        return self.policies[name]["document"]

    def evaluation(self, name: str) -> dict:
        return self.policies[name]["evaluation"]

    def copy(self, tmp_path: Path) -> Path:
        target = tmp_path / "ws-copy"
        shutil.copytree(self.home, target)
        return target


@pytest.fixture(scope="module")
def ws(tmp_path_factory, sim_dir) -> Built:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PEX_DATABASE_URL", raising=False)
        mp.delenv("PEX_HOME", raising=False)
        home = tmp_path_factory.mktemp("policies") / "ws"
        assert cli(home, "ingest", sim_dir / "exp.toml").code == 0
        r = cli(home, "fit", "exp", "-q")
        assert r.code == 0, r
        with Workspace(home, create=False) as w:
            record, summary = w.get_fit("exp")
        first = cli(home, "policies", "exp")
        assert first.code == 0, first
        listing = cli(home, "policies", "exp", "--json")
        assert listing.code == 0, listing
        return Built(home, sim_dir / "exp.csv", record.id, summary, first, json.loads(listing.out))


@pytest.fixture(scope="module")
def held_out(sim, ws) -> pd.DataFrame:
    """The experiment's rows that the default fit keeps out of every model (the split under the key it recorded)."""
    return sim.data.loc[evaluation_mask(sim.data["user_id"].to_numpy(), 0.25, key=ws.fit_summary["holdout"]["key"])]


def holdout_content_hash(ws: Built) -> str:
    """The content hash of the dataset version the fit was made on."""
    return ws.fit_summary["dataset_version"]["content_hash"]


def _tree_reading(ws: Built, feature: str, op: str, directory: Path | None = None) -> str:
    """The shallowest distilled tree that tests ``feature`` with ``op``; else (distilled trees
    depend on the fit) the bundled example tree, re-labelled for experiment "exp", as a file."""
    for name in TREES:
        policy = Policy.from_document(ws.document(name))
        if feature in policy.features and op in policy._ops(feature):
            return name
    doc = json.loads(EXAMPLE.read_text())
    policy = Policy.from_document(doc)
    assert feature in policy.features and op in policy._ops(feature)
    path = (directory or Path(tempfile.mkdtemp())) / f"tree-{feature}.json"
    path.write_text(json.dumps({**doc, "experiment": "exp", "name": "exp-example-tree"}))
    return str(path)


# -- pex policies -------------------------------------------------------------------------


def test_policies_builds_and_lists_the_standard_set(ws):
    r = ws.first
    assert "building the value policy" in r.err and "held-out units" in r.err
    for name in NAMES:
        assert name in r.out
    assert "held-out units that no model saw" in r.out and "Distilled trees" in r.out

    assert ws.listing["fit"] == ws.fit_id
    listed = [p["name"] for p in ws.listing["policies"]]
    assert standard_set(listed) == NAMES
    assert any(n in LADDER for n in listed)  # the guardrail binds here: some step differs from the value policy
    kinds = {p["name"]: p["kind"] for p in ws.listing["policies"]}
    assert kinds == {**{n: "constant" for n in NAMES[:4]}, "exp-value": "value", **{t: "tree" for t in TREES}, "exp-policy-tree": "tree",
                     **{n: "value" for n in listed if n in LADDER}}
    for p in ws.listing["policies"]:
        assert p["experiment"] == "exp" and p["fit_id"] == ws.fit_id and p["version"] == 1
        doc = p["document"]
        assert doc["format"] == FORMAT and doc["name"] == p["name"] and doc["version"] == 1 and doc["kind"] == p["kind"]
        assert doc["experiment"] == "exp" and doc["arms"] == ARMS
        assert doc["lineage"]["fit_run"] == ws.fit_id
        ev = p["evaluation"]
        assert ev["name"] == p["name"]
        for m in METRICS:
            v = ev["value"][m]
            assert v["ci_low"] <= v["value"] <= v["ci_high"] and v["estimator"] == "dr"
            lift = ev["lift_vs_control"][m]
            assert lift["ci_low"] <= lift["value"] <= lift["ci_high"]
        assert 0 < ev["diagnostics"]["ess"] <= ev["evaluation_rows"]["n_units"]
        assert math.isclose(sum(ev["arm_shares"].values()), 1.0)
    for name in NAMES[:3]:
        assert ws.document(name)["default_arm"] == name.removeprefix("exp-all-")
        assert ws.document(name)["exploration"] == 0.0
        assert ws.evaluation(name)["arm_shares"][name.removeprefix("exp-all-")] == 1.0
    assert ws.document("exp-uniform")["exploration"] == 1.0
    for a in ARMS:
        assert ws.evaluation("exp-uniform")["arm_shares"][a] == pytest.approx(1 / 3)
    for name in ["exp-value", *TREES]:
        assert ws.document(name)["exploration"] == EXPLORATION
    depths = [ws.evaluation(t)["fidelity"]["depth"] for t in TREES]
    assert depths == [1, 2, 3, 4] and sum(ws.evaluation(t)["fidelity"]["chosen"] for t in TREES) == 1


@dataclass
class Rebuilt:
    home: Path
    unchanged: bool  # the workspace's files after a second plain `pex policies exp`
    again: dict  # that second call's --json output
    rebuilt: dict  # `pex policies exp --rebuild --json`
    latest: dict  # `pex policies exp --json` after the rebuild


@pytest.fixture(scope="module")
def rebuilt(ws, tmp_path_factory) -> Rebuilt:
    home = ws.copy(tmp_path_factory.mktemp("rebuilt"))
    before = snapshot(home)
    again = cli(home, "policies", "exp", "--json")
    assert again.code == 0, again
    unchanged = snapshot(home) == before
    r = cli(home, "policies", "exp", "--rebuild", "--json")
    assert r.code == 0, r
    latest = cli(home, "policies", "exp", "--json")
    assert latest.code == 0, latest
    return Rebuilt(home, unchanged, json.loads(again.out), json.loads(r.out), json.loads(latest.out))


def test_second_call_does_not_build_again_and_rebuild_makes_version_2(ws, rebuilt):
    assert ws.listing["built"] is False and ws.listing["report"] is None  # the fixture's second call
    assert rebuilt.again["built"] is False and rebuilt.unchanged
    assert [(p["name"], p["version"]) for p in rebuilt.again["policies"] if p["name"] not in LADDER] == [(n, 1) for n in NAMES]

    assert rebuilt.rebuilt["built"] is True and rebuilt.rebuilt["report"]["fit"] == ws.fit_id
    assert [(p["name"], p["version"], p["document"]["version"]) for p in rebuilt.rebuilt["policies"]
            if p["name"] not in LADDER] == [(n, 2, 2) for n in NAMES]
    assert rebuilt.latest["built"] is False
    assert [(p["name"], p["version"]) for p in rebuilt.latest["policies"] if p["name"] not in LADDER] == [(n, 2) for n in NAMES]
    with Workspace(rebuilt.home, create=False) as w:
        assert w.get_policy("exp-tree-d2", version=1).document == ws.document("exp-tree-d2")
        assert w.get_policy("exp-tree-d2").version == 2


def test_stored_evaluation_names_the_stored_version(rebuilt):
    for listing in (rebuilt.rebuilt, rebuilt.latest):
        for p in listing["policies"]:
            assert p["evaluation"]["version"] == p["document"]["version"] == p["version"] == 2, p["name"]


@pytest.mark.parametrize(("option", "value"), [("--exploration", "0.2"), ("--min-leaf", "0.2")])
def test_build_options_are_not_silently_ignored(ws, tmp_path, option, value):
    home = ws.copy(tmp_path)
    r = cli(home, "policies", "exp", option, value, "--json")
    assert r.code == 0, r
    listing = json.loads(r.out)
    assert listing["built"] is True, "the option was ignored: the stored set (built with the defaults) was listed"
    if option == "--exploration":
        assert {p["document"]["exploration"] for p in listing["policies"] if p["kind"] != "constant"} == {0.2}
    else:
        assert listing["report"]["options"]["min_leaf_share"] == 0.2


def test_evaluate_uses_the_objective_the_policy_was_built_for(ws, tmp_path):
    home = ws.copy(tmp_path)
    r = cli(home, "policies", "exp", "--weight", "converted=3", "--json")
    assert r.code == 0, r
    stored = {p["name"]: p for p in json.loads(r.out)["policies"]}["exp-value"]
    assert stored["document"]["value_model"]["metrics"]["converted"]["weight"] == 3.0
    r = cli(home, "evaluate", "exp", "exp-value", "--json")
    assert r.code == 0, r
    row = json.loads(r.out)
    assert row["version"] == stored["version"] == 2
    assert row["value"]["converted"]["value"] == pytest.approx(stored["evaluation"]["value"]["converted"]["value"], rel=1e-9)
    assert row["objective"]["value"] == pytest.approx(stored["evaluation"]["objective"]["value"], rel=1e-9)
    assert row["best_arm"] == stored["evaluation"]["best_arm"]


# -- honest evaluation rows -----------------------------------------------------------------


def test_policies_are_evaluated_on_exactly_the_held_out_units(ws, sim, held_out):
    holdout = ws.fit_summary["holdout"]
    # the split's key is the dataset version's, not the seed's (pex.experiment.split.dataset_split_key)
    assert holdout["key"] == dataset_split_key(holdout_content_hash(ws))
    n_held = int(evaluation_mask(sim.data["user_id"].to_numpy(), 0.25, key=holdout["key"]).sum())
    assert 0.23 * N_UNITS < n_held < 0.27 * N_UNITS
    assert holdout["share"] == 0.25 and holdout["seed"] == 0
    assert holdout["n_training"] + n_held == N_UNITS and holdout["n_evaluation"] == n_held
    counts = held_out["arm"].value_counts().to_dict()
    for p in ws.listing["policies"]:
        rows = p["evaluation"]["evaluation_rows"]
        assert rows["n_units"] == n_held and rows["share"] == 0.25 and rows["seed"] == 0
        assert rows["arm_counts"] == {a: int(counts[a]) for a in ARMS}
        assert all(v["n"] == n_held for v in p["evaluation"]["value"].values())


def test_baselines_are_consistent(ws, held_out):
    control, daily = ws.evaluation("exp-all-control"), ws.evaluation("exp-all-daily")
    for m in METRICS:
        lift = control["lift_vs_control"][m]
        assert (lift["value"], lift["ci_low"], lift["ci_high"]) == (0.0, 0.0, 0.0)
        # a paired difference of the two DR values
        assert daily["lift_vs_control"][m]["value"] == pytest.approx(daily["value"][m]["value"] - control["value"][m]["value"],
                                                                     abs=1e-9)
        # all-daily is valued at about the mean outcome of the held-out daily units
        for name, arm in [("exp-all-daily", "daily"), ("exp-all-control", "control")]:
            y = held_out.loc[held_out["arm"] == arm, m].to_numpy(dtype=float)
            v = ws.evaluation(name)["value"][m]
            assert abs(v["value"] - y.mean()) <= 4 * v["se"], (name, m, v, y.mean())
    assert ws.evaluation("exp-value")["best_arm"] in ARMS


# -- documents -------------------------------------------------------------------------------


def test_value_policy_document_names_its_fit_and_tree_documents_stand_alone(ws):
    doc = ws.document("exp-value")
    assert doc["kind"] == "value" and "tree" not in doc
    vm = doc["value_model"]
    assert vm["fit"] == ws.fit_id and set(vm["metrics"]) == set(METRICS)
    for m in METRICS:
        assert math.isfinite(vm["metrics"][m]["coefficient"])
    assert vm["metrics"]["sessions"]["coefficient"] > 0  # primary metric, goal increase
    assert vm["metrics"]["unsubscribes"]["coefficient"] <= 0  # guardrail, goal decrease
    with pytest.raises(PolicyError, match="needs its stored effect models"):
        Policy.from_document(doc)
    with Workspace(ws.home, create=False) as w:
        bound = Policy.from_document(doc, lambda v: effect_model_by_id(w, v["fit"]))
        assert bound.kind == "value" and set(bound.features) >= {"age", "tenure_days", "country", "platform"}

    for depth, name in enumerate(TREES, start=1):
        tdoc = ws.document(name)
        assert tdoc["kind"] == "tree" and "value_model" not in tdoc and tdoc["lineage"]["distilled_depth"] == depth
        policy = Policy.from_document(json.loads(json.dumps(tdoc)))  # no loader: the tree is the whole policy
        # a tree may be a single leaf when the value policy treats few units; its splits use known features
        assert policy.kind == "tree" and policy.exploration == EXPLORATION
        assert set(policy.features) <= set(bound.features)
        assert policy.to_document() == tdoc


# -- pex evaluate ----------------------------------------------------------------------------


def test_evaluate_a_stored_tree(ws, held_out):
    r = cli(ws.home, "evaluate", "exp", "exp-tree-d2")
    assert r.code == 0, r
    assert "exp-tree-d2" in r.out and "held-out units" in r.out and "dr" in r.out and "lift vs all-control" in r.out

    r = cli(ws.home, "evaluate", "exp", "exp-tree-d2", "--json")
    assert r.code == 0, r
    row = json.loads(r.out)
    assert row["name"] == "exp-tree-d2" and row["kind"] == "tree"
    assert row["evaluation_rows"]["fit"] == ws.fit_id and row["evaluation_rows"]["n_units"] == len(held_out)
    for m in METRICS:
        assert set(row["estimators"][m]) == {"ips", "snips", "dm", "dr"}
        for name, est in row["estimators"][m].items():
            assert est["estimator"] == name and est["ci_low"] <= est["value"] <= est["ci_high"] and est["n"] == len(held_out)
        assert row["estimators"][m]["dr"] == row["value"][m]
        # the same number `pex policies` stored when it built the tree
        assert row["value"][m]["value"] == pytest.approx(ws.evaluation("exp-tree-d2")["value"][m]["value"], rel=1e-9)


def test_evaluate_policy_files(ws, tmp_path):
    tree, value = tmp_path / "tree.json", tmp_path / "value.json"
    tree.write_text(json.dumps(ws.document("exp-tree-d2")))
    value.write_text(json.dumps(ws.document("exp-value")))
    for path, name in [(tree, "exp-tree-d2"), (value, "exp-value")]:
        r = cli(ws.home, "evaluate", "exp", path, "--json")
        assert r.code == 0, r
        row = json.loads(r.out)
        assert row["name"] == name and row["evaluation_rows"]["fit"] == ws.fit_id
        for m in METRICS:
            assert row["value"][m]["value"] == pytest.approx(ws.evaluation(name)["value"][m]["value"], rel=1e-9)


def test_evaluate_a_policy_of_another_experiment(ws):
    assert json.loads(EXAMPLE.read_text())["experiment"] == "notification_cadence"
    before = snapshot(ws.home)
    assert_bad_input(cli(ws.home, "evaluate", "exp", EXAMPLE), r"built for experiment 'notification_cadence', not 'exp'")
    assert snapshot(ws.home) == before


# -- pex decide ------------------------------------------------------------------------------


def _greedy_labels(policy: Policy, data: Path) -> np.ndarray:
    frame = read_table(data, text_columns=("user_id", *policy.categorical_features()))
    return np.asarray(policy.arms, dtype=object)[policy.greedy_arms(frame)]


def _check_decisions(out: pd.DataFrame, data: pd.DataFrame, greedy: np.ndarray) -> None:
    assert list(out.columns) == ["user_id", "arm", "propensity"]
    assert len(out) == len(data) and out["user_id"].tolist() == data["user_id"].tolist()
    assert set(out["arm"]) <= set(ARMS)
    p = out["propensity"].to_numpy()
    high = np.isclose(p, HIGH, rtol=0, atol=1e-12)
    assert (high | np.isclose(p, LOW, rtol=0, atol=1e-12)).all()
    # the greedy arm has propensity 1 - e + e/k (also when exploration drew it), every other arm e/k
    np.testing.assert_array_equal(high, out["arm"].to_numpy() == greedy)
    n = len(out)
    assert abs(high.mean() - HIGH) <= 4 * math.sqrt(HIGH * (1 - HIGH) / n)


def test_decide_with_a_tree(ws, tmp_path):
    data = pd.read_csv(ws.data, dtype={"user_id": str})
    policy = Policy.from_document(ws.document("exp-tree-d3"))
    greedy = _greedy_labels(policy, ws.data)
    before = snapshot(ws.home)
    csv, parquet = tmp_path / "out.csv", tmp_path / "sub" / "out.parquet"
    r = cli(ws.home, "decide", "exp-tree-d3", "--data", ws.data, "--out", csv, "--seed", 1)
    assert r.code == 0, r
    assert f"wrote {N_UNITS:,} decisions" in r.out and "exp-tree-d3 v1" in r.out
    out = pd.read_csv(csv, dtype={"user_id": str})
    _check_decisions(out, data, greedy)
    # greedy shares are the tree's own
    for a in ARMS:
        assert abs((out["arm"] == a).mean() - ((greedy == a).mean() * (1 - EXPLORATION) + LOW)) < 0.02
    r = cli(ws.home, "decide", "exp-tree-d3", "--data", ws.data, "--out", parquet, "--seed", 1)
    assert r.code == 0, r
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), out, check_dtype=False)
    assert snapshot(ws.home) == before


def test_decide_twice_gives_identical_files_and_a_unit_keeps_its_arm(ws, tmp_path):
    """No seed needed: a unit's decision is a keyed hash of the policy version and its id, not of the run or
    of the other rows of the file."""
    outs = []
    for name in ("a.csv", "b.csv"):
        r = cli(ws.home, "decide", "exp-tree-d3", "--data", ws.data, "--out", tmp_path / name)
        assert r.code == 0, r
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    whole = pd.read_csv(tmp_path / "a.csv", dtype={"user_id": str}).set_index("user_id")
    assert 0 < (whole["propensity"] < 0.5).sum() < len(whole)  # some units explored, most not
    # the same units in another order and in a smaller file: every unit gets the same arm as before
    data = pd.read_csv(ws.data, dtype={"user_id": str}).sample(frac=0.3, random_state=3)
    part = tmp_path / "part.csv"
    data.to_csv(part, index=False)
    r = cli(ws.home, "decide", "exp-tree-d3", "--data", part, "--out", tmp_path / "p.csv")
    assert r.code == 0, r
    again = pd.read_csv(tmp_path / "p.csv", dtype={"user_id": str}).set_index("user_id")
    pd.testing.assert_frame_equal(again, whole.loc[again.index])


def test_decide_with_the_value_policy_is_reproducible_with_a_seed(ws, tmp_path):
    # a slice of the experiment's file: the value policy predicts effects for every row, which takes a while
    data = pd.read_csv(ws.data, dtype={"user_id": str}).iloc[:4000]
    some = tmp_path / "some.csv"
    data.to_csv(some, index=False)
    with Workspace(ws.home, create=False) as w:
        policy = Policy.from_document(ws.document("exp-value"), lambda v: effect_model_by_id(w, v["fit"]))
        greedy = _greedy_labels(policy, some)
    outs = []
    for name, seed in [("a.csv", 7), ("b.csv", 7), ("c.csv", 8)]:
        r = cli(ws.home, "decide", "exp-value", "--data", some, "--out", tmp_path / name, "--seed", seed)
        assert r.code == 0, r
        assert "wrote 4,000 decisions" in r.out and "exp-value v1" in r.out
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    _check_decisions(pd.read_csv(tmp_path / "a.csv", dtype={"user_id": str}), data, greedy)
    # personalised decisions follow the models row by row. The stored policy's calibrated score threshold may keep
    # control for every one of these rows (it does on this fit's split), so the same model without a threshold, as a
    # policy file, shows it: not one arm for everyone
    doc = ws.document("exp-value")
    bolder = {**doc, "name": "exp-value-bolder", "value_model": {**doc["value_model"], "min_score": 0.0}}
    (tmp_path / "bolder.json").write_text(json.dumps(bolder))
    r = cli(ws.home, "decide", tmp_path / "bolder.json", "--data", some, "--out", tmp_path / "d.csv", "--seed", 7)
    assert r.code == 0, r
    with Workspace(ws.home, create=False) as w:
        greedy = _greedy_labels(Policy.from_document(bolder, lambda v: effect_model_by_id(w, v["fit"])), some)
    _check_decisions(pd.read_csv(tmp_path / "d.csv", dtype={"user_id": str}), data, greedy)
    assert len(set(greedy)) > 1


def test_export_stored_policies(ws, tmp_path):
    """A stored tree exports as SQL; a value policy needs its models, so it has no SQL form but exports as JSON."""
    import duckdb

    out = tmp_path / "d3.sql"
    r = cli(ws.home, "export", "exp-tree-d3", "--format", "sql", "--out", out)
    assert r.code == 0 and "wrote" in r.out, r
    expression = "\n".join(line for line in out.read_text().splitlines() if not line.startswith("--"))
    with duckdb.connect() as db:
        db.register("units", pd.read_csv(ws.data, dtype={"user_id": str}))
        arms = db.sql(f"SELECT {expression} AS arm FROM units").df()["arm"].to_numpy(dtype=object)
    assert (arms == _greedy_labels(Policy.from_document(ws.document("exp-tree-d3")), ws.data)).all()
    assert_bad_input(cli(ws.home, "export", "exp-value", "--format", "sql"), r"value policy, which has no SQL form")
    r = cli(ws.home, "export", "exp-value", "--format", "json")
    assert r.code == 0 and json.loads(r.out) == ws.document("exp-value")


def test_decide_with_a_portable_tree_file_needs_the_unit_column(ws, tmp_path):
    out = tmp_path / "out.csv"
    assert_bad_input(cli(ws.home, "decide", EXAMPLE, "--data", ws.data, "--out", out), r"which column identifies the units")
    assert not out.exists()
    r = cli(ws.home, "decide", EXAMPLE, "--data", ws.data, "--out", out, "--unit", "user_id", "--seed", 0)
    assert r.code == 0, r
    assert len(pd.read_csv(out)) == N_UNITS


# -- bad inputs ------------------------------------------------------------------------------


def _write_bad_data(ws: Built, tmp_path: Path, case: str) -> tuple[Path, str]:
    """A data file for ``case`` and the policy to decide with."""
    frame = pd.read_csv(ws.data, dtype={"user_id": str}).iloc[:500]
    path = tmp_path / "in.csv"
    if case == "missing-tree-feature":
        policy = _tree_reading(ws, "tenure_days", "<=", tmp_path)
        frame = frame.drop(columns="tenure_days")
    elif case == "missing-value-feature":
        policy = "exp-value"
        frame = frame.drop(columns="x3")
    elif case in ("text-in-numeric-tree", "text-in-numeric-value"):
        policy = _tree_reading(ws, "age", "<=", tmp_path) if case.endswith("tree") else "exp-value"
        frame = frame.assign(age=frame["age"].astype(object).where(frame.index != 3, "abc"))
    else:
        policy = "exp-tree-d2"
    frame.to_csv(path, index=False)
    return path, policy


@pytest.mark.parametrize(("case", "message"), [
    ("missing-tree-feature", r"feature column 'tenure_days' is missing from in\.csv"),
    ("missing-value-feature", r"feature column 'x3' is missing from in\.csv"),
    ("text-in-numeric-tree", r"feature 'age' .*must be numeric but has text such as 'abc'"),
    ("text-in-numeric-value", r"feature 'age' .*must be numeric but has text such as 'abc'"),
    ("unknown-policy", r"no policy 'nope' in this workspace"),
    ("txt-output", r"out\.txt is neither \.csv nor \.parquet"),
    ("banana-kind", r"policy kind 'banana' is not one of constant, tree, value"),
    ("invalid-json", r"policy file is not valid JSON"),
])
def test_decide_bad_inputs(ws, tmp_path, case, message):
    data, policy = _write_bad_data(ws, tmp_path, case)
    out = tmp_path / "out.csv"
    if case == "unknown-policy":
        policy = "nope"
    elif case == "txt-output":
        out = tmp_path / "out.txt"
    elif case == "banana-kind":
        policy = tmp_path / "banana.json"
        policy.write_text(json.dumps({**ws.document("exp-tree-d2"), "kind": "banana"}))
    elif case == "invalid-json":
        policy = tmp_path / "broken.json"
        policy.write_text('{"format": "pex.policy/1", "name": ')
    before = snapshot(ws.home)
    assert_bad_input(cli(ws.home, "decide", policy, "--data", data, "--out", out, "--seed", 1), message)
    assert not out.exists()
    assert snapshot(ws.home) == before


@pytest.mark.parametrize(("args", "message"), [
    (["policies", "exp", "--weight", "sessions"], r"--weight 'sessions' is not METRIC=NUMBER"),
    (["policies", "exp", "--weight", "nope=1"], r"weight given for unknown metric 'nope'"),
    (["policies", "nope"], r"no experiment named 'nope'"),
    (["evaluate", "exp", "nope"], r"no policy 'nope' in this workspace"),
    (["evaluate", "exp", "banana.json"], r"policy kind 'banana' is not one of constant, tree, value"),
    (["evaluate", "exp", "broken.json"], r"policy file is not valid JSON"),
    (["evaluate", "exp", "absent.json"], r"cannot read policy file .*absent\.json"),
])
def test_policies_and_evaluate_bad_inputs(ws, tmp_path, args, message):
    (tmp_path / "banana.json").write_text(json.dumps({**ws.document("exp-tree-d2"), "kind": "banana"}))
    (tmp_path / "broken.json").write_text("{not json")
    args = [str(tmp_path / a) if a.endswith(".json") else a for a in args]
    before = snapshot(ws.home)
    assert_bad_input(cli(ws.home, *args), message)
    assert snapshot(ws.home) == before


@pytest.mark.parametrize("where", ["nonexistent", "empty-folder"])
@pytest.mark.parametrize("command", ["evaluate", "decide"])
def test_value_policy_file_outside_its_workspace(ws, tmp_path, where, command):
    doc = tmp_path / "value.json"
    doc.write_text(json.dumps(ws.document("exp-value")))
    home = tmp_path / "elsewhere"
    if where == "empty-folder":
        home.mkdir()
    args = ["evaluate", "exp", doc] if command == "evaluate" else ["decide", doc, "--data", ws.data, "--out", tmp_path / "o.csv"]
    assert_bad_input(cli(home, *args), r"no pex workspace at")
    assert (where == "empty-folder") == home.exists()
    assert snapshot(home) == {} and not (tmp_path / "o.csv").exists()


def test_value_policy_file_in_a_workspace_without_its_fit(ws, sim_dir, tmp_path):
    doc = tmp_path / "value.json"
    doc.write_text(json.dumps(ws.document("exp-value")))
    home = tmp_path / "other"
    assert cli(home, "ingest", sim_dir / "exp.toml").code == 0
    before = snapshot(home)
    assert_bad_input(cli(home, "evaluate", "exp", doc), rf"no fit '{re.escape(ws.fit_id)}' in this workspace")
    assert snapshot(home) == before


@pytest.fixture(scope="module")
def small_spec(tmp_path_factory) -> Path:
    return simulate(3000, seed=5).write(tmp_path_factory.mktemp("small"), name="small")


@pytest.mark.parametrize(("holdout", "message", "hint"), [
    ("0", r"fit small-fit-\S+ used every unit, so none is left to evaluate policies on", "--holdout"),
    ("0.01", r"the fit kept \d+ units out of its models: too few to evaluate policies honestly", "--holdout"),
])
def test_policies_need_held_out_units(small_spec, tmp_path, holdout, message, hint):
    home = tmp_path / "ws"
    assert cli(home, "ingest", small_spec).code == 0
    r = cli(home, "fit", "small", "--holdout", holdout, "--learner", "s", "-q")
    assert r.code == 0, r
    before = snapshot(home)
    for args in (["policies", "small"], ["policies", "small", "--json"]):
        r = cli(home, *args)
        assert_bad_input(r, message)
        assert hint in r.err.split("hint: ", 1)[1]
    assert snapshot(home) == before
