"""Retraining from the decision log: the dataset it builds (logged propensities, first decisions, dropped units) and its
average effects against the simulator's truth."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pex.errors import DataError, NotFoundError
from pex.experiment.data import load_dataset
from pex.experiment.simulate import simulate
from pex.experiment.spec import load_spec
from pex.policy.base import Policy
from pex.policy.constant import constant_policy
from pex.services.experiments import analyze_stored
from pex.services.retrain import LOG_SOURCE, RENAMED, log_dataset
from pex.services.serving import PolicyServer
from pex.store.workspace import Workspace

NAME = "cadence"
POLICY = "cadence-daily"


def serve_log(ws: Workspace, n: int, *, seed: int = 1, exploration: float = 0.2, prefix: str = "s",
              at: datetime | None = None, scenario: str = "notification_cadence", arm: str = "daily",
              name: str = POLICY, tree: dict | None = None):
    """Serve ``n`` fresh simulated units with an all-``arm`` policy exploring ``exploration`` of the time, logging each
    decision as the PolicyServer does and reporting each unit's outcome under the arm it got; returns the truth."""
    fresh = simulate(n, scenario=scenario, seed=seed)
    policy = constant_policy(fresh.arms, arm, exploration=exploration, name=name).replace(experiment=NAME)
    if tree is not None:  # served arms (and so propensities) that depend on a feature the effects depend on
        policy = Policy.from_document({**policy.to_document(), "kind": "tree", "tree": tree})
    metrics = list(fresh.metrics)
    features = [c for c in fresh.data.columns if c not in ("user_id", "arm", *metrics)]
    units = [f"{prefix}{i}" for i in range(n)]
    arms, propensity = policy.decide(fresh.data[features], np.array(units))
    at = at or datetime.now(UTC)
    records = [{f: (None if isinstance(v, float) and math.isnan(v) else v) for f, v in r.items()}
               for r in fresh.data[features].to_dict("records")]
    ws.append_decisions([PolicyServer._row(policy, f"d-{prefix}{i}", at + timedelta(microseconds=i), unit, str(arm),
                                           float(p), record, None)
                         for i, (unit, arm, p, record) in enumerate(zip(units, arms, propensity, records))])
    # each unit's outcome is its potential outcome under the arm it was served
    index = {a: k for k, a in enumerate(fresh.arms)}
    chosen = np.array([index[a] for a in arms])
    for m in metrics:
        served = np.choose(chosen, [fresh.truth.outcomes[m][a] for a in fresh.arms])
        ws.put_outcomes(NAME, [(u, m, float(v)) for u, v in zip(units, served)])
    return fresh, arms, propensity


@pytest.fixture
def ws(tmp_path, home):
    """A workspace (at the CLI's ``home``) holding a small randomized experiment (the original data)."""
    spec_path = simulate(600, scenario="notification_cadence", seed=0).write(tmp_path / "exp", NAME)
    with Workspace(home, create=True) as ws:
        ws.put_dataset(load_dataset(load_spec(spec_path)), source="cadence.csv")
        yield ws


# new users (about 18%) get daily, the rest control, each 80% of the time: daily's effect on sessions is larger for new
# users, so the served arms' plain difference overstates it; the logged propensities are what correct that
TREE = {"feature": "tenure_days", "op": "<=", "value": 60, "left": {"arm": "daily"}, "right": {"arm": "control"}}


def test_log_dataset_ate_within_3_se_of_truth(ws):
    fresh, _arms, propensity = serve_log(ws, 4000, tree=TREE)
    built = log_dataset(ws, NAME, policy=POLICY)
    data = built.dataset
    assert data.spec.propensity == "propensity" and data.propensity_source == "column"
    by_unit = dict(zip(data.frame["user_id"], data.frame["propensity"]))
    assert all(by_unit[f"s{i}"] == pytest.approx(p) for i, p in enumerate(propensity))  # the logged ones, as served
    assert set(np.round(propensity, 6)) == {round(0.2 / 3, 6), round(0.8 + 0.2 / 3, 6)}

    dv = ws.put_dataset(data, source=built.source)
    assert dv.version == 2 and dv.source.startswith(LOG_SOURCE)
    assert ws.load_dataset(NAME, 1)[0].n_units == 600  # the original version is untouched
    analysis, _ = analyze_stored(ws, NAME)
    assert analysis.n_units == data.n_units == 4000
    for e in analysis.effects:
        truth = fresh.truth.ate(e.metric, e.arm)
        assert e.method.startswith("weighted")
        assert abs(e.estimate - truth) < 3 * e.se, (e.metric, e.arm, e.estimate, truth, e.se)
    assert {e.arm for e in analysis.effects} == {"daily", "weekly"}
    frame, daily = data.frame, next(e for e in analysis.effects if (e.metric, e.arm) == ("sessions", "daily"))
    plain = frame.loc[frame["arm"] == "daily", "sessions"].mean() - frame.loc[frame["arm"] == "control", "sessions"].mean()
    assert plain - fresh.truth.ate("sessions", "daily") > 3 * daily.se  # what ignoring the propensities would report


