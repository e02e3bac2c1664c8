"""Heterogeneous treatment effects: T-, X-, S- and DR-learners per arm and metric.

Why not EconML's learner classes directly: pex needs (1) the four learners to
share their nuisance models (outcome models per arm are fitted once and serve
the T-learner, the X-learner's first stage and the DR-learner's pseudo-outcomes),
(2) out-of-fold effect predictions of every learner for honest selection, and
(3) fitted models that store without pickle. EconML's classes fit each learner
from scratch and hold sklearn objects, so pex builds the same estimators
(Kunzel et al. 2019; Kennedy 2023) from LightGBM boosters; ``bench/hte.py``
compares their accuracy and cost with EconML's own classes.

Design
------
* Units are split into ``folds`` groups (stratified by arm). For each fold, every
  model is trained on the other folds and predicts the fold: these out-of-fold
  effects are what selection, the heterogeneity test and the segments use.
* The model that is stored and serves predictions averages the fold models.
* The DR-learner's final models are trained on pseudo-outcomes whose outcome
  models are cross-fitted inside the training folds (nested), so no unit's
  out-of-fold effect depends on its own outcome, for any learner.
* Propensities are known in a randomized experiment: the DR pseudo-outcome
  uses each unit's assignment probability instead of a fitted classifier.
* Selection score: the doubly-robust pseudo-outcome loss,
  mean over units and arms of (psi_i - tau_hat_i)^2, where psi_i is the DR
  pseudo-outcome built from out-of-fold outcome models and the known
  propensities. With known propensities E[psi | x] = tau(x), so differences in
  this loss estimate differences in PEHE without bias for any learner whose
  prediction for unit i did not use unit i.
"""


from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field, replace

import lightgbm as lgb
import numpy as np
import pandas as pd

from pex.errors import DataError, NotFittedError, PexError
from pex.experiment.data import PROPENSITY, Dataset
from pex.experiment.features import FeatureEncoder
from pex.experiment.split import evaluation_mask
from pex.experiment.split import split_key as seed_split_key
from pex.hte.boosting import assign_folds, booster_pool, effect_params, outcome_params, predict, train
from pex.hte.model import EffectModel, with_arm

LEARNERS = ("t", "x", "s", "dr")
ENSEMBLE = "ensemble"
LEARNER_NAMES = {"t": "T-learner", "x": "X-learner", "s": "S-learner", "dr": "DR-learner", ENSEMBLE: "ensemble (mean of T, X, S, DR)"}
SCORE_NAME = "DR pseudo-outcome loss (held-out, lower is better)"
TRAINING_FILE = "training.parquet"  # per training unit: fold, out-of-fold effects, pseudo-outcomes

Progress = Callable[[int, int, str], None]  # (models done, models in total, what was just fitted)
CONTROL_INPUT = "__control__"  # S-learner input with every arm indicator at 0


# -- fitting --------------------------------------------------------------------------------


@dataclass
class MetricFit:
    """Everything learned about one metric: out-of-fold effects, scores, selection."""

    metric: str
    binary: bool
    oof: dict[str, np.ndarray]  # learner -> (n, k) out-of-fold effects
    pseudo: np.ndarray  # (n, k) DR pseudo-outcomes
    losses: dict[str, np.ndarray]  # learner -> (n,) per-unit loss summed over arms
    seconds: dict[str, float]
    selected: str
    # learner -> (terms per arm, boosters they use) for every learner scored, the ensemble included: the
    # models a fit with only that learner would keep (same folds and seeds), so it can be compared on new units
    recipes: dict[str, tuple[dict[str, list[dict]], dict[str, lgb.Booster]]] = field(default_factory=dict, repr=False)

    def leaderboard(self) -> list[dict]:
        """One row per learner: its held-out score and its difference from the selected learner, with CIs."""
        best = self.losses[self.selected]
        rows = []
        for learner, loss in self.losses.items():
            n = len(loss)
            diff = loss - best
            rows.append({
                "metric": self.metric, "learner": learner, "score": float(loss.mean()),
                "score_ci_low": float(loss.mean() - 1.96 * loss.std(ddof=1) / np.sqrt(n)),
                "score_ci_high": float(loss.mean() + 1.96 * loss.std(ddof=1) / np.sqrt(n)),
                "vs_selected": float(diff.mean()),
                "vs_selected_ci_low": float(diff.mean() - 1.96 * diff.std(ddof=1) / np.sqrt(n)),
                "vs_selected_ci_high": float(diff.mean() + 1.96 * diff.std(ddof=1) / np.sqrt(n)),
                "fit_seconds": float(self.seconds.get(learner, 0.0)),
                "selected": learner == self.selected,
            })
        return sorted(rows, key=lambda r: r["score"])


