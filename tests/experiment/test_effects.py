"""Average effects, SRM and guardrails against statsmodels, closed forms and the simulated truth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from pex.experiment.data import validate
from pex.experiment.effects import analyze, average_effects, guardrail_verdicts, srm_test, srm_test_counts
from pex.experiment.simulate import METRICS, simulate
from pex.experiment.spec import load_spec
from pex.experiment.truth import population_ate


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
        # Fieller's test at the limit: the standard error of effect - limit * control mean, over the control mean
        fieller = math.sqrt(e.se**2 + g.limit**2 * e.baseline_se**2 - 2 * g.limit * e.baseline_cov) / e.baseline
        assert g.harm_upper == pytest.approx(g.harm + z * fieller)
        assert fieller == pytest.approx(e.relative_se, rel=0.5)  # the delta method's, evaluated at the estimate instead
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


# -- edge cases ----------------------------------------------------------------------------

def _edge_spec(tmp_path, metric_block: str, pre: bool = False):
    import tomllib

    from pex.experiment.spec import parse_spec

    text = f"""
name = "edge"
data = "edge.csv"
unit = "u"
arm = "arm"
control = "c"
[allocation]
c = 0.5
t = 0.5
{metric_block}
"""
    return parse_spec(tomllib.loads(text), base_dir=tmp_path, require_data=False)


def _edge_frame(control: list[float], treated: list[float], pre: list[float] | None = None) -> pd.DataFrame:
    n0, n1 = len(control), len(treated)
    d = pd.DataFrame({"u": [f"u{i}" for i in range(n0 + n1)], "arm": ["c"] * n0 + ["t"] * n1, "m": control + treated})
    if pre is not None:
        d["m_pre"] = pre
    return d


def test_zero_control_mean_guardrail_falls_back_to_an_absolute_test(tmp_path):
    spec = _edge_spec(tmp_path, '[metrics.m]\ngoal = "decrease"\nrole = "guardrail"\nmax_harm = 0.05\n'
                                '[metrics.k]\ngoal = "increase"\ncolumn = "k"')
    rng = np.random.default_rng(0)
    d = _edge_frame([0.0] * 110, list((rng.uniform(size=110) < 0.2).astype(float))).assign(k=rng.normal(size=220))
    ds = validate(d, spec)
    [g] = guardrail_verdicts(ds, average_effects(ds))
    assert g.basis.startswith("absolute") and g.verdict == "fail"
    assert g.harm == pytest.approx(d.loc[d["arm"] == "t", "m"].mean())
    e = next(e for e in average_effects(ds) if e.metric == "m")
    assert np.isnan(e.relative)


def test_negative_baseline_keeps_the_direction_of_change(tmp_path):
    spec = _edge_spec(tmp_path, '[metrics.m]\ngoal = "increase"\nrole = "guardrail"\nmax_harm = 0.05\n'
                                '[metrics.k]\ngoal = "increase"\ncolumn = "k"')
    rng = np.random.default_rng(1)
    d = _edge_frame(list(rng.normal(-10, 1, 500)), list(rng.normal(-8, 1, 500))).assign(k=rng.normal(size=1000))
    ds = validate(d, spec)
    e = next(e for e in average_effects(ds) if e.metric == "m")
    assert e.relative == pytest.approx(0.2, abs=0.03)  # -10 -> -8 is up by a fifth of the baseline's size
    [g] = guardrail_verdicts(ds, average_effects(ds))
    assert g.verdict == "pass" and g.harm < 0


def test_constant_metric_has_no_effect_and_no_spurious_p_value(tmp_path):
    spec = _edge_spec(tmp_path, '[metrics.m]\ngoal = "increase"')
    ds = validate(_edge_frame([0.3] * 50, [0.3] * 50), spec)
    [e] = average_effects(ds)
    assert (e.estimate, e.se, e.p_value, e.relative) == (0.0, 0.0, 1.0, 0.0)


def test_tiny_arms_give_no_test_rather_than_a_fake_one(tmp_path):
    spec = _edge_spec(tmp_path, '[metrics.m]\ngoal = "increase"\npre = "m_pre"')
    ds = validate(_edge_frame([1.0, 2.0], [3.0, 5.0], pre=[0.5, 1.0, 2.0, 1.5]), spec)
    [e] = average_effects(ds)
    assert not e.cuped  # 2 + 2 units cannot identify interacted slopes
    assert e.estimate == pytest.approx(2.5)


def test_pre_period_missing_in_one_arm_only(tmp_path):
    spec = _edge_spec(tmp_path, '[metrics.m]\ngoal = "increase"\npre = "m_pre"')
    rng = np.random.default_rng(2)
    pre = rng.normal(size=400)
    y = pre + rng.normal(size=400) + np.r_[np.zeros(200), np.ones(200)]
    pre[250] = np.nan  # one missing value, in the treated arm only
    ds = validate(_edge_frame(list(y[:200]), list(y[200:]), pre=list(pre)), spec)
    [e] = average_effects(ds)  # filterwarnings=error: a singular design would raise here
    assert e.cuped and e.variance_reduction > 0.3
    assert e.estimate == pytest.approx(1.0, abs=0.25)


def test_srm_with_unit_level_propensities_uses_horvitz_thompson_shares(tmp_path):
    import tomllib

    from pex.experiment.spec import parse_spec

    spec = parse_spec(tomllib.loads('name = "s"\ndata = "s.csv"\nunit = "u"\narm = "arm"\ncontrol = "c"\n'
                                    'propensity = "p"\n[metrics.m]\ngoal = "increase"'), base_dir=tmp_path, require_data=False)
    rng = np.random.default_rng(3)
    n = 40_000
    p_treat = np.where(np.arange(n) < n // 2, 0.9, 0.5)  # stratified design
    treated = rng.uniform(size=n) < p_treat
    d = pd.DataFrame({"u": np.arange(n).astype(str), "arm": np.where(treated, "t", "c"),
                      "p": np.where(treated, p_treat, 1 - p_treat), "m": rng.normal(size=n)})
    result = srm_test(validate(d, spec))
    assert result.basis == "propensity column"
    assert result.expected_shares["t"] == pytest.approx(0.7, abs=0.01)
    assert result.ok
    # losing a fifth of the treated units is a sample-ratio mismatch
    lost = d[~(treated & (rng.uniform(size=n) < 0.2))]
    assert not srm_test(validate(lost, spec)).ok


def test_guardrail_verdicts_are_the_shared_rule(dataset, effects):
    from pex.experiment.guardrail import GuardrailRule

    verdicts = guardrail_verdicts(dataset, list(effects.values()))
    assert verdicts
    for g in verdicts:
        e = effects[(g.metric, g.arm)]
        rule = GuardrailRule(g.metric, "decrease", g.max_harm, e.baseline)
        harm = rule.assess_means(e.estimate, e.se, e.baseline_se, e.baseline_cov, n=e.n_control + e.n_arm)
        assert (g.harm, g.se, g.harm_upper, g.harm_lower, g.verdict) == (harm.estimate, harm.se, harm.upper, harm.lower, harm.verdict)
        assert g.level == pytest.approx(0.95) and g.units_to_certify == harm.units_to_certify()
        assert {"se", "level", "units_to_certify", "basis"} <= set(g.to_dict())


def test_allocation_propensities_keep_the_unweighted_methods(effects):
    assert {e.method for e in effects.values()} == {"ols", "cuped"}
    assert all((e.method == "cuped") == e.cuped for e in effects.values())
