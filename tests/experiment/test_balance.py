"""Covariate balance flags arms that differ from control before treatment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pex.experiment.balance import _smd, covariate_balance, inverse_propensity_weights
from pex.experiment.data import PROPENSITY, validate
from pex.experiment.spec import load_spec


@pytest.fixture
def spec(sim_dir):
    return load_spec(sim_dir / "exp.toml")


def test_randomized_data_is_balanced(spec, sim):
    result = covariate_balance(validate(sim.data, spec))
    assert result.ok, result.flagged
    assert {i.column for i in result.worst} == {*sim.truth.feature_names, "sessions_pre"}
    assert all(abs(i.smd) < 0.1 for i in result.worst)


def test_post_assignment_filter_is_flagged(spec, sim):
    d = sim.data
    # drop young users from 'daily' only, as a broken logging pipeline might
    broken = d[~((d["arm"] == "daily") & (d["age"] < 30))]
    result = covariate_balance(validate(broken, spec))
    assert not result.ok
    top = result.worst[0]
    assert (top.column, top.arm, top.detail) == ("age", "daily", "mean") and top.smd > 0.3


def test_categorical_levels_and_missingness_are_compared(spec, sim):
    d = sim.data.copy()
    daily = (d["arm"] == "daily").to_numpy()
    rng = np.random.default_rng(0)
    d.loc[daily & (rng.uniform(size=len(d)) < 0.5), "country"] = "US"
    d.loc[daily & (rng.uniform(size=len(d)) < 0.3), "age"] = np.nan
    flagged = {i.column: i for i in covariate_balance(validate(d, spec)).flagged}
    assert flagged["country"].detail == "level US" and flagged["country"].arm == "daily"
    assert flagged["age"].detail == "missing" and flagged["age"].smd > 0
    assert "tenure_days" not in flagged


def test_smd_matches_the_textbook_formula(spec, sim):
    ds = validate(sim.data, spec)
    f = ds.frame
    x1 = f.loc[f["arm"] == "weekly", "tenure_days"]
    x0 = f.loc[f["arm"] == "control", "tenure_days"]
    expected = (x1.mean() - x0.mean()) / np.sqrt((x1.var() + x0.var()) / 2)
    from pex.experiment.balance import _smd

    assert _smd(x1.to_numpy(), x0.to_numpy()) == pytest.approx(expected)
    assert pd.notna(expected)


def test_weighted_smd_matches_the_reliability_weighted_formula():
    rng = np.random.default_rng(1)
    x1, x0 = rng.normal(0.3, 1.0, 400), rng.normal(0.0, 1.5, 600)
    w1, w0 = 1 / rng.uniform(0.2, 0.8, 400), 1 / rng.uniform(0.2, 0.8, 600)

    def wvar(x, w):  # unbiased variance with reliability weights (Austin & Stuart 2015)
        m = np.average(x, weights=w)
        return w.sum() / (w.sum() ** 2 - (w**2).sum()) * (w * (x - m) ** 2).sum()

    expected = (np.average(x1, weights=w1) - np.average(x0, weights=w0)) / np.sqrt((wvar(x1, w1) + wvar(x0, w0)) / 2)
    assert _smd(x1, x0, w1, w0) == pytest.approx(expected, rel=1e-12)
    assert _smd(x1, x0, np.ones(400), np.ones(600)) == pytest.approx(_smd(x1, x0), rel=1e-12)


def test_propensities_from_the_allocation_give_no_weights(spec, sim):
    f = validate(sim.data, spec).frame
    assert inverse_propensity_weights(f[PROPENSITY].to_numpy(), f["arm"].to_numpy()) is None
    varied = f[PROPENSITY].to_numpy() * np.where(f["age"] > 40, 1.0, 0.9)
    assert inverse_propensity_weights(varied, f["arm"].to_numpy()) == pytest.approx(1 / varied)
