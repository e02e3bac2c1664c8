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

import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from pex.data import PROPENSITY, Dataset
from pex.errors import DataError, NotFittedError, PexError, StoreError
from pex.features import FeatureEncoder
from pex.split import evaluation_mask

LEARNERS = ("t", "x", "s", "dr")
ENSEMBLE = "ensemble"
LEARNER_NAMES = {"t": "T-learner", "x": "X-learner", "s": "S-learner", "dr": "DR-learner", ENSEMBLE: "ensemble (mean of T, X, S, DR)"}
SCORE_NAME = "DR pseudo-outcome loss (held-out, lower is better)"
FORMAT = "pex.effects/1"
TRAINING_FILE = "training.parquet"  # per training unit: fold, out-of-fold effects, pseudo-outcomes

Progress = Callable[[int, int, str], None]  # (models done, models in total, what was just fitted)
CONTROL_INPUT = "__control__"  # S-learner input with every arm indicator at 0


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def outcome_params(n: int, binary: bool, seed: int) -> dict:
    """LightGBM settings for outcome models, scaled with the training size."""
    return {
        "objective": "binary" if binary else "regression",
        # large training sets: half the trees at twice the step, since fitting
        # and (as costly) predicting scale with rows x trees; small ones keep
        # the finer step, which measurably helps their accuracy
        "learning_rate": 0.05 if n < 50_000 else 0.1,
        "num_boost_round": 200 if n < 50_000 else 100,
        "num_leaves": int(np.clip(n / 500, 7, 31)),
        "min_data_in_leaf": int(np.clip(n / 200, 20, 500)),
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "cat_smooth": 10.0,
        "min_data_per_group": 50,
        # a leaf must carry some information (the hessian p(1-p) per unit): without
        # this, binary models of rare events (3% unsubscribes) overfit small training
        # sets and predicted rates on new units came out at half the observed rate
        "min_sum_hessian_in_leaf": 5.0 if binary else 1e-3,
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,  # parallelism comes from fitting several models at once (see _parallel)
        "verbosity": -1,
    }


def effect_params(n: int, seed: int) -> dict:
    """LightGBM settings for models fitted to noisy effect targets (X stage 2, DR final).

    Their targets carry the outcome noise twice over (and inverse propensities
    for DR), so they get fewer, larger leaves than outcome models.
    """
    return {**outcome_params(n, False, seed), "num_boost_round": 100 if n < 50_000 else 50,
            "num_leaves": int(np.clip(n / 2000, 4, 15)), "min_data_in_leaf": int(np.clip(n / 50, 50, 5000))}


def _train(X: np.ndarray, y: np.ndarray, params: dict, categorical: list[int]) -> lgb.Booster:
    params = dict(params)
    rounds = params.pop("num_boost_round")
    if params["objective"] == "binary" and np.unique(y).size < 2:
        # one class only (e.g. no conversions in a small arm): a constant model
        params = {**params, "objective": "regression"}
    data = lgb.Dataset(X, label=y, categorical_feature=categorical or "auto", free_raw_data=True, params=DATASET_PARAMS)
    return lgb.train(params, data, num_boost_round=rounds)


# LightGBM keeps the thread count of its parallel regions in one process-wide
# variable that every native call sets from its own `num_threads` (unset means
# "all cores"). pex trains and predicts with several single-threaded boosters
# at once (see _parallel); if any call, even a Dataset's construction, set it to
# another value, a predictor sized for one thread could run with two and write
# past its buffers (a segfault in LightGBM was seen here that way). So every
# LightGBM call in pex passes num_threads=1.
DATASET_PARAMS = {"verbosity": -1, "max_bin": 255, "num_threads": 1}


