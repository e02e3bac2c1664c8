"""Heterogeneous effects: accuracy against the simulated truth, honest selection,
the heterogeneity verdict, segments, and pickle-free storage of the models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pex.errors import DataError, PexError
from pex.experiment.data import validate
from pex.experiment.simulate import simulate
from pex.experiment.spec import load_spec
from pex.hte.heterogeneity import DIFFER, blp_test, qini
from pex.hte.learners import ENSEMBLE, LEARNERS, fit_effects
from pex.hte.model import MEMO_ENTRIES, EffectModel
from pex.hte.summary import fit_summary, heterogeneity

METRICS = ("sessions", "converted", "unsubscribes")
ARMS = ("daily", "weekly")


def _pehe(model: EffectModel, test, metric: str, eff: pd.DataFrame | None = None) -> float:
    eff = model.predict_frame(test.data) if eff is None else eff
    return float(np.sqrt(np.mean([np.mean((eff[f"cate__{metric}__{a}"] - test.truth.cate(metric, a)) ** 2) for a in ARMS])))


@pytest.fixture(scope="module")
def spec(sim_dir):
    return load_spec(sim_dir / "exp.toml")


@pytest.fixture(scope="module")
def fits(spec):
    """pex auto on two scenarios (12k units each), fresh test units, and the effect models of auto and of each single
    learner. ``auto`` fits every learner already: each single learner's model is taken from it, the same models as a
    fit of that learner alone (:func:`test_a_learners_model_from_auto_is_that_learner_fitted_alone`)."""
    out = {}
    for scenario in ("notification_cadence", "constant"):
        ds = validate(simulate(12_000, scenario=scenario, seed=21).data, spec)
        test = simulate(10_000, scenario=scenario, seed=22)
        auto = fit_effects(ds, learner="auto", seed=1)
        out[scenario] = (ds, test, auto, {"auto": auto.model, **{lr: auto.learner_model(lr) for lr in LEARNERS}})
    return out


def test_a_learners_model_from_auto_is_that_learner_fitted_alone(spec):
    ds = validate(simulate(2000, scenario="notification_cadence", seed=3).data, spec)
    test = simulate(500, scenario="notification_cadence", seed=4).data
    auto = fit_effects(ds, learner="auto", seed=1)
    for lr in LEARNERS:
        alone = fit_effects(ds, learner=lr, seed=1).model
        assert auto.learner_model(lr).learners == alone.learners == dict.fromkeys(alone.metrics, lr)
        pd.testing.assert_frame_equal(auto.learner_model(lr).predict_frame(test), alone.predict_frame(test))
    ensemble = auto.learner_model(ENSEMBLE).predict_frame(test)
    mean = sum(auto.learner_model(lr).predict_frame(test) for lr in LEARNERS) / len(LEARNERS)
    pd.testing.assert_frame_equal(ensemble, mean)
    with pytest.raises(PexError, match="was not fitted"):
        fit_effects(ds, learner="t", seed=1).learner_model("x")


@pytest.mark.parametrize("scenario", ["notification_cadence", "constant"])
def test_auto_is_as_accurate_as_the_best_single_learner(fits, scenario):
    _, test, _, models = fits[scenario]
    effects = {lr: m.predict_frame(test.data) for lr, m in models.items()}
    for metric in METRICS:
        pehe = {lr: _pehe(m, test, metric, effects[lr]) for lr, m in models.items()}
        best_single = min(pehe[lr] for lr in LEARNERS)
        assert pehe["auto"] <= 1.05 * best_single, (metric, pehe)


def test_effects_recover_the_true_heterogeneity(fits):
    _, test, auto, _ = fits["notification_cadence"]
    model = auto.model
    eff = model.predict_frame(test.data)
    truth = test.truth.cate("sessions", "daily")
    # new users gain far more sessions from daily digests: the model must see that
    new = test.data["tenure_days"].to_numpy() < 60
    pred = eff["cate__sessions__daily"].to_numpy()
    assert pred[new].mean() - pred[~new].mean() > 0.5 * (truth[new].mean() - truth[~new].mean())
    assert np.corrcoef(pred, truth)[0, 1] > 0.5
    assert _pehe(model, test, "sessions") < truth.std()


def test_leaderboard_scores_every_learner_and_marks_one(fits):
    _, _, auto, _ = fits["notification_cadence"]
    board = auto.leaderboard()
    assert set(board["learner"]) == {*LEARNERS, ENSEMBLE}
    for _metric, rows in board.groupby("metric"):
        assert rows["selected"].sum() == 1
        chosen = rows[rows["selected"]].iloc[0]
        assert chosen["score"] == rows["score"].min()
        assert (rows["score_ci_low"] <= rows["score"]).all() and (rows["score"] <= rows["score_ci_high"]).all()
        assert (rows["fit_seconds"] >= 0).all()


def test_out_of_fold_predictions_do_not_use_the_unit(spec):
    """Changing one fold's outcomes must not move that fold's out-of-fold T-learner effects."""
    data = simulate(4000, seed=5).data
    ds = validate(data, spec)
    a = fit_effects(ds, learner="t", seed=0)
    fold0 = a.folds == 0
    changed = data.copy()
    changed.loc[fold0, "sessions"] += 100.0
    b = fit_effects(validate(changed, spec), learner="t", seed=0)
    np.testing.assert_allclose(a.metrics["sessions"].oof["t"][fold0], b.metrics["sessions"].oof["t"][fold0])
    assert not np.allclose(a.metrics["sessions"].oof["t"][~fold0], b.metrics["sessions"].oof["t"][~fold0])


def test_heterogeneity_verdicts_on_the_demo_scenario(fits):
    _ds, _, auto, _ = fits["notification_cadence"]
    summary = fit_summary(auto)
    verdicts = {(h["metric"], h["arm"]): h for h in summary["heterogeneity"]}
    assert verdicts[("sessions", "daily")]["verdict"] == DIFFER
    assert verdicts[("sessions", "daily")]["qini_area"] > 0
    assert json.dumps(summary)  # plain JSON


def _claims_heterogeneity(spec, seed: int) -> bool:
    """Whether pex claims heterogeneity on an experiment of 3,000 units whose true effects are constant."""
    ds = validate(simulate(3000, scenario="constant", seed=100 + seed, n_noise=4).data, spec)
    return any(t.verdict == DIFFER for t in heterogeneity(fit_effects(ds, seed=seed)))


@pytest.mark.slow  # 6 whole fits (16 s); its 20-seed sibling below is slow too
def test_constant_effects_give_no_evidence_of_heterogeneity_in_most_seeds(spec):
    """pex must not claim heterogeneity that is not there (constant true effects): the first 6 seeds of the
    sweep below, at most one claim (if each seed claimed with the Holm family's 5%, a second claim would come
    3% of the time; at 20% it would be missed two times in three, hence the full sweep in the slow suite)."""
    claimed = [seed for seed in range(6) if _claims_heterogeneity(spec, seed)]
    assert len(claimed) <= 1, f"claimed heterogeneity in seeds {claimed} of 6"


@pytest.mark.slow
def test_constant_effects_give_no_evidence_of_heterogeneity_in_90_percent_of_20_seeds(spec):
    """The same claim over 20 seeds: at most 10% of them claim heterogeneity."""
    claimed = [seed for seed in range(20) if _claims_heterogeneity(spec, seed)]
    assert len(claimed) / 20 <= 0.10, f"claimed heterogeneity in seeds {claimed} of 20"


def test_blp_and_qini_against_known_cases():
    rng = np.random.default_rng(0)
    n = 20_000
    tau = rng.normal(1.0, 1.0, n)
    psi = tau + rng.normal(0, 3, n)
    ate, _slope, lo, hi, p = blp_test(psi, tau)  # perfect predictions: slope 1
    assert ate == pytest.approx(1.0, abs=0.06) and lo < 1 < hi and p < 1e-10
    ate, _slope, lo, hi, p = blp_test(psi, rng.normal(size=n))  # noise predictions: slope 0
    assert lo < 0 < hi and p > 0.01
    area, se, curve = qini(psi, tau)
    assert area > 5 * se and curve[0] == (0.0, 0.0) and curve[-1][1] == pytest.approx(psi.mean())
    area_rand, se_rand, _ = qini(psi, rng.normal(size=n))
    assert abs(area_rand) < 4 * se_rand


def test_segments_are_rules_with_honest_estimates(fits):
    _, _, auto, _ = fits["notification_cadence"]
    segs = fit_summary(auto)["segments"]
    assert 2 <= len(segs) <= 8
    assert sum(s["share"] for s in segs) == pytest.approx(1.0)
    assert all(s["share"] >= 0.04 for s in segs)
    assert any("tenure_days" in s["rule"] for s in segs)
    for s in segs:
        for e in s["effects"]:
            assert e["ci_low"] <= e["estimate"] <= e["ci_high"]
    # the segment with the largest daily sessions effect is one of new users
    top = max(segs, key=lambda s: next(e["estimate"] for e in s["effects"] if (e["metric"], e["arm"]) == ("sessions", "daily")))
    assert "tenure_days <=" in top["rule"]


def test_stored_model_reproduces_predictions_exactly(fits, tmp_path):
    _ds, test, _, models = fits["notification_cadence"]
    for learner in ("auto", "x", "dr"):
        model = models[learner]
        files = model.to_files()
        for rel, text in files.items():
            (tmp_path / learner / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / learner / rel).write_text(text)
        assert not any(b"pickle" in (tmp_path / learner / rel).read_bytes()[:200] for rel in files)
        loaded = EffectModel.from_files(lambda rel, learner=learner: (tmp_path / learner / rel).read_text())
        a = model.predict_frame(test.data, unit="user_id")
        b = loaded.predict_frame(test.data, unit="user_id")
        pd.testing.assert_frame_equal(a, b, rtol=0, atol=1e-9)


def test_effects_of_a_matrix_are_memoized_by_content(fits, monkeypatch):
    _, test, auto, _ = fits["notification_cadence"]
    model = auto.model
    X = model.encoder.transform(test.data.iloc[:3000], strict=False)
    fresh = EffectModel._effect(model, X)
    calls = []
    monkeypatch.setattr(model, "_effect", lambda M: calls.append(len(M)) or EffectModel._effect(model, M))
    model._memo.clear()
    first, second = model.effect(X), model.effect(X.copy())  # an equal copy is the same content
    assert calls == [3000]
    for key, values in fresh.items():
        np.testing.assert_array_equal(first[key], values)
        np.testing.assert_array_equal(second[key], values)
    with pytest.raises(ValueError, match="read-only"):
        first[next(iter(first))][0] = 1.0
    changed = X.copy()
    changed[0, 0] = changed[0, 0] + 1.0 if np.isfinite(changed[0, 0]) else 1.0
    model.effect(changed)
    assert calls == [3000, 3000]  # a changed matrix is predicted anew
    expected = EffectModel._effect(model, changed)
    for key, values in model.effect(changed).items():
        np.testing.assert_array_equal(values, expected[key])
    for i in range(1, MEMO_ENTRIES + 1):  # new matrices push the oldest out, X among them
        model.effect(X[i:])
    model.effect(X)
    assert len(calls) == 3 + MEMO_ENTRIES and len(model._memo) == MEMO_ENTRIES
    model.effect(X[:10])  # small matrices are never memoized
    model.effect(X[:10])
    assert calls[-2:] == [10, 10]


def test_unseen_categories_and_missing_values_are_fine(fits):
    _, test, auto, _ = fits["notification_cadence"]
    data = test.data.iloc[:50].copy()
    data["country"] = "ZZ"  # never seen
    data["platform"] = None
    data["age"] = np.nan
    out = auto.model.predict_frame(data, unit="user_id")
    assert out.notna().all().all() and len(out) == 50


def test_missing_feature_column_is_a_clear_error(fits):
    _, test, auto, _ = fits["notification_cadence"]
    with pytest.raises(DataError, match="feature column 'tenure_days' missing from the data"):
        auto.model.predict_frame(test.data.drop(columns="tenure_days"))


def test_bad_arguments(spec):
    ds = validate(simulate(2000, seed=1).data, spec)
    with pytest.raises(PexError, match="unknown learner 'q'"):
        fit_effects(ds, learner="q")
    with pytest.raises(PexError, match="folds must be at least 2"):
        fit_effects(ds, folds=1)
    tiny = validate(simulate(2000, seed=1).data.groupby("arm").head(12), spec)
    with pytest.raises(DataError, match="too few to fit effect models"):
        fit_effects(tiny)


def test_estimator_wrapper_follows_scikit_learn(spec, fits):
    from pex.errors import NotFittedError
    from pex.hte.learners import EffectEstimator

    est = EffectEstimator(learner="s", folds=2, seed=1)
    assert (est.learner, est.folds, est.seed) == ("s", 2, 1) and not hasattr(est, "model_")
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(pd.DataFrame())
    ds, test, _, models = fits["notification_cadence"]
    assert est.fit(ds) is est
    pd.testing.assert_frame_equal(est.predict(test.data), models["s"].predict_frame(test.data))
    assert set(est.leaderboard_["learner"]) == {"s"}


@pytest.mark.parametrize("learner", ["x", "s", "dr"])
def test_no_learner_leaks_a_units_outcome_into_its_out_of_fold_effect(spec, learner):
    data = simulate(3000, seed=6).data
    a = fit_effects(validate(data, spec), learner=learner, seed=0)
    fold0 = a.folds == 0
    changed = data.copy()
    changed.loc[fold0, "sessions"] += 100.0
    b = fit_effects(validate(changed, spec), learner=learner, seed=0)
    np.testing.assert_allclose(a.metrics["sessions"].oof[learner][fold0], b.metrics["sessions"].oof[learner][fold0])


def test_qini_does_not_depend_on_row_order_under_ties():
    rng = np.random.default_rng(1)
    n = 4000
    hidden = rng.uniform(size=n)
    psi = 2 * hidden + rng.normal(0, 1, n)
    pred = np.where(hidden > 2, 1.0, 0.0)  # one tie group: no information at all
    order = np.argsort(hidden)
    a = qini(psi[order], pred[order])
    b = qini(psi[order[::-1]], pred[order[::-1]])
    assert a[0] == pytest.approx(b[0], abs=1e-12) and abs(a[0]) < 1e-12
    assert np.allclose(np.array(a[2]), np.array(b[2]))
