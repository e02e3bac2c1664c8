"""Policies exported as ONNX assign exactly pex's greedy arms when onnxruntime runs them.

Value policies from real fits (every learner, so every recipe shape: T, X and DR boosters on the features,
the S-learner's booster on the features plus arm columns), decided on 100,000 units with missing numbers,
missing labels and an unseen country; tree policies on the same units.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from test_export import EXAMPLE, _random_tree

import pex.hte.learners as learners
from pex.cli.main import main
from pex.experiment.data import validate
from pex.experiment.simulate import simulate
from pex.experiment.spec import load_spec
from pex.hte.learners import fit_effects
from pex.policy.base import Policy
from pex.policy.constant import constant_policy
from pex.policy.onnx import policy_onnx
from pex.policy.value import build_value_policy
from pex.services.models import effect_model_by_id
from pex.store.workspace import Workspace
from tests.shared import CliResult

N = 100_000
N_TRAIN = 4_000
ROUNDS = 30  # boosting rounds per model: the trees are what is checked, not their number (pex trains 100-200)


def _fewer_rounds(params_of):
    def params(*args, **kwargs):
        return {**params_of(*args, **kwargs), "num_boost_round": ROUNDS}
    return params


@pytest.fixture(scope="module", autouse=True)
def quick_models():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(learners, "outcome_params", _fewer_rounds(learners.outcome_params))
        mp.setattr(learners, "effect_params", _fewer_rounds(learners.effect_params))
        yield


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A small simulated experiment (4,000 units; its age and platform have missing values, tenure_days none)."""
    sim = simulate(N_TRAIN, scenario="notification_cadence", seed=3)
    directory = tmp_path_factory.mktemp("onnx")
    spec_path = sim.write(directory, name="exp")
    return validate(sim.data, load_spec(spec_path)), spec_path


@pytest.fixture(scope="module")
def units() -> pd.DataFrame:
    """100,000 other units with holes: 10% missing numbers and labels, 5% of countries never seen."""
    frame = simulate(N, seed=11).data.copy()
    rng = np.random.default_rng(5)
    for column in ("age", "tenure_days", "x0"):
        frame.loc[rng.random(N) < 0.1, column] = np.nan
    for column in ("country", "platform"):
        frame[column] = frame[column].astype(object)
        frame.loc[rng.random(N) < 0.1, column] = None
    frame.loc[rng.random(N) < 0.05, "country"] = "ZZ"
    return frame