@dataclass
class HTEFit:
    """The result of :func:`fit_effects`."""

    model: EffectModel
    metrics: dict[str, MetricFit]
    folds: np.ndarray
    arm_index: np.ndarray
    units: np.ndarray
    X: np.ndarray = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    requested: str = "auto"
    seed: int = 0
    holdout: float = 0.0  # share of units held out for evaluation (pex.experiment.split); none of them is in ``units``
    n_evaluation: int = 0
    holdout_offset: float = 0.0  # where the held-out arc starts (0.5: the second fit of a cross-fitted run)
    split_key: str = ""  # the held-out split's hash key (pex.experiment.split): the dataset version's in a workspace

    def leaderboard(self) -> pd.DataFrame:
        """The leaderboards of every metric as one table."""
        return pd.DataFrame([row for m in self.metrics.values() for row in m.leaderboard()])

    def training_frame(self) -> pd.DataFrame:
        """Per training unit: id, fold, and for every metric and arm the out-of-fold
        predicted effect (``oof__``) and DR pseudo-outcome (``pseudo__``).

        Stored with the fit for policy building: out-of-fold effects give each
        unit a decision its own outcome did not shape, and the pseudo-outcomes
        are honest per-unit effect signals (E[psi | x] = tau(x)) to value
        those decisions with.
        """
        cols: dict[str, np.ndarray] = {"unit": self.units.astype(str), "fold": self.folds.astype(np.int16)}
        for metric, mf in self.metrics.items():
            for j, arm in enumerate(self.model.treated_arms):
                cols[f"oof__{metric}__{arm}"] = self.oof_effects(metric)[:, j].astype(np.float32)
                cols[f"pseudo__{metric}__{arm}"] = mf.pseudo[:, j].astype(np.float32)
        return pd.DataFrame(cols)

    def to_files(self) -> dict[str, str | bytes]:
        """What a workspace stores for this fit: the model files plus ``training.parquet``."""
        buffer = io.BytesIO()
        self.training_frame().to_parquet(buffer, index=False)
        return {**self.model.to_files(), TRAINING_FILE: buffer.getvalue()}

    def learner_model(self, learner: str) -> EffectModel:
        """The effect model that keeps ``learner`` for every metric instead of the selection: what
        ``fit_effects(..., learner=learner)`` with the same seed would return (for ``ensemble``, the mean of the
        learners fitted), without fitting again. Lets each learner be compared with the selection on fresh units."""
        fitted = set.intersection(*(set(m.recipes) for m in self.metrics.values()))
        if learner not in fitted:
            raise PexError(f"learner {learner!r} was not fitted", f"choose one of {', '.join(sorted(fitted))}")
        boosters = {nm: b for m in self.metrics.values() for nm, b in m.recipes[learner][1].items()}
        return replace(self.model, learners=dict.fromkeys(self.metrics, learner), boosters=boosters,
                       recipes={metric: m.recipes[learner][0] for metric, m in self.metrics.items()})

    def oof_effects(self, metric: str) -> np.ndarray:
        """Out-of-fold effects of the selected learner, shape (n_units, n_treated_arms)."""
        m = self.metrics[metric]
        return m.oof[m.selected]


