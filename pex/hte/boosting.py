"""LightGBM as pex trains it: model settings, one-core training and prediction, stratified folds.

Shared by the effect learners (:mod:`pex.hte.learners`), the stored effect model
(:mod:`pex.hte.model`) and the reward models of off-policy evaluation
(:mod:`pex.evaluation.estimators`), so every booster in pex is built and run one way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import lightgbm as lgb
import numpy as np


def threads() -> int:
    """Cores this process may use (its CPU affinity), at least 1."""
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
        "num_threads": 1,  # parallelism comes from fitting several models at once (see pex.hte.learners._parallel)
        "verbosity": -1,
    }


def effect_params(n: int, seed: int) -> dict:
    """LightGBM settings for models fitted to noisy effect targets (X stage 2, DR final).

    Their targets carry the outcome noise twice over (and inverse propensities
    for DR), so they get fewer, larger leaves than outcome models.
    """
    return {**outcome_params(n, False, seed), "num_boost_round": 100 if n < 50_000 else 50,
            "num_leaves": int(np.clip(n / 2000, 4, 15)), "min_data_in_leaf": int(np.clip(n / 50, 50, 5000))}


def train(X: np.ndarray, y: np.ndarray, params: dict, categorical: list[int]) -> lgb.Booster:
    """One booster trained with ``params`` (``num_boost_round`` included) on one core."""
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
# at once (see pex.hte.learners._parallel); if any call, even a Dataset's construction, set it to
# another value, a predictor sized for one thread could run with two and write
# past its buffers (a segfault in LightGBM was seen here that way). So every
# LightGBM call in pex passes num_threads=1.
DATASET_PARAMS = {"verbosity": -1, "max_bin": 255, "num_threads": 1}


def predict(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """``booster.predict`` on one core (see DATASET_PARAMS for why it must say so)."""
    return booster.predict(X, num_threads=1)


# -- the stored, pickle-free effect model -----------------------------------------------------


def assign_folds(arm_index: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold 0..k-1 per unit, stratified by arm: each arm's units are dealt round-robin in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(arm_index), dtype=int)
    for a in np.unique(arm_index):
        idx = np.flatnonzero(arm_index == a)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


@contextmanager
def booster_pool() -> Iterator[ThreadPoolExecutor]:
    """A thread per core for single-threaded boosters (LightGBM releases the GIL while it trains and predicts).

    On an interrupt (SIGINT, SIGTERM: see ``pex.cli.main.entry``) the boosters not yet started are cancelled,
    so the process stops once the few running ones finish, not after the whole queue.
    """
    with ThreadPoolExecutor(max_workers=threads()) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