def feeds(session: ort.InferenceSession, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each graph input from its column: numbers as doubles (NaN missing), labels as text ('' missing)."""
    out = {}
    for i in session.get_inputs():
        if i.type == "tensor(string)":
            out[i.name] = frame[i.name].fillna("").astype(str).to_numpy(dtype=object).reshape(-1, 1)
        else:
            out[i.name] = frame[i.name].to_numpy(dtype=np.float64).reshape(-1, 1)
    return out


def run_onnx(model: bytes | onnx.ModelProto, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds(session, frame))))


def assert_same_arms(policy: Policy, out: dict[str, np.ndarray], frame: pd.DataFrame) -> np.ndarray:
    want = policy.greedy_arms(frame)
    mismatches = int((out["arm_index"] != want).sum())
    assert mismatches == 0, f"{mismatches} of {len(frame):,} rows get another arm"
    np.testing.assert_array_equal(out["arm"], np.asarray(policy.arms, dtype=object)[want])
    return want


@pytest.mark.parametrize(("learner", "budget"), [("t", None), pytest.param("s", None, marks=pytest.mark.slow),
                                                 pytest.param("x", 0.4, marks=pytest.mark.slow), ("dr", 0.4)])
def test_value_policies_assign_the_same_arms_and_scores_in_onnxruntime(experiment, units, learner, budget):
    dataset, _ = experiment
    fit = fit_effects(dataset, learner=learner, seed=0)
    assert set(fit.model.learners.values()) == {learner}
    policy, _info = build_value_policy(name=f"exp-value-{learner}", spec=dataset.spec, model=fit.model, frame=dataset.frame,
                                       fit_id="test", budget=budget)
    if budget is not None:
        assert policy.value_model["min_score"] > 0  # the bar, not control's default 0
    model = policy_onnx(policy)
    out = run_onnx(model, units)
    chosen = assert_same_arms(policy, out, units)
    assert len(np.unique(chosen)) == len(policy.arms)  # a real choice: every arm wins somewhere
    np.testing.assert_allclose(out["scores"], policy.scores(units), rtol=1e-5, atol=1e-12)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["pex.arms"]) == policy.arms and props["pex.policy.name"] == policy.name
    assert [f["name"] for f in json.loads(props["pex.features"])] == fit.model.encoder.columns
    assert props["pex.exploration_applied"] == "false" and "not applied" in model.graph.doc_string


def test_the_s_learner_graph_reads_the_arm_columns(experiment, units):
    """The S-learner's effect comes from one booster read with different arm columns: drop them and it is 0."""
    dataset, _ = experiment
    fit = fit_effects(dataset, learner="s", seed=0)
    policy, _ = build_value_policy(name="exp-value-s", spec=dataset.spec, model=fit.model, frame=dataset.frame, fit_id="test")
    scores = run_onnx(policy_onnx(policy), units.head(2000))["scores"]
    treated = [j for j, a in enumerate(policy.arms) if a != policy.default_arm]
    assert np.abs(scores[:, treated]).max() > 1e-3


def test_ties_go_to_the_first_arm_as_in_pex(experiment, units):
    """Arms with the very same effects tie on every row, and effects of exactly 0 tie with control's bar of 0:
    the first arm wins (pex.policy.value.choose_arms), not any other."""
    dataset, _ = experiment
    fit = fit_effects(dataset, learner="t", seed=0)
    model = fit.model
    frame = units.head(20_000)
    twins = {m: {arm: model.recipes[m]["daily"] for arm in model.treated_arms} for m in model.metrics}
    some = model.recipes[model.metrics[0]]["daily"][0]["model"]
    nothing = [{"model": some, "weight": 1.0}, {"model": some, "weight": -1.0}]  # p - p: exactly 0
    for recipes, expected in [(twins, {"control", "daily"}), ({m: {a: nothing for a in model.treated_arms} for m in model.metrics},
                                                                {"control"})]:
        tied = dataclasses.replace(model, recipes=recipes)
        policy, _ = build_value_policy(name="exp-tied", spec=dataset.spec, model=tied, frame=dataset.frame, fit_id="test",
                                       guardrails="penalty")
        out = run_onnx(policy_onnx(policy), frame)
        assert set(out["arm"]) == expected
        assert_same_arms(policy, out, frame)


def test_tree_policies_assign_the_same_arms_in_onnxruntime(units):
    example = Policy.from_document(json.loads(EXAMPLE.read_text()))
    assert_same_arms(example, run_onnx(policy_onnx(example), units), units)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        policy = Policy.from_document({"format": "pex.policy/1", "name": f"random-{seed}", "kind": "tree",
                                       "arms": ["control", "daily", "weekly"], "default_arm": "control",
                                       "tree": _random_tree(rng, 6)})
        if policy.features:
            assert_same_arms(policy, run_onnx(policy_onnx(policy), units), units)


def test_constant_policies_have_no_onnx_form():
    from pex.errors import PexError

    with pytest.raises(PexError, match="reads no feature"):
        policy_onnx(constant_policy(["a", "b"], "b"))


def test_serving_does_not_import_onnx():
    code = ("import sys, pex.policy.value, pex.policy.base, pex.hte.model, pex.services.exports; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxmltools', 'onnxruntime')))")
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert listed.strip() == "[]"


def cli(*args: object, capsys) -> CliResult:
    capsys.readouterr()
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def test_pex_export_writes_an_onnx_file(experiment, units, tmp_path, capsys):
    dataset, spec_path = experiment
    home = tmp_path / "ws"
    assert cli("--home", home, "ingest", spec_path, capsys=capsys).code == 0
    assert (r := cli("--home", home, "fit", "exp", "--learner", "s", "-q", capsys=capsys)).code == 0, r
    with Workspace(home, create=False) as ws:
        record, _ = ws.get_fit("exp")
        model = effect_model_by_id(ws, record.id)
        policy, _ = build_value_policy(name="exp-value", spec=dataset.spec, model=model, frame=dataset.frame, fit_id=record.id)
        ws.put_policies("exp", [(policy.to_document(), None)], fit_id=record.id)
    out = tmp_path / "policy.onnx"
    r = cli("--home", home, "export", "exp-value", "--format", "onnx", "--out", out, capsys=capsys)
    assert r.code == 0, r
    assert f"wrote {out} (onnx, policy exp-value v1)" in r.out
    frame = units.head(5000)
    assert_same_arms(policy, run_onnx(out.read_bytes(), frame), frame)

    r = cli("--home", home, "export", "exp-value", "--format", "onnx", capsys=capsys)
    assert r.code == 2 and "error: --format onnx writes a binary file and needs --out" in r.err and "hint: " in r.err, r
    r = cli("--home", home, "export", "exp-value", "--format", "sql", capsys=capsys)
    assert r.code == 2 and "has no SQL form" in r.err and "--format onnx" in r.err, r
    constant = tmp_path / "constant.json"
    constant.write_text(constant_policy(policy.arms, "daily").to_json())
    r = cli("--home", home, "export", constant, "--format", "onnx", "--out", tmp_path / "constant.onnx", capsys=capsys)
    assert r.code == 2 and "reads no feature" in r.err and "--format sql" in r.err, r
    assert not (tmp_path / "constant.onnx").exists()