def fit_effects(
    dataset: Dataset,
    *,
    learner: str = "auto",
    folds: int = 2,
    seed: int = 0,
    holdout: float = 0.0,
    holdout_offset: float = 0.0,
    split_key: str | None = None,
    progress: Progress | None = None,
) -> HTEFit:
    """Fit T/X/S/DR learners for every non-control arm and metric of ``dataset``.

    Parameters
    ----------
    learner
        ``auto`` fits all four, scores them on held-out folds and keeps per metric
        the best of them or their mean (``ensemble``); ``t``, ``x``, ``s`` or ``dr``
        fits and keeps that one.
    folds
        Number of cross-fitting folds (2 or more).
    seed
        Seed of the fold split and of LightGBM (and of the held-out split when no ``split_key`` is given).
    holdout
        Share of units kept out of every model (:func:`pex.experiment.split.evaluation_mask`
        under ``split_key``) so that policies built from the models can be
        evaluated honestly on them; 0 fits on all units.
    holdout_offset
        Where the held-out arc of hashes starts: with ``holdout=0.5``, offset 0.5 holds out the units
        offset 0 trains on (the two fits of a cross-fitted run, :mod:`pex.services.crossfit`).
    split_key
        The held-out split's hash key: a stored dataset version's (:func:`pex.experiment.split.dataset_split_key`),
        so that ``seed`` does not choose the split; default the key of ``seed`` (:func:`pex.experiment.split.split_key`).
    progress
        Called as ``progress(done, total, message)`` after each model is fitted.
    """
    if learner not in ("auto", *LEARNERS):
        raise PexError(f"unknown learner {learner!r}", f"choose one of auto, {', '.join(LEARNERS)}")
    if folds < 2:
        raise PexError(f"folds must be at least 2, got {folds}", "cross-fitting needs a held-out fold")
    spec, frame = dataset.spec, dataset.frame
    key = split_key or seed_split_key(seed)
    held_out = evaluation_mask(frame[spec.unit].to_numpy(), holdout, offset=holdout_offset, key=key)
    if held_out.any():
        frame = frame.loc[~held_out]
    arms = list(dataset.arms)
    arm_index = frame[spec.arm].map({a: i for i, a in enumerate(arms)}).to_numpy(dtype=int)
    counts = np.bincount(arm_index, minlength=len(arms))
    if counts.min() < 2 * folds * 5:
        raise DataError(
            f"arm {arms[int(counts.argmin())]!r} has {int(counts.min())} units: too few to fit effect models with {folds} folds",
            f"effect models need at least {2 * folds * 5} units per arm; collect more data or merge arms",
        )
    if not dataset.features:
        raise DataError("the experiment has no features",
                        "effects can only differ across units by their features; list features in the spec")
    encoder = FeatureEncoder.fit(frame, dataset.features)
    X = encoder.transform(frame)
    cat = encoder.categorical_indices
    propensity = frame[PROPENSITY].to_numpy(dtype=float)
    fold = assign_folds(arm_index, folds, seed)
    wanted = LEARNERS if learner == "auto" else (learner,)
    k, K = len(arms) - 1, folds
    per_metric = (K * (k + 1) + (K if "s" in wanted else 0) + (2 * K * k if "x" in wanted else 0)
                  + (K * k + 2 * K * (k + 1) if "dr" in wanted else 0))
    total = per_metric * len(spec.metrics)
    done = [0]

    def say(message: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total, message)

    boosters: dict[str, lgb.Booster] = {}
    recipes: dict[str, dict[str, list[dict]]] = {}
    selected: dict[str, str] = {}
    metric_fits: dict[str, MetricFit] = {}
    started = time.perf_counter()
    for metric in spec.metrics.values():
        y = frame[metric.column].to_numpy(dtype=float)
        binary = dataset.metric_types[metric.name] == "binary"
        fit = _fit_metric(metric.name, X, y, binary, arm_index, propensity, fold, cat, arms, wanted, seed, say)
        metric_fits[metric.name] = fit[0]
        selected[metric.name] = fit[0].selected
        recipes[metric.name] = fit[1]
        boosters.update(fit[2])
    model = EffectModel(encoder=encoder, control=spec.control, arms=arms, metrics=list(spec.metrics),
                        learners=selected, recipes=recipes, boosters=boosters)
    return HTEFit(model=model, metrics=metric_fits, folds=fold, arm_index=arm_index,
                  units=frame[spec.unit].to_numpy(), X=X, seconds={"total": time.perf_counter() - started},
                  requested=learner, seed=seed, holdout=holdout, n_evaluation=int(held_out.sum()),
                  holdout_offset=holdout_offset, split_key=key)


