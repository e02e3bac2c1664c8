"""Logged feedback: the decision log joined with outcomes (`pex decisions`), valued off-policy (`pex evaluate --logged`).

The truth test serves the example tree with 20% exploration to 20,000 fresh simulated units, reports the realised
outcome of each unit's served arm, and checks IPS and SNIPS of other policies against their true value on those
units: the mean of the potential outcomes of the arms they would have chosen.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from served import NAME, constant, decision_rows, live_units, realised, served_tree

from pex.cli.main import main
from pex.policy.base import Policy
from pex.policy.tree import TreePolicy
from pex.store.workspace import Workspace

N_LIVE = 20_000
MISSING_CONVERTED = 0.1  # share of units whose `converted` never comes back (at random)


def _cli(capsys, home, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--home", str(home), *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def served(tmp_path_factory, ingested_template):
    """The served tree's decisions for 20,000 live units, their realised outcomes recorded, exported as logged feedback."""
    base = tmp_path_factory.mktemp("served")
    home = base / "ws"
    shutil.copytree(ingested_template, home)
    live = live_units(N_LIVE, seed=5)
    policy = served_tree(0.2)
    rows = decision_rows(policy, live.data, live.truth.feature_names)
    with Workspace(home, create=False) as ws:
        ws.append_decisions(rows)
    arms = np.asarray([r["arm"] for r in rows])
    outcomes = realised(live, arms)
    dropped = np.random.default_rng(3).uniform(size=N_LIVE) < MISSING_CONVERTED
    outcomes.loc[dropped, "converted"] = np.nan
    outcomes.to_csv(base / "outcomes.csv", index=False)
    assert main(["--home", str(home), "outcomes", NAME, str(base / "outcomes.csv")]) == 0
    for suffix in ("parquet", "csv"):
        assert main(["--home", str(home), "decisions", NAME, "--out", str(base / f"logged.{suffix}")]) == 0
    policies = {}
    for p in [policy, *(constant(a, live.arms) for a in live.arms), _other_tree()]:
        policies[p.name] = base / f"{p.name}.json"
        policies[p.name].write_text(p.to_json(), encoding="utf-8")
    return {"home": home, "base": base, "live": live, "policy": policy, "arms": arms, "dropped": dropped,
            "files": policies}


def _other_tree() -> Policy:
    """A candidate unlike the served tree: daily for the young, weekly for the rest."""
    return TreePolicy(name="young-daily", arms=["control", "daily", "weekly"], default_arm="control",
                  experiment=NAME, tree={"feature": "age", "op": "<=", "value": 30, "missing": "right",
                                         "left": {"arm": "daily"}, "right": {"arm": "weekly"}})


def _true_value(policy: Policy, live, metric: str, rows: np.ndarray) -> float:
    """Mean over ``rows`` of sum_a pi(a | x) Y(a): the candidate's value on these very units, from the potential outcomes."""
    probs = policy.action_probabilities(live.data)
    table = np.column_stack([live.truth.outcomes[metric][a] for a in policy.arms])
    return float((probs * table).sum(axis=1)[rows].mean())


def _evaluate(capsys, served, name: str, suffix: str = "parquet") -> dict:
    code, out, err = _cli(capsys, served["home"], "evaluate", NAME, served["files"][name], "--logged",
                          served["base"] / f"logged.{suffix}", "--json")
    assert code == 0, err
    return json.loads(out)


def test_ips_and_snips_of_other_policies_are_within_3_se_of_their_true_value(capsys, served):
    live, kept = served["live"], ~served["dropped"]
    worst = 0.0
    for name in ("all-control", "all-daily", "all-weekly", "young-daily"):
        row = _evaluate(capsys, served, name)
        policy = Policy.from_json(served["files"][name].read_text())
        for metric, entry in row["metrics"].items():
            rows = kept if metric == "converted" else np.ones(N_LIVE, dtype=bool)
            truth = _true_value(policy, live, metric, rows)
            for estimator in ("ips", "snips"):
                e = entry[estimator]
                z = abs(e["value"] - truth) / e["se"]
                worst = max(worst, z)
                assert z < 3, (name, metric, estimator, e, truth)
                if metric == "sessions":  # the primary: its 95% interval covers the truth
                    assert e["ci_low"] <= truth <= e["ci_high"], (name, estimator, e, truth)
            # the lift over what was served, against the true lift on the same rows
            served_mean = float(pd.Series(realised(live, served["arms"])[metric])[rows].mean())
            lift = entry["snips_lift"]
            assert abs(lift["value"] - (truth - served_mean)) < 3 * lift["se"], (name, metric, lift)
    assert worst > 0.05  # the estimates are estimates, not the truth copied