def test_first_decision_per_unit_and_units_without_outcomes(ws):
    serve_log(ws, 300, seed=2, prefix="a", at=datetime(2026, 1, 1, tzinfo=UTC))
    # the same units decided again later by another version: left out, each unit counts once
    later = ws.read_decisions(experiment=NAME).head(50).assign(version=2, decision_id=lambda f: "again-" + f["decision_id"],
                                                              decided_at=datetime(2026, 2, 1, tzinfo=UTC))
    ws.append_decisions(later.to_dict("records"))
    ws.append_decisions([PolicyServer._row(constant_policy(["control", "daily", "weekly"], "daily", 0.2, POLICY)
                                           .replace(experiment=NAME), "late", datetime(2026, 3, 1, tzinfo=UTC), "nobody",
                                           "daily", 0.8 + 0.2 / 3, {}, None)])
    built = log_dataset(ws, NAME, policy=POLICY)
    assert built.counts["repeats"] == 50 and built.counts["dropped_without_outcome"] == 1
    assert built.dataset.n_units == 300 and built.policies == {f"{POLICY} v1": 300}
    assert any("without an outcome" in n for n in built.notes)
    since = log_dataset(ws, NAME, policy=POLICY, since=datetime(2026, 1, 1, 0, 0, 0, 200))
    assert since.dataset.n_units == 100  # decided 1 microsecond apart from midnight: units 200..299


def test_pool_renames_colliding_units(ws):
    serve_log(ws, 200, seed=3, prefix="u0000")  # u0000100..u0000199 are also units of the original data
    built = log_dataset(ws, NAME, policy=POLICY, pool=True)
    frame = built.dataset.frame
    original = ws.load_dataset(NAME, 1)[0].frame
    assert built.counts["pooled"] == 600 and len(frame) == 800 and frame["user_id"].is_unique
    renamed = [u for u in frame["user_id"] if u.endswith(RENAMED)]
    assert len(renamed) == built.counts["renamed"] == 100
    pooled = frame.set_index("user_id").loc[original["user_id"], "propensity"].to_numpy()
    np.testing.assert_allclose(pooled, original["arm"].map({"control": 0.34, "daily": 0.33, "weekly": 0.33}))


@pytest.mark.parametrize(("propensity", "match"), [(0.0, "propensity outside \\(0, 1\\]"), (1.5, "outside \\(0, 1\\]")])
def test_bad_logged_propensity_is_refused(ws, propensity, match):
    serve_log(ws, 100, seed=4)
    bad = ws.read_decisions(experiment=NAME).head(1).assign(propensity=propensity, decision_id="bad",
                                                           unit="bad-unit", decided_at=datetime(2020, 1, 1, tzinfo=UTC))
    ws.append_decisions(bad.to_dict("records"))
    with pytest.raises(DataError, match=match) as err:
        log_dataset(ws, NAME, policy=POLICY)
    assert "bad-unit" in err.value.message and "probability the policy gave" in err.value.hint
    assert [v.version for v in ws.list_dataset_versions(NAME)] == [1]  # nothing stored


def test_unknown_arm_and_no_control_are_refused(ws):
    serve_log(ws, 100, seed=5, exploration=0.0)
    with pytest.raises(DataError, match="control arm 'control'"):
        log_dataset(ws, NAME, policy=POLICY)
    odd = ws.read_decisions(experiment=NAME).head(1).assign(arm="hourly", decision_id="odd", unit="odd")
    ws.append_decisions(odd.to_dict("records"))
    with pytest.raises(DataError, match="arms the experiment does not have: 'hourly'"):
        log_dataset(ws, NAME, policy=POLICY)


def test_no_decisions_logged(ws):
    with pytest.raises(NotFoundError, match="no decisions of experiment 'cadence' are logged"):
        log_dataset(ws, NAME)


def test_cli_refuses_bad_input(ws, run):
    serve_log(ws, 100, seed=6)
    bad = ws.read_decisions(experiment=NAME).head(1).assign(propensity=2.0, decision_id="bad", unit="bad-unit")
    ws.append_decisions(bad.to_dict("records"))
    out = run("retrain", NAME, "--policy", POLICY)
    assert out.code == 2 and "propensity outside (0, 1]" in out.err and "bad-unit" in out.err
    out = run("retrain", NAME, "--canary", "0")
    assert out.code == 2 and "not a percentage" in out.err
    out = run("retrain", NAME, "--ramp", "5,lots")
    assert out.code == 2 and "comma-separated list of percentages" in out.err
    assert [v.version for v in ws.list_dataset_versions(NAME)] == [1]