class EffectEstimator:
    """scikit-learn style wrapper around :func:`fit_effects`.

    Examples
    --------
    >>> est = EffectEstimator(learner="auto", folds=2).fit(dataset)   # doctest: +SKIP
    >>> est.predict(new_units, unit="user_id")                        # doctest: +SKIP
    """

    def __init__(self, *, learner: str = "auto", folds: int = 2, seed: int = 0, holdout: float = 0.0) -> None:
        self.learner = learner
        self.folds = folds
        self.seed = seed
        self.holdout = holdout

    def fit(self, dataset: Dataset, progress: Progress | None = None) -> EffectEstimator:
        """Fit the effect models on ``dataset``; returns self."""
        self.result_ = fit_effects(dataset, learner=self.learner, folds=self.folds, seed=self.seed, holdout=self.holdout,
                                   progress=progress)
        self.model_ = self.result_.model
        self.leaderboard_ = self.result_.leaderboard()
        return self

    def predict(self, frame: pd.DataFrame, unit: str | None = None) -> pd.DataFrame:
        """``cate__<metric>__<arm>`` columns for the rows of ``frame``."""
        if not hasattr(self, "model_"):
            raise NotFittedError("this EffectEstimator is not fitted yet", "call fit(dataset) first")
        return self.model_.predict_frame(frame, unit=unit)



def _parallel(tasks: dict, say: Callable[[str], None]) -> dict:
    """Run independent model fits on all cores.

    LightGBM releases the GIL while it trains, so a thread per core, each
    training a single-threaded booster, keeps every core busy. On these
    machines that is about twice as fast as one booster using OpenMP threads,
    whose per-iteration synchronisation costs more than it saves on data of
    this width (measured: 300k x 20, 200 rounds: 7.9 s on 1 thread, 11.7 s on 2).
    """
    results = {}
    with booster_pool() as pool:
        futures = {pool.submit(fn): (key, label) for key, (label, fn) in tasks.items()}
        for future in as_completed(futures):
            key, label = futures[future]
            results[key] = future.result()
            say(label)
    return results


