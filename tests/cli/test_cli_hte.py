"""`pex fit` and `pex predict` from the command line, including bad inputs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pex.cli.main import main
from pex.experiment.simulate import simulate


@pytest.fixture(scope="module")
def small_exp(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    spec = simulate(5000, seed=8).write(d, name="small")
    return d, spec


@pytest.fixture(scope="module")
def fitted_home(tmp_path_factory, small_exp):
    """A workspace with ``small`` ingested and fitted, and the fit's --json output (never modify it: tests get a
    copy from :func:`fitted`, so the fit is done once, not once per test)."""
    _d, spec = small_exp
    home = tmp_path_factory.mktemp("fitted") / "ws"
    with pytest.MonkeyPatch.context() as mp:  # module scope: conftest's per-test guard has not run yet
        mp.delenv("PEX_DATABASE_URL", raising=False)
        mp.delenv("PEX_HOME", raising=False)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["--home", str(home), "ingest", str(spec)]) == 0, err.getvalue()
            out.truncate(0)
            out.seek(0)
            assert main(["--home", str(home), "fit", "small", "--quiet", "--json"]) == 0, err.getvalue()
    return home, json.loads(out.getvalue())


@pytest.fixture
def fitted(fitted_home, home):
    """A private copy of :func:`fitted_home` at the test's workspace; returns the fit's --json output."""
    template, output = fitted_home
    shutil.copytree(template, home)
    return output


def test_fit_prints_and_stores_the_leaderboard(run, small_exp):
    _d, spec = small_exp
    assert run("ingest", spec).code == 0
    r = run("fit", "small", "--learner", "auto")
    assert r.code == 0, r
    assert "Leaderboard per metric" in r.out and "selected" in r.out
    assert "Do effects differ across units?" in r.out and "Segments" in r.out
    assert "[" in r.err and "/" in r.err  # progress lines on stderr


def test_fit_json_and_predict(run, fitted, small_exp, tmp_path):
    _d, _ = small_exp
    assert fitted["fit"]["id"].startswith("small-fit-")
    assert set(fitted["selected"]) == {"sessions", "converted", "unsubscribes"}
    assert {r["learner"] for r in fitted["leaderboard"]} == {"t", "x", "s", "dr", "ensemble"}
    assert len(fitted["heterogeneity"]) == 6 and fitted["segments"]

    new = simulate(300, seed=77).data.drop(columns=["arm", "sessions", "converted", "unsubscribes"])
    new.to_csv(tmp_path / "new.csv", index=False)
    for out in ("effects.csv", "effects.parquet"):
        r = run("predict", "small", "--data", tmp_path / "new.csv", "--out", tmp_path / out)
        assert r.code == 0, r
    csv = pd.read_csv(tmp_path / "effects.csv", dtype={"user_id": "string"})
    parquet = pd.read_parquet(tmp_path / "effects.parquet")
    expected = ["user_id"] + [f"cate__{m}__{a}" for m in ("sessions", "converted", "unsubscribes") for a in ("daily", "weekly")]
    assert list(csv.columns) == expected and len(csv) == 300
    assert csv["user_id"].tolist() == new["user_id"].tolist()
    np.testing.assert_allclose(csv.iloc[:, 1:].to_numpy(), parquet.iloc[:, 1:].to_numpy(), rtol=1e-12)
    # explicit fit id gives the same predictions
    r = run("predict", "small", "--data", tmp_path / "new.csv", "--out", tmp_path / "again.csv", "--fit", fitted["fit"]["id"])
    assert r.code == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again.csv", dtype={"user_id": "string"}), csv)


def _write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("missing-feature", r"feature column 'tenure_days' missing from the data"),
    ("missing-unit", r"unit column 'user_id' is not in"),
    ("text-in-numeric", r"feature 'age' must be numeric but has text such as 'old'"),
    ("bad-out-suffix", r"neither \.csv nor \.parquet"),
    ("no-such-file", r"data file not found"),
    ("empty-file", r"is empty"),
    ("unknown-fit", r"has no fit 'nope'"),
])
def test_predict_bad_inputs(run, fitted, tmp_path, case, message):
    base = simulate(50, seed=3).data
    data, out, extra = tmp_path / "in.csv", tmp_path / "out.csv", []
    if case == "missing-feature":
        _write(base.drop(columns="tenure_days"), data)
    elif case == "missing-unit":
        _write(base.drop(columns="user_id"), data)
    elif case == "text-in-numeric":
        _write(base.assign(age=base["age"].astype(object).where(base.index != 3, "old")), data)
    elif case == "bad-out-suffix":
        _write(base, data)
        out = tmp_path / "out.xlsx"
    elif case == "no-such-file":
        data = tmp_path / "absent.csv"
    elif case == "empty-file":
        data.write_bytes(b"")
    elif case == "unknown-fit":
        _write(base, data)
        extra = ["--fit", "nope"]
    r = run("predict", "small", "--data", data, "--out", out, *extra)
    assert r.code == 2, r
    assert r.err.startswith("error: ") and "hint: " in r.err and "Traceback" not in r.err + r.out
    import re

    assert re.search(message, r.err.splitlines()[0]), r.err
    assert not out.exists()


def test_fit_and_predict_need_a_fit_or_an_experiment(run, small_exp, tmp_path):
    d, spec = small_exp
    r = run("fit", "nope")
    assert r.code == 2 and "no pex workspace" in r.err
    assert run("ingest", spec).code == 0
    r = run("predict", "small", "--data", d / "small.csv", "--out", tmp_path / "o.csv")
    assert r.code == 2 and "has no fitted effect models" in r.err and "pex fit small" in r.err
    r = run("fit", "other")
    assert r.code == 2 and "no experiment named 'other'" in r.err


def test_numeric_looking_category_labels_keep_their_meaning(run, tmp_path):
    """A plan column with labels "1", "2", "gold": a blank cell in the scoring file must not turn "1" into "1.0"."""
    sim = simulate(4000, seed=12)
    data = sim.data.assign(plan=np.array(["1", "2", "gold"])[np.arange(4000) % 3])
    d = tmp_path / "plan"
    d.mkdir()
    data.to_csv(d / "plan.csv", index=False)
    (d / "plan.toml").write_text(sim.spec_toml("plan", "plan.csv"))
    assert run("ingest", d / "plan.toml").code == 0
    assert run("fit", "plan", "--learner", "s", "--quiet").code == 0
    rows = data.drop(columns=["arm", "sessions", "converted", "unsubscribes"]).iloc[:6].copy()
    rows.to_csv(tmp_path / "a.csv", index=False)
    with_blank = rows.copy()
    with_blank.loc[with_blank.index[-1], "plan"] = None
    with_blank.to_csv(tmp_path / "b.csv", index=False)
    for name in ("a", "b"):
        assert run("predict", "plan", "--data", tmp_path / f"{name}.csv", "--out", tmp_path / f"{name}_out.csv").code == 0
    a = pd.read_csv(tmp_path / "a_out.csv").iloc[:5]
    b = pd.read_csv(tmp_path / "b_out.csv").iloc[:5]
    pd.testing.assert_frame_equal(a, b)


def test_damaged_model_files_are_a_clear_error(run, fitted, small_exp, home, tmp_path):
    d, _ = small_exp
    fit_dir = home / "artifacts" / "fits" / fitted["fit"]["id"]
    (fit_dir / "manifest.json").write_text("{not json")
    r = run("predict", "small", "--data", d / "small.csv", "--out", tmp_path / "o.csv")
    assert r.code == 2 and "stored effect model is damaged" in r.err and "Traceback" not in r.err


def test_segments_without_usable_features_are_one_segment():
    from pex.experiment.features import FeatureEncoder
    from pex.hte.segments import find_segments

    enc = FeatureEncoder(columns=["c"], kinds={"c": "categorical"}, categories={"c": []})
    X = np.full((100, 1), np.nan)
    rng = np.random.default_rng(0)
    segs = find_segments(enc, X, {("m", "t"): rng.normal(size=100)}, {("m", "t"): rng.normal(size=100)},
                         grow=np.arange(100) < 50)
    assert len(segs) == 1 and segs[0].rule == "all units" and segs[0].share == 1.0 and segs[0].n_estimation == 50
