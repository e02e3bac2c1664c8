"""Average effects, SRM and guardrails against statsmodels, closed forms and the simulated truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from pex.data import validate
from pex.effects import analyze, average_effects, guardrail_verdicts, srm_test, srm_test_counts
from pex.simulate import METRICS, population_ate, simulate
from pex.spec import load_spec


@pytest.fixture(scope="module")
def dataset(sim_dir):
    spec = load_spec(sim_dir / "exp.toml")
    return validate(pd.read_csv(spec.data, dtype={"user_id": "string", "arm": "string"}), spec)


@pytest.fixture(scope="module")
def effects(dataset):
    return {(e.metric, e.arm): e for e in average_effects(dataset)}


def _pair(frame, arm):
    return frame[frame["arm"].isin(["control", arm])].assign(t=lambda d: (d["arm"] == arm).astype(float))


@pytest.mark.parametrize("metric", ["converted", "unsubscribes"])
@pytest.mark.parametrize("arm", ["daily", "weekly"])
def test_plain_effects_equal_statsmodels_ols_hc2(dataset, effects, metric, arm):
    d = _pair(dataset.frame, arm)
    ref = smf.ols(f"{metric} ~ t", data=d).fit(cov_type="HC2", use_t=True)
    e = effects[(metric, arm)]
    assert e.estimate == pytest.approx(ref.params["t"], abs=1e-8)
    assert e.se == pytest.approx(ref.bse["t"], abs=1e-8)
    lo, hi = ref.conf_int().loc["t"]
    assert (e.ci_low, e.ci_high) == pytest.approx((lo, hi), abs=1e-8)
    assert e.p_value == pytest.approx(ref.pvalues["t"], abs=1e-8)
    assert not e.cuped and e.variance_reduction is None


@pytest.mark.parametrize("arm", ["daily", "weekly"])
def test_plain_effect_is_the_neyman_difference_in_means(dataset, effects, arm):
    # HC2 in a two-group regression is exactly the unbiased Neyman variance.
    d = dataset.frame
    y1 = d.loc[d["arm"] == arm, "converted"]
    y0 = d.loc[d["arm"] == "control", "converted"]
    e = effects[("converted", arm)]
    assert e.estimate == pytest.approx(y1.mean() - y0.mean(), abs=1e-12)
    assert e.se == pytest.approx(np.sqrt(y1.var() / len(y1) + y0.var() / len(y0)), rel=1e-9)
    assert (e.control_mean, e.arm_mean) == pytest.approx((y0.mean(), y1.mean()))


@pytest.mark.parametrize("arm", ["daily", "weekly"])
def test_cuped_effect_equals_statsmodels_interacted_regression(dataset, effects, arm):
    d = _pair(dataset.frame, arm)
    d = d.assign(xc=d["sessions_pre"] - d["sessions_pre"].mean())
    ref = smf.ols("sessions ~ t + xc + t:xc", data=d).fit(cov_type="HC2", use_t=True)
    plain = smf.ols("sessions ~ t", data=d).fit(cov_type="HC2", use_t=True)
    e = effects[("sessions", arm)]
    assert e.cuped
    assert e.estimate == pytest.approx(ref.params["t"], abs=1e-8)
    assert (e.ci_low, e.ci_high) == pytest.approx(tuple(ref.conf_int().loc["t"]), abs=1e-8)
    assert e.variance_reduction == pytest.approx(1 - ref.bse["t"] ** 2 / plain.bse["t"] ** 2, abs=1e-8)
    # sessions_pre is a strong predictor in the simulation: CUPED must cut variance a lot
    assert e.variance_reduction > 0.4


def test_relative_lift_delta_method(dataset, effects):
    d = _pair(dataset.frame, "daily")
    ref = smf.ols("converted ~ t", data=d).fit(cov_type="HC2", use_t=True)
    a, b = ref.params["Intercept"], ref.params["t"]
    cov = ref.cov_params().loc[["Intercept", "t"], ["Intercept", "t"]].to_numpy()
    g = np.array([-b / a**2, 1 / a])
    e = effects[("converted", "daily")]
    assert e.relative == pytest.approx(b / a, abs=1e-10)
    assert e.relative_se == pytest.approx(np.sqrt(g @ cov @ g), abs=1e-10)
    assert e.relative_ci_low < e.relative < e.relative_ci_high


def test_holm_adjustment(effects):
    from statsmodels.stats.multitest import multipletests

    es = list(effects.values())
    expected = multipletests([e.p_value for e in es], method="holm")[1]
    assert [e.p_holm for e in es] == pytest.approx(list(expected))
    assert all(e.p_holm >= e.p_value for e in es)


def test_estimates_recover_the_true_average_effects(sim, effects):
    # Population truth by Monte Carlo; the estimate must lie within 4 standard errors.
    for (metric, arm), e in effects.items():
        truth = population_ate("notification_cadence", metric, arm, n=400_000)
        assert abs(e.estimate - truth) < 4 * e.se, (metric, arm, e.estimate, truth, e.se)


def test_srm_flags_52_48_at_20000_but_not_50_50():
    lopsided = srm_test_counts({"control": 10_400, "treatment": 9_600}, {"control": 0.5, "treatment": 0.5})
    even = srm_test_counts({"control": 10_000, "treatment": 10_000}, {"control": 0.5, "treatment": 0.5})
    assert not lopsided.ok and lopsided.p_value < 0.001
    assert lopsided.chi2 == pytest.approx(32.0)  # (400^2/10000) * 2
    assert even.ok and even.p_value == pytest.approx(1.0)
    assert lopsided.p_value == pytest.approx(stats.chi2.sf(32.0, 1))


def test_srm_on_a_dataset_uses_the_allocation(sim_dir):
    spec = load_spec(sim_dir / "exp.toml")
    frame = simulate(20_000, seed=3, allocation={"control": 0.52, "daily": 0.24, "weekly": 0.24}).data
    bad = srm_test(validate(frame, spec))  # spec plans 34/33/33
    assert not bad.ok and bad.basis == "allocation"
    good = srm_test(validate(simulate(20_000, seed=3).data, spec))
    assert good.ok


def test_srm_without_allocation_is_against_an_equal_split(sim_dir):
    text = (sim_dir / "exp.toml").read_text()
    start = text.index("[allocation]")
    end = text.index("[metrics.")
    spec_path = sim_dir.parent / "noalloc.toml"
    spec_path.write_text(text[:start] + text[end:].replace('data = "', 'data = "'), encoding="utf-8")
    spec_path.write_text(spec_path.read_text().replace('data = "exp.csv"', f'data = "{sim_dir.name}/exp.csv"'))
    spec = load_spec(spec_path)
    ds = validate(simulate(9_000, seed=5, allocation={"control": 1 / 3, "daily": 1 / 3, "weekly": 1 / 3}).data, spec)
    result = srm_test(ds)
    assert result.basis.startswith("equal split")
    assert result.expected_shares == pytest.approx({a: 1 / 3 for a in ("control", "daily", "weekly")})
    assert ds.propensity_source == "observed"


def test_guardrail_verdicts_follow_the_one_sided_bounds(dataset, effects):
    verdicts = {(g.metric, g.arm): g for g in guardrail_verdicts(dataset, list(effects.values()))}
    assert set(verdicts) == {("unsubscribes", "daily"), ("unsubscribes", "weekly")}
    daily = verdicts[("unsubscribes", "daily")]
    # daily raises unsubscribes by ~40% in the simulation: far beyond max_harm = 5%
    assert daily.verdict == "fail" and daily.harm_lower > daily.max_harm
    for g in verdicts.values():
        e = effects[(g.metric, g.arm)]
        assert g.harm == pytest.approx(e.relative)  # goal = decrease: harm is the increase
        z = stats.norm.ppf(0.95)
        assert g.harm_upper == pytest.approx(g.harm + z * e.relative_se)
        expected = "pass" if g.harm_upper < g.max_harm else "fail" if g.harm_lower > g.max_harm else "inconclusive"
        assert g.verdict == expected


def test_guardrail_passes_when_there_is_no_harm(exp_dir):
    spec_path = exp_dir / "exp.toml"
    spec_path.write_text(spec_path.read_text().replace("max_harm = 0.05", "max_harm = 0.15"))
    spec = load_spec(spec_path)
    ds = validate(simulate(100_000, scenario="null", seed=8).data, spec)
    a = analyze(ds)
    # no true effect, a 15% tolerance and a relative standard error near 4.5%:
    # the one-sided upper bound of harm lies inside the tolerance
    assert {g.verdict for g in a.guardrails} == {"pass"}
    assert all(g.p_value < 0.05 for g in a.guardrails)
    assert a.srm.ok


def test_analysis_to_dict_is_complete(dataset):
    a = analyze(dataset).to_dict()
    assert {"experiment", "n_units", "arms", "srm", "effects", "guardrails", "dataset"} <= set(a)
    assert {"p_value", "ok"} <= set(a["srm"])
    assert len(a["effects"]) == 2 * len(METRICS)
    for e in a["effects"]:
        assert {"metric", "arm", "estimate", "ci_low", "ci_high", "p_value"} <= set(e)


@pytest.mark.slow
def test_ci_coverage_of_the_true_ate_over_200_replications(sim_dir):
    spec = load_spec(sim_dir / "exp.toml")
    truth = {(m, a): population_ate("notification_cadence", m, a, n=2_000_000)
             for m in METRICS for a in ("daily", "weekly")}
    hits = {k: 0 for k in truth}
    reps = 200
    for seed in range(reps):
        ds = validate(simulate(20_000, seed=10_000 + seed, n_noise=0).data, spec)
        for e in average_effects(ds):
            hits[(e.metric, e.arm)] += e.ci_low <= truth[(e.metric, e.arm)] <= e.ci_high
    per_combo = {k: v / reps for k, v in hits.items()}
    pooled = sum(hits.values()) / (reps * len(hits))
    print(f"coverage pooled {pooled:.3f}; per arm x metric {per_combo}")
    assert 0.93 <= pooled <= 0.97
    # one combination over 200 replications has a binomial sd of 1.5 points
    assert all(0.9 <= c <= 0.99 for c in per_combo.values()), per_combo