def _fit_metric(name, X, y, binary, arm_index, propensity, fold, cat, arms, wanted, seed, say):
    """All learners for one metric; returns (MetricFit, recipes of the kept learner, boosters kept)."""
    n, k = len(y), len(arms) - 1
    K = int(fold.max()) + 1
    treated = arms[1:]
    terms: dict[str, dict[str, list[dict]]] = {lr: {a: [] for a in treated} for lr in LEARNERS}
    models: dict[str, dict[str, lgb.Booster]] = {lr: {} for lr in LEARNERS}
    oof = {lr: np.zeros((n, k)) for lr in wanted}
    seconds = {lr: 0.0 for lr in wanted}

    # Pass 1: outcome models per arm and fold (shared by T, X, DR and the DR score),
    # each predicting its held-out fold and, for the X-learner's imputed effects,
    # the training units of the other arms. Predicting costs about as much as
    # training, so it happens inside the parallel tasks too.
    t0 = time.perf_counter()

    def outcome_task(f: int, a: int):
        rows = (fold != f) & (arm_index == a)
        model = train(X[rows], y[rows], outcome_params(int(rows.sum()), binary, seed + f), cat)
        te = fold == f
        other = (fold != f) & (arm_index != a) if "x" in wanted else np.zeros(n, dtype=bool)
        return model, predict(model, X[te]), other, predict(model, X[other]) if other.any() else np.empty(0)

    tasks = {(f, a): (f"{name}: outcome model for {arms[a]}, fold {f + 1}/{K}", lambda f=f, a=a: outcome_task(f, a))
             for f in range(K) for a in range(k + 1)}
    pass1 = _parallel(tasks, say)
    mu = {key: result[0] for key, result in pass1.items()}
    mu_oof = np.zeros((n, k + 1))
    mu_in = np.full((K, n, k + 1), np.nan)  # mu_a(x) for training units not in arm a (X-learner imputation)
    for (f, a), (_, held_out, other, on_other) in pass1.items():
        mu_oof[fold == f, a] = held_out
        mu_in[f, other, a] = on_other
    shared_seconds = time.perf_counter() - t0

    pseudo = _dr_pseudo_outcomes(mu_oof, y, arm_index, propensity)

    # The DR-learner's final model for fold f must not see fold f's outcomes,
    # not even through the outcome models behind its training targets, or its
    # out-of-fold effects would carry each unit's own noise (like an in-sample
    # T-learner). So its targets come from outcome models cross-fitted within
    # the training folds alone: each training fold set is halved, and each
    # half's targets use outcome models fitted on the other half.
    nested_seconds = 0.0
    nested: dict[int, np.ndarray] = {}
    if "dr" in wanted:
        t0 = time.perf_counter()
        half = assign_folds(arm_index, 2, seed + 7919)

        def nested_task(f: int, h: int, a: int):
            rows = (fold != f) & (half == h) & (arm_index == a)
            model = train(X[rows], y[rows], outcome_params(int(rows.sum()), binary, seed + f), cat)
            target = (fold != f) & (half != h)
            return target, predict(model, X[target])

        tasks = {(f, h, a): (f"{name}: outcome model for {arms[a]} inside folds without {f + 1} (half {h + 1}/2)",
                             lambda f=f, h=h, a=a: nested_task(f, h, a))
                 for f in range(K) for h in range(2) for a in range(k + 1)}
        mu_nested = np.full((K, n, k + 1), np.nan)
        for (f, _h, a), (target, pred) in _parallel(tasks, say).items():
            mu_nested[f, target, a] = pred
        for f in range(K):
            tr = fold != f
            nested[f] = np.full((n, k), np.nan)
            nested[f][tr] = _dr_pseudo_outcomes(mu_nested[f, tr], y[tr], arm_index[tr], propensity[tr])
        nested_seconds = time.perf_counter() - t0
    # X-learner weight g_j = P(arm j | arm in {control, j}); the weighting only
    # affects efficiency, so a constant from the arm shares is enough.
    share = np.bincount(arm_index, minlength=k + 1) / n
    onehot = np.eye(k + 1)[arm_index][:, 1:]

    # Pass 2: the learners' own models, all independent of each other.
    def s_task(f: int):
        tr, te = fold != f, fold == f
        model = train(np.hstack([X[tr], onehot[tr]]), y[tr], outcome_params(int(tr.sum()), binary, seed + f), cat)
        base = predict(model, with_arm(X[te], treated, CONTROL_INPUT))
        return model, np.column_stack([predict(model, with_arm(X[te], treated, a)) - base for a in treated])

    def x_task(f: int, j: int, side: int):
        tr, te = fold != f, fold == f
        if side == 1:  # treated units: observed minus imputed control outcome
            rows = tr & (arm_index == j + 1)
            target = y[rows] - mu_in[f, rows, 0]
        else:  # control units: imputed treated outcome minus observed
            rows = tr & (arm_index == 0)
            target = mu_in[f, rows, j + 1] - y[rows]
        model = train(X[rows], target, effect_params(int(rows.sum()), seed + f), cat)
        return model, predict(model, X[te])

    def dr_task(f: int, j: int):
        tr, te = fold != f, fold == f
        model = train(X[tr], nested[f][tr, j], effect_params(int(tr.sum()), seed + f), cat)
        return model, predict(model, X[te])

    tasks = {}
    for f in range(K):
        if "s" in wanted:
            tasks[("s", f, None)] = (f"{name}: S-learner, fold {f + 1}/{K}", lambda f=f: s_task(f))
        for j in range(k):
            if "x" in wanted:
                tasks[("x1", f, j)] = (f"{name}: X-learner (treated) for {treated[j]}, fold {f + 1}/{K}", lambda f=f, j=j: x_task(f, j, 1))
                tasks[("x0", f, j)] = (f"{name}: X-learner (control) for {treated[j]}, fold {f + 1}/{K}", lambda f=f, j=j: x_task(f, j, 0))
            if "dr" in wanted:
                tasks[("dr", f, j)] = (f"{name}: DR-learner for {treated[j]}, fold {f + 1}/{K}", lambda f=f, j=j: dr_task(f, j))
    t1 = time.perf_counter()
    fitted = _parallel(tasks, say)
    own_seconds = time.perf_counter() - t1
    # wall time of pass 2, shared out by the number of models each learner needed
    per_model = own_seconds / max(1, len(tasks))

    for f in range(K):
        te = fold == f
        for a in range(k + 1):
            models["t"][f"{name}.mu{a}.f{f}"] = mu[(f, a)]
        for j, a in enumerate(treated):
            terms["t"][a] += [{"model": f"{name}.mu{j + 1}.f{f}", "weight": 1 / K},
                              {"model": f"{name}.mu0.f{f}", "weight": -1 / K}]
        if "t" in wanted:
            oof["t"][te] = mu_oof[te, 1:] - mu_oof[te, :1]
        if "s" in wanted:
            s_model, s_effects = fitted[("s", f, None)]
            models["s"][f"{name}.s.f{f}"] = s_model
            oof["s"][te] = s_effects
            for a in treated:
                terms["s"][a] += [{"model": f"{name}.s.f{f}", "weight": 1 / K, "arm": a},
                                  {"model": f"{name}.s.f{f}", "weight": -1 / K, "arm": CONTROL_INPUT}]
        for j, a in enumerate(treated):
            if "x" in wanted:
                (tau1, pred1), (tau0, pred0) = fitted[("x1", f, j)], fitted[("x0", f, j)]
                g = share[j + 1] / (share[0] + share[j + 1])
                models["x"][f"{name}.x1_{j + 1}.f{f}"] = tau1
                models["x"][f"{name}.x0_{j + 1}.f{f}"] = tau0
                oof["x"][te, j] = g * pred0 + (1 - g) * pred1
                terms["x"][a] += [{"model": f"{name}.x0_{j + 1}.f{f}", "weight": g / K},
                                  {"model": f"{name}.x1_{j + 1}.f{f}", "weight": (1 - g) / K}]
            if "dr" in wanted:
                final, pred = fitted[("dr", f, j)]
                models["dr"][f"{name}.dr{j + 1}.f{f}"] = final
                oof["dr"][te, j] = pred
                terms["dr"][a].append({"model": f"{name}.dr{j + 1}.f{f}", "weight": 1 / K})
    n_models = {"t": 0, "s": K, "x": 2 * K * k, "dr": K * k}
    for lr in wanted:
        seconds[lr] = n_models[lr] * per_model + (shared_seconds if lr != "s" else 0.0) + (nested_seconds if lr == "dr" else 0.0)

    losses = {lr: ((pseudo - oof[lr]) ** 2).sum(axis=1) for lr in wanted}
    if len(wanted) > 1:
        oof[ENSEMBLE] = np.mean([oof[lr] for lr in wanted], axis=0)
        losses[ENSEMBLE] = ((pseudo - oof[ENSEMBLE]) ** 2).sum(axis=1)
        seconds[ENSEMBLE] = shared_seconds + nested_seconds + own_seconds
    best = min(losses, key=lambda lr: losses[lr].mean())

    def recipe(learner: str) -> tuple[dict[str, list[dict]], dict[str, lgb.Booster]]:
        """The terms per arm of one learner (or of the ensemble) and the boosters they use."""
        if learner == ENSEMBLE:
            kept_terms = {a: [{**t, "weight": t["weight"] / len(wanted)} for lr in wanted for t in terms[lr][a]] for a in treated}
            kept_models = {nm: m for lr in wanted for nm, m in models[lr].items()}
        else:
            kept_terms = terms[learner]
            kept_models = {**models[learner], **(models["t"] if learner == "x" else {})}
        kept_terms = {a: _merge_terms(ts) for a, ts in kept_terms.items()}
        used = {t["model"] for ts in kept_terms.values() for t in ts}
        return kept_terms, {nm: m for nm, m in kept_models.items() if nm in used}

    recipes = {lr: recipe(lr) for lr in losses}
    fit = MetricFit(metric=name, binary=binary, oof=oof, pseudo=pseudo, losses=losses, seconds=seconds, selected=best,
                    recipes=recipes)
    return fit, *recipes[best]