def test_the_interval_is_narrow_enough_to_tell_a_wrong_value(capsys, served):
    # all-daily's true sessions value is far outside all-control's interval, and the reverse
    live, everyone = served["live"], np.ones(N_LIVE, dtype=bool)
    for a, b in (("all-control", "all-daily"), ("all-daily", "all-control")):
        wrong = _true_value(Policy.from_json(served["files"][b].read_text()), live, "sessions", everyone)
        for estimator in ("ips", "snips"):
            e = _evaluate(capsys, served, a)["metrics"]["sessions"][estimator]
            assert not e["ci_low"] <= wrong <= e["ci_high"], (a, b, estimator, e, wrong)


def test_the_served_policy_values_at_its_observed_mean(capsys, served):
    row = _evaluate(capsys, served, served["policy"].name)
    logged = pd.read_parquet(served["base"] / "logged.parquet")
    assert row["diagnostics"]["max_weight"] == pytest.approx(1.0)  # the candidate is the logger: every weight is 1
    for metric, entry in row["metrics"].items():
        observed = logged[metric].dropna()
        assert entry["logged"]["value"] == pytest.approx(observed.mean(), rel=1e-12)
        assert entry["ips"]["value"] == pytest.approx(observed.mean(), rel=1e-12)
        assert entry["snips"]["value"] == pytest.approx(observed.mean(), rel=1e-12)
        assert entry["n"] == len(observed) and entry["missing"] == logged[metric].isna().sum()
    assert row["metrics"]["converted"]["missing"] == served["dropped"].sum() > 0
    assert row["metrics"]["sessions"]["missing"] == 0


def test_csv_and_parquet_logs_give_the_same_estimates(capsys, served):
    a, b = _evaluate(capsys, served, "young-daily", "parquet"), _evaluate(capsys, served, "young-daily", "csv")
    for metric in a["metrics"]:
        for estimator in ("ips", "snips", "logged"):
            assert a["metrics"][metric][estimator]["value"] == pytest.approx(b["metrics"][metric][estimator]["value"],
                                                                             rel=1e-9)


def test_the_text_report_shows_estimates_served_mean_and_diagnostics(capsys, served):
    code, out, err = _cli(capsys, served["home"], "evaluate", NAME, served["files"]["all-daily"], "--logged",
                          served["base"] / "logged.parquet")
    assert code == 0, err
    assert f"on {N_LIVE:,} logged decisions of {NAME}" in out
    assert "IPS [95% CI]" in out and "SNIPS [95% CI]" in out and "served (observed mean)" in out
    assert f"converted {served['dropped'].sum():,}" in out  # rows left out for want of an outcome
    assert "effective sample size" in out and "never picks the logged arm" in out


def test_the_exported_file_has_a_row_per_decision_with_features_and_outcomes(served):
    logged = pd.read_parquet(served["base"] / "logged.parquet")
    live = served["live"]
    assert list(logged.columns[:7]) == ["decision_id", "decided_at", "unit", "policy", "version", "arm", "propensity"]
    assert set(live.truth.feature_names) <= set(logged.columns)
    assert len(logged) == N_LIVE and logged["decision_id"].is_unique
    assert list(logged["unit"]) == list(live.data["user_id"])
    assert list(logged["arm"]) == list(served["arms"])
    np.testing.assert_array_equal(logged["age"].to_numpy(), live.data["age"].to_numpy())
    assert logged["platform"].isna().sum() == live.data["platform"].isna().sum() > 0
    truth = realised(live, served["arms"])
    np.testing.assert_array_equal(logged["sessions"].to_numpy(), truth["sessions"].to_numpy())
    assert logged["decided_at"].dt.tz is not None


