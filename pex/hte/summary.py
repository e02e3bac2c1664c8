"""What a fitted effect model says: leaderboard, heterogeneity verdicts, segments, importance.

``fit_summary`` gathers everything the CLI prints and the store keeps about
one :func:`pex.hte.learners.fit_effects` run as plain JSON-able data.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from pex.experiment.split import RULE as SPLIT_RULE
from pex.hte.boosting import DATASET_PARAMS, effect_params
from pex.hte.heterogeneity import HeterogeneityTest, heterogeneity_tests
from pex.hte.learners import ENSEMBLE, LEARNER_NAMES, SCORE_NAME, HTEFit
from pex.hte.segments import find_segments


def effect_importance(fit: HTEFit, seed: int = 0, max_rows: int = 100_000) -> list[dict]:
    """Which features drive the predicted effects, per metric.

    The boosters behind a T- or S-learner mostly learn the outcome level, so
    their split gains say little about effect heterogeneity. Instead a small
    surrogate booster per metric is fitted to the out-of-fold predicted
    effects (all arms, standardised) and its gain shares are reported.
    """
    enc = fit.model.encoder
    rows = []
    # gain shares settle long before a million rows: a sample keeps this cheap
    sample = np.random.default_rng(seed).permutation(len(fit.X))[:max_rows]
    X = fit.X[sample]
    for metric in fit.metrics:
        effects = fit.oof_effects(metric)[sample]
        gain = np.zeros(len(enc.columns))
        for j in range(effects.shape[1]):
            target = effects[:, j]
            if np.ptp(target) == 0:
                continue
            params = {**effect_params(len(target), seed), "min_data_in_leaf": 20, "num_leaves": 15}
            rounds = params.pop("num_boost_round")
            booster = lgb.train(params, lgb.Dataset(X, (target - target.mean()) / target.std(),
                                                    categorical_feature=enc.categorical_indices or "auto",
                                                    params=DATASET_PARAMS), num_boost_round=rounds)
            gain += booster.feature_importance("gain")
        total = gain.sum()
        shares = gain / total if total > 0 else gain
        for feature, share in sorted(zip(enc.columns, shares), key=lambda x: -x[1]):
            rows.append({"metric": metric, "feature": feature, "importance": float(share)})
    return rows


def heterogeneity(fit: HTEFit) -> list[HeterogeneityTest]:
    """The heterogeneity verdict per metric and treated arm of a fit, as :func:`fit_summary` reports it."""
    # the heterogeneity test uses predictions not chosen on the pseudo-outcomes (see pex.hte.heterogeneity)
    unselected = {m: (f.oof[ENSEMBLE] if ENSEMBLE in f.oof else f.oof[f.selected]) for m, f in fit.metrics.items()}
    return heterogeneity_tests({m: f.pseudo for m, f in fit.metrics.items()}, unselected, fit.model.treated_arms)


def fit_summary(fit: HTEFit, seed: int = 0) -> dict:
    """JSON-able results of a fit (see module docstring)."""
    arms = fit.model.treated_arms
    tests = heterogeneity(fit)
    predicted = {(m, a): fit.oof_effects(m)[:, j] for m in fit.metrics for j, a in enumerate(arms)}
    pseudo = {(m, a): fit.metrics[m].pseudo[:, j] for m in fit.metrics for j, a in enumerate(arms)}
    segments = find_segments(fit.model.encoder, fit.X, predicted, pseudo, grow=fit.folds == 0, seed=seed)
    return {
        "requested": fit.requested,
        "selected": {m: f.selected for m, f in fit.metrics.items()},
        "learner_names": LEARNER_NAMES,
        "score": SCORE_NAME,
        "folds": int(fit.folds.max()) + 1,
        "n_units": len(fit.units),
        # the rule that recovers which units no model has seen (pex.experiment.split)
        "holdout": {"share": fit.holdout, "seed": fit.seed, "key": fit.split_key, "offset": fit.holdout_offset, "rule": SPLIT_RULE,
                    "n_training": len(fit.units),
                    "n_evaluation": fit.n_evaluation},
        "leaderboard": fit.leaderboard().to_dict(orient="records"),
        "heterogeneity": [t.to_dict() for t in tests],
        "segments": [s.to_dict() for s in segments],
        "importance": effect_importance(fit, seed=seed),
        "seconds": fit.seconds,
    }
