"""Drift against a training profile, on simulated units whose shifts are known: what moved flags, nothing else does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pex.experiment.simulate import simulate
from pex.monitor.drift import EPSILON, MIN_DECISIONS, TOO_FEW, profile, psi
from pex.monitor.drift import drift as measure
from pex.monitor.staleness import staleness

FEATURES = ["age", "tenure_days", "country", "platform", "x0", "x1", "x2"]
KINDS = {f: ("categorical" if f in ("country", "platform") else "numeric") for f in FEATURES}


@pytest.fixture(scope="module")
def trained() -> dict:
    frame = simulate(4_000, seed=1).data
    return profile(frame, FEATURES, KINDS, effects={("sessions", "daily"): np.linspace(-1, 1, 100)})


def served(seed: int = 2, n: int = 3_000) -> pd.DataFrame:
    """Fresh units of the same population (another seed), as the decision log holds them."""
    return simulate(n, seed=seed).data[FEATURES].copy()


def by_feature(result: dict) -> dict:
    return {row["feature"]: row for row in result["features"]}


def test_the_profile_keeps_decile_bins_category_shares_missing_rates_and_effect_deciles(trained):
    age = trained["features"]["age"]
    assert len(age["edges"]) <= 9 and age["edges"] == sorted(age["edges"])
    assert sum(age["shares"]) == pytest.approx(1.0) and len(age["shares"]) == len(age["edges"]) + 1
    assert age["missing_rate"] == pytest.approx(0.05, abs=0.015)  # the simulator's missing rate
    platform = trained["features"]["platform"]
    assert sum(platform["categories"].values()) + platform["other"] == pytest.approx(1.0)
    assert platform["other"] == 0.0
    assert trained["effects"][0]["deciles"][4] == pytest.approx(0.0, abs=0.02)


def test_the_same_population_does_not_drift(trained):
    result = measure(trained, served())
    assert result["judged"] and result["drifted"] == []
    for row in result["features"]:
        assert row["psi"] < 0.02, row  # sampling noise of 3,000 units over 10 bins
        assert row["flags"] == [] and row["verdict"] == "ok"
    # a sample against its own profile is as close as binning allows
    own = simulate(4_000, seed=1).data
    assert max(r["psi"] for r in measure(trained, own)["features"]) < 1e-9


def test_a_shift_missing_values_and_a_new_category_flag_exactly_those_features(trained):
    frame = served()
    frame["x0"] = frame["x0"] + 1.0  # mean + 1 sd (x0 is standard normal)
    frame.loc[frame.sample(frac=0.30, random_state=0).index, "tenure_days"] = np.nan
    frame.loc[frame.sample(frac=0.05, random_state=1).index, "country"] = "atlantis"
    rows = by_feature(measure(trained, frame))
    assert rows["x0"]["flags"] == ["psi"] and rows["x0"]["psi"] > 0.5
    assert rows["tenure_days"]["flags"] == ["missing"]
    assert rows["tenure_days"]["missing_rate"] == pytest.approx(0.30, abs=0.01)
    assert "unseen" in rows["country"]["flags"] and rows["country"]["unseen_rate"] == pytest.approx(0.05, abs=0.01)
    assert {f for f, r in rows.items() if r["drifted"]} == {"x0", "tenure_days", "country"}


def test_a_categorical_shift_flags_by_jensen_shannon_and_an_absent_column_is_all_missing(trained):
    frame = served().drop(columns=["age"])
    frame["platform"] = "web"
    rows = by_feature(measure(trained, frame))
    assert "js" in rows["platform"]["flags"] and rows["platform"]["js"] > 0.3
    assert rows["age"]["missing_rate"] == 1.0 and rows["age"]["flags"] == ["missing"] and rows["age"]["psi"] is None
    assert set(rows["platform"]["empty_bins"]) == set(trained["features"]["platform"]["categories"]) - {"web"} | {"other"}


def test_thresholds_come_from_the_spec_and_few_decisions_are_never_judged(trained):
    frame = served()
    frame["x0"] = frame["x0"] + 0.3  # PSI about 0.09: under the default 0.2
    assert by_feature(measure(trained, frame))["x0"]["flags"] == []
    assert by_feature(measure(trained, frame, {"psi": 0.05}))["x0"]["flags"] == ["psi"]
    few = served(n=MIN_DECISIONS - 1)
    few["x0"] = few["x0"] + 3
    result = measure(trained, few)
    assert not result["judged"] and result["drifted"] == []
    assert {r["verdict"] for r in result["features"]} == {TOO_FEW}


def test_psi_gives_empty_bins_epsilon_and_says_which():
    value, empty = psi(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.25, 0.25]))
    assert empty == [2]
    assert value == pytest.approx((0.25 - 0.5) * np.log(0.5) + (0.25 - EPSILON) * np.log(0.25 / EPSILON))


def test_staleness_by_the_policy_or_its_data():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    fresh = staleness(now - timedelta(days=3), now - timedelta(days=10), 30, now=now)
    assert fresh == {"policy_age_days": 3.0, "data_age_days": 10.0, "max_age_days": 30, "stale": False, "why": []}
    old_data = staleness(now - timedelta(days=3), (now - timedelta(days=45)).replace(tzinfo=None), 30, now=now)
    assert old_data["stale"] and old_data["why"] == ["data"]
    assert staleness(now - timedelta(days=31), None, 30, now=now)["why"] == ["policy"]


def test_features_the_log_does_not_hold_are_listed_unjudged(trained):
    frame = served()[["x0"]]
    frame["x0"] = frame["x0"] + 1.0
    rows = by_feature(measure(trained, frame, logged={"x0"}))
    assert rows["x0"]["flags"] == ["psi"]
    assert rows["age"]["verdict"] == "not logged" and rows["age"]["missing_rate"] is None and not rows["age"]["drifted"]


SPEC = """name = "exp"\ndata = "exp.csv"\nunit = "user_id"\narm = "arm"\ncontrol = "control"\n
[metrics.sessions]\ngoal = "increase"\n"""


def _spec(tmp_path, extra: str):
    from pex.experiment.spec import load_spec

    (tmp_path / "exp.csv").write_text("user_id,arm,sessions\n")
    (tmp_path / "exp.toml").write_text(extra + "\n" + SPEC)
    return load_spec(tmp_path / "exp.toml")


def test_the_spec_carries_max_age_oncall_and_thresholds_and_keeps_its_canonical_form(tmp_path):
    from pex.experiment.spec import MonitorThresholds, spec_from_dict

    plain = _spec(tmp_path, "")
    assert plain.max_age_days == 30 and plain.oncall is None and plain.monitor == MonitorThresholds()
    assert not {"max_age_days", "oncall", "monitor"} & set(plain.to_dict())  # old specs hash as before
    spec = _spec(tmp_path, 'max_age_days = 7\noncall = "pager-growth"\nmonitor = {psi = 0.1, unseen = 0.02}')
    assert (spec.max_age_days, spec.oncall, spec.monitor.psi, spec.monitor.unseen, spec.monitor.js) == (7, "pager-growth", 0.1, 0.02, 0.1)
    assert spec.to_dict()["monitor"] == {"psi": 0.1, "unseen": 0.02}
    assert spec_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(("extra", "match"), [
    ("max_age_days = 0", "max_age_days"),
    ("max_age_days = 2.5", "max_age_days"),
    ('max_age_days = "30"', "max_age_days"),
    ("oncall = 3", "oncall"),
    ("monitor = {psi = -1}", "monitor.psi"),
    ("monitor = {js = 1.5}", "monitor.js"),
    ('monitor = {missing_increase = "5%"}', "monitor.missing_increase"),
    ("monitor = {psl = 0.2}", "monitor.psl"),
    ("monitor = 0.2", "monitor"),
])
def test_bad_monitoring_settings_name_their_field(tmp_path, extra, match):
    from pex.errors import SpecError

    with pytest.raises(SpecError, match=match):
        _spec(tmp_path, extra)