def test_a_logged_arm_the_policy_lacks_is_refused(capsys, served, tmp_path):
    two = tmp_path / "two.json"
    two.write_text(constant("daily", ["control", "daily"], name="two-arms").to_json(), encoding="utf-8")
    code, _out, err = _cli(capsys, served["home"], "evaluate", NAME, two, "--logged", served["base"] / "logged.parquet")
    assert code == 2
    assert "error: the logged decisions chose arm 'weekly', which policy 'two-arms' does not have" in err
    assert "hint: " in err


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop(columns="propensity"), "has no 'propensity' column: it is not a logged-feedback file"),
    (lambda t: t.drop(columns=["sessions", "converted", "unsubscribes"]), "has no column for a metric of 'exp'"),
    (lambda t: t.assign(propensity=t["propensity"].where(t.index != 4, 0.0)), "not probabilities in (0, 1]"),
    (lambda t: t.drop(columns="age"), "feature column 'age' is missing"),
    (lambda t: t.head(1), "has 1 rows; off-policy estimates need at least 2"),
])
def test_a_bad_logged_file_is_refused(capsys, served, tmp_path, change, message):
    path = tmp_path / "bad.csv"
    change(pd.read_parquet(served["base"] / "logged.parquet").head(50)).to_csv(path, index=False)
    # the young-daily tree reads age, so a file without that column cannot value it
    code, _out, err = _cli(capsys, served["home"], "evaluate", NAME, served["files"]["young-daily"], "--logged", path)
    assert code == 2 and message in err and "hint: " in err, err


def test_fit_and_logged_exclude_each_other(capsys, served):
    code, _out, err = _cli(capsys, served["home"], "evaluate", NAME, served["files"]["all-daily"], "--logged",
                           served["base"] / "logged.parquet", "--fit", "f1")
    assert code == 2 and "--fit and --logged exclude each other" in err


# -- the join rule, on a handful of decisions ----------------------------------------------------------------------


def _decision(unit: str, arm: str, *, version: int = 1, policy: str = "tree", minute: int = 0, **features) -> dict:
    return {"decision_id": f"{unit}{version}{minute}".ljust(32, "0"),
            "decided_at": datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=minute), "experiment": NAME,
            "policy": policy, "version": version, "unit": unit, "arm": arm, "propensity": 0.8,
            "features": {"age": 31, "country": "DE", "platform": None, **features}}


def _log(home, decisions: list[dict], outcomes: list[tuple[str, str, float]]) -> None:
    with Workspace(home, create=False) as ws:
        ws.append_decisions(decisions)
        for record in outcomes:  # one call each: later calls are recorded later
            ws.put_outcomes(NAME, [record])


def test_latest_outcome_wins_and_repeated_decisions_collapse(run, ws_home, tmp_path):
    _log(ws_home, [
        _decision("a", "daily", minute=0), _decision("a", "daily", minute=5),  # a repeat: same version, same arm
        _decision("b", "weekly", minute=1), _decision("b", "control", minute=6, age=70),  # features changed
        _decision("c", "control", minute=2), _decision("c", "daily", version=2, minute=7),  # two versions
        _decision("d", "daily", minute=3),  # never reports
        _decision("x", "daily", minute=4, policy="other"),
    ], [("a", "sessions", 1.0), ("b", "sessions", 2.0), ("a", "sessions", 3.0), ("c", "converted", 1.0),
        ("z", "sessions", 9.0), ("a", "converted", 0.0)])
    r = run("decisions", NAME, "--out", tmp_path / "logged.csv")
    assert r.code == 0, r
    got = pd.read_csv(tmp_path / "logged.csv", dtype={"unit": str}).set_index(["unit", "version"])
    assert sorted(got.index) == [("a", 1), ("b", 1), ("c", 1), ("c", 2), ("d", 1), ("x", 1)]
    assert got.loc[("a", 1), "sessions"] == 3.0  # recorded last
    assert got.loc[("a", 1), "converted"] == 0.0
    assert got.loc[("b", 1), "arm"] == "weekly" and got.loc[("b", 1), "age"] == 31  # the first decision
    assert got.loc[("c", 1), "converted"] == got.loc[("c", 2), "converted"] == 1.0  # a unit's outcome, both versions
    assert np.isnan(got.loc[("d", 1), "sessions"]) and np.isnan(got["unsubscribes"]).all()
    assert got.loc[("a", 1), "decision_id"] == "a10".ljust(32, "0")
    out = r.out
    assert f"wrote 6 logged decisions of {NAME}" in out
    assert "with an outcome: sessions 2, converted 3, unsubscribes 0" in out
    assert "policies: other v1 (1), tree v1 (4), tree v2 (1)" in out
    assert "no outcome yet (empty cells): sessions 4, converted 3, unsubscribes 6" in out
    assert "2 repeated decisions of a unit by the same policy version collapsed into its first (1 units got another arm" in out
    assert "1 outcomes superseded" in out
    assert "1 units were decided by more than one policy version" in out
    assert "1 units with outcomes have no decision here" in out