def _dr_pseudo_outcomes(mu: np.ndarray, y: np.ndarray, arm_index: np.ndarray, propensity: np.ndarray) -> np.ndarray:
    """Doubly-robust pseudo-outcomes per treated arm, with each unit's known assignment probability.

    psi_j = mu_j(x) - mu_0(x) + 1[arm = j] (y - mu_j(x)) / p - 1[arm = control] (y - mu_0(x)) / p,
    where p is the probability of the arm the unit got; ``mu`` has one column per arm.
    """
    n, k = len(y), mu.shape[1] - 1
    resid = (y - mu[np.arange(n), arm_index]) / propensity
    out = np.empty((n, k))
    for j in range(k):
        out[:, j] = mu[:, j + 1] - mu[:, 0] + np.where(arm_index == j + 1, resid, 0.0) - np.where(arm_index == 0, resid, 0.0)
    return out


def _merge_terms(terms: list[dict]) -> list[dict]:
    """Combine terms that use the same booster with the same arm input."""
    merged: dict[tuple, float] = {}
    for t in terms:
        key = (t["model"], t.get("arm"))
        merged[key] = merged.get(key, 0.0) + t["weight"]
    return [{"model": m, "weight": w, **({"arm": a} if a is not None else {})} for (m, a), w in merged.items() if w != 0.0]