def predict(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """``booster.predict`` on one core (see DATASET_PARAMS for why it must say so)."""
    return booster.predict(X, num_threads=1)


# -- the stored, pickle-free effect model -----------------------------------------------------

MEMO_ENTRIES = 4  # e.g. the training units, the held-out units and a file being predicted
MEMO_MIN_ROWS, MEMO_MAX_ROWS = 1_000, 500_000  # single units are cheap to predict; huge files are predicted once


@dataclass
class EffectModel:
    """Predicts the effect of every non-control arm on every metric.

    ``recipes[metric][arm]`` is a list of terms ``{"model", "weight", "arm"}``:
    the effect is the weighted sum of the named boosters' predictions, where a
    term with an ``arm`` appends that arm's indicator columns (S-learner).
    Everything is plain JSON plus LightGBM's text model format.
    """

    encoder: FeatureEncoder
    control: str
    arms: list[str]
    metrics: list[str]
    learners: dict[str, str]
    recipes: dict[str, dict[str, list[dict]]]
    boosters: dict[str, lgb.Booster] = field(repr=False)
    _memo: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def treated_arms(self) -> list[str]:
        return [a for a in self.arms if a != self.control]

    def effect(self, X: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
        """Effects per (metric, arm) for an encoded feature matrix.

        The policies of one fit share this model and are valued on the same units many times over (building,
        ladder steps, comparison, recommendation), and every booster predicting is most of a run's time, so
        the last few large matrices' effects are kept, keyed by their content (a changed matrix is a new key).
        The arrays returned from the memo are read-only.
        """
        X = np.ascontiguousarray(X)
        if not MEMO_MIN_ROWS <= len(X) <= MEMO_MAX_ROWS:
            return self._effect(X)
        key = (X.shape, X.dtype.str, hashlib.blake2b(X.view(np.uint8), digest_size=16).digest())
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return dict(self._memo[key])
        out = self._effect(X)
        for values in out.values():
            values.flags.writeable = False
        with self._memo_lock:
            self._memo[key] = out
            while len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return dict(out)

    def _effect(self, X: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
        keys = list(dict.fromkeys((term["model"], term.get("arm")) for metric in self.metrics for arm in self.treated_arms
                                  for term in self.recipes[metric][arm]))

        def predict_one(key: tuple[str, str | None]) -> np.ndarray:
            return predict(self.boosters[key[0]], _with_arm(X, self.treated_arms, key[1]))

        # each booster predicts on one core (LightGBM releases the GIL), all cores busy;
        # a single unit is cheaper without the pool
        if len(X) >= 1000 and _threads() > 1:
            with ThreadPoolExecutor(max_workers=_threads()) as pool:
                cache = dict(zip(keys, pool.map(predict_one, keys)))
        else:
            cache = {key: predict_one(key) for key in keys}
        out = {}
        for metric in self.metrics:
            for arm in self.treated_arms:
                total = np.zeros(len(X))
                for term in self.recipes[metric][arm]:
                    total += term["weight"] * cache[(term["model"], term.get("arm"))]
                out[(metric, arm)] = total
        return out

    def predict_frame(self, frame: pd.DataFrame, unit: str | None = None) -> pd.DataFrame:
        """``unit`` column (when given) plus ``cate__<metric>__<arm>`` per metric and arm."""
        effects = self.effect(self.encoder.transform(frame))
        cols = {} if unit is None else {unit: frame[unit].to_numpy()}
        for (metric, arm), values in effects.items():
            cols[f"cate__{metric}__{arm}"] = values
        return pd.DataFrame(cols)

    def manifest(self) -> dict:
        return {
            "format": FORMAT, "encoder": self.encoder.to_dict(), "control": self.control, "arms": self.arms,
            "metrics": self.metrics, "learners": self.learners, "recipes": self.recipes,
            "models": sorted(self.boosters),
        }

    def to_files(self) -> dict[str, str]:
        """The model as text files: ``manifest.json`` plus one LightGBM text model per booster."""
        names = sorted(self.boosters)
        files = {f"models/{i:04d}.txt": self.boosters[name].model_to_string(num_iteration=-1) for i, name in enumerate(names)}
        manifest = {**self.manifest(), "files": {name: f"models/{i:04d}.txt" for i, name in enumerate(names)}}
        files["manifest.json"] = json.dumps(manifest, indent=1)
        return files

    @classmethod
    def from_files(cls, read: Callable[[str], str]) -> EffectModel:
        """Rebuild from :meth:`to_files` output; ``read(relative_path)`` returns a file's text."""
        try:
            manifest = json.loads(read("manifest.json"))
            if manifest.get("format") != FORMAT:
                raise StoreError(f"unknown effect model format {manifest.get('format')!r}",
                                 f"this pex reads {FORMAT}; refit with `pex fit`")
            return cls(
                encoder=FeatureEncoder.from_dict(manifest["encoder"]), control=manifest["control"], arms=list(manifest["arms"]),
                metrics=list(manifest["metrics"]), learners=dict(manifest["learners"]), recipes=manifest["recipes"],
                boosters={name: lgb.Booster(model_str=read(path)) for name, path in manifest["files"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError, lgb.basic.LightGBMError) as exc:
            # json.JSONDecodeError is a ValueError; a damaged file is not something the user can pass around
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            raise StoreError(f"the stored effect model is damaged ({exc.__class__.__name__}: {first_line})",
                             "fit the experiment again with `pex fit NAME`") from None


def _with_arm(X: np.ndarray, treated_arms: list[str], arm: str | None) -> np.ndarray:
    if arm is None:
        return X
    onehot = np.zeros((len(X), len(treated_arms)))
    if arm in treated_arms:
        onehot[:, treated_arms.index(arm)] = 1.0
    return np.hstack([X, onehot])


# -- fitting ---------------------------------------------------------------------------------


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

    def leaderboard(self) -> list[dict]:
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
    holdout: float = 0.0  # share of units held out for evaluation (pex.split); none of them is in ``units``
    n_evaluation: int = 0

    def leaderboard(self) -> pd.DataFrame:
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
        Seed of the fold split, of the held-out split and of LightGBM.
    holdout
        Share of units kept out of every model (:func:`pex.split.evaluation_mask`
        with this seed) so that policies built from the models can be
        evaluated honestly on them; 0 fits on all units.
    progress
        Called as ``progress(done, total, message)`` after each model is fitted.
    """
    if learner not in ("auto", *LEARNERS):
        raise PexError(f"unknown learner {learner!r}", f"choose one of auto, {', '.join(LEARNERS)}")
    if folds < 2:
        raise PexError(f"folds must be at least 2, got {folds}", "cross-fitting needs a held-out fold")
    spec, frame = dataset.spec, dataset.frame
    held_out = evaluation_mask(frame[spec.unit].to_numpy(), holdout, seed)
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
    fold = _assign_folds(arm_index, folds, seed)
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
                  requested=learner, seed=seed, holdout=holdout, n_evaluation=int(held_out.sum()))


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


def _assign_folds(arm_index: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = np.empty(len(arm_index), dtype=int)
    for a in np.unique(arm_index):
        idx = np.flatnonzero(arm_index == a)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def _parallel(tasks: dict, say: Callable[[str], None]) -> dict:
    """Run independent model fits on all cores.

    LightGBM releases the GIL while it trains, so a thread per core, each
    training a single-threaded booster, keeps every core busy. On these
    machines that is about twice as fast as one booster using OpenMP threads,
    whose per-iteration synchronisation costs more than it saves on data of
    this width (measured: 300k x 20, 200 rounds: 7.9 s on 1 thread, 11.7 s on 2).
    """
    results = {}
    with ThreadPoolExecutor(max_workers=_threads()) as pool:
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
        model = _train(X[rows], y[rows], outcome_params(int(rows.sum()), binary, seed + f), cat)
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
        half = _assign_folds(arm_index, 2, seed + 7919)

        def nested_task(f: int, h: int, a: int):
            rows = (fold != f) & (half == h) & (arm_index == a)
            model = _train(X[rows], y[rows], outcome_params(int(rows.sum()), binary, seed + f), cat)
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
        model = _train(np.hstack([X[tr], onehot[tr]]), y[tr], outcome_params(int(tr.sum()), binary, seed + f), cat)
        base = predict(model, _with_arm(X[te], treated, CONTROL_INPUT))
        return model, np.column_stack([predict(model, _with_arm(X[te], treated, a)) - base for a in treated])

    def x_task(f: int, j: int, side: int):
        tr, te = fold != f, fold == f
        if side == 1:  # treated units: observed minus imputed control outcome
            rows = tr & (arm_index == j + 1)
            target = y[rows] - mu_in[f, rows, 0]
        else:  # control units: imputed treated outcome minus observed
            rows = tr & (arm_index == 0)
            target = mu_in[f, rows, j + 1] - y[rows]
        model = _train(X[rows], target, effect_params(int(rows.sum()), seed + f), cat)
        return model, predict(model, X[te])

    def dr_task(f: int, j: int):
        tr, te = fold != f, fold == f
        model = _train(X[tr], nested[f][tr, j], effect_params(int(tr.sum()), seed + f), cat)
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
    if best == ENSEMBLE:
        kept_terms = {a: [{**t, "weight": t["weight"] / len(wanted)} for lr in wanted for t in terms[lr][a]] for a in treated}
        kept_models = {nm: m for lr in wanted for nm, m in models[lr].items()}
    else:
        kept_terms = terms[best]
        kept_models = {**models[best], **(models["t"] if best == "x" else {})}
    kept_terms = {a: _merge_terms(ts) for a, ts in kept_terms.items()}
    used = {t["model"] for ts in kept_terms.values() for t in ts}
    kept_models = {nm: m for nm, m in kept_models.items() if nm in used}
    fit = MetricFit(metric=name, binary=binary, oof=oof, pseudo=pseudo, losses=losses, seconds=seconds, selected=best)
    return fit, kept_terms, kept_models


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