def test_resending_outcomes_changes_nothing(run, ws_home, tmp_path):
    _log(ws_home, [_decision("a", "daily"), _decision("b", "weekly")], [])
    outcomes = tmp_path / "outcomes.csv"
    pd.DataFrame({"unit": ["a", "b"], "sessions": [1.5, 2.5]}).to_csv(outcomes, index=False)
    for _ in range(2):
        assert run("outcomes", NAME, outcomes).code == 0
    assert run("decisions", NAME, "--out", tmp_path / "twice.parquet").code == 0
    twice = pd.read_parquet(tmp_path / "twice.parquet")
    assert twice["sessions"].tolist() == [1.5, 2.5]


def test_filters_by_policy_and_version(run, ws_home, tmp_path):
    _log(ws_home, [_decision("a", "daily"), _decision("a", "weekly", version=2), _decision("b", "daily", policy="other")], [])
    r = run("decisions", NAME, "--out", tmp_path / "v2.csv", "--policy", "tree", "--version", 2, "--json")
    assert r.code == 0, r
    assert json.loads(r.out)["versions"] == {"tree v2": 1}
    assert pd.read_csv(tmp_path / "v2.csv")["arm"].tolist() == ["weekly"]
    r = run("decisions", NAME, "--out", tmp_path / "none.csv", "--policy", "tree", "--version", 3)
    assert r.code == 2 and "no decisions of experiment 'exp' by policy 'tree' v3 are logged" in r.err
    assert "logged: other v1 (1 decisions), tree v1 (1 decisions), tree v2 (1 decisions)" in r.err
    assert not (tmp_path / "none.csv").exists()
    r = run("decisions", NAME, "--out", tmp_path / "x.csv", "--version", 2)
    assert r.code == 2 and "--version needs --policy" in r.err


def test_logged_features_become_typed_columns(run, ws_home, tmp_path):
    _log(ws_home, [_decision("a", "daily", age="31", country=7, campaign="spring"),
                   _decision("b", "daily", age=40.0, country="DE", platform="ios", campaign=None)], [])
    assert run("decisions", NAME, "--out", tmp_path / "f.parquet").code == 0
    got = pd.read_parquet(tmp_path / "f.parquet")
    assert got["age"].isna().tolist() == [True, False]  # text in a numeric feature reads as missing, as served
    assert got["country"].tolist() == ["7", "DE"]
    assert got["platform"].isna().tolist() == [True, False]
    assert got["campaign"].tolist()[0] == "spring"  # a key outside the spec is kept
    assert got["x0"].isna().all()  # a spec feature no request sent


def test_no_decisions_or_no_experiment_is_a_clear_error(run, ws_home, tmp_path):
    r = run("decisions", NAME, "--out", tmp_path / "a.csv")
    assert r.code == 2 and "no decisions of experiment 'exp' are logged" in r.err and "serve one first" in r.err
    r = run("decisions", "nope", "--out", tmp_path / "a.csv")
    assert r.code == 2 and "no experiment named 'nope'" in r.err
    r = run("decisions", NAME, "--out", tmp_path / "a.json")
    assert r.code == 2 and "neither .csv nor .parquet" in r.err
