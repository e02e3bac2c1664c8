"""Off-policy evaluation: what a policy would have achieved, estimated from randomized data.

A randomized experiment logged, for every unit, one arm drawn with a known
probability (``pscore``) and that arm's outcome. A policy, evaluated on the
same units, is a distribution over arms per unit (``action_dist``, shape
(n_units, n_arms)). The estimators here turn the two into the policy's average
outcome per unit, with a standard error and a 95% normal interval, in the
style of Open Bandit Pipeline's ``obp.ope``: small stateless dataclasses whose
``estimate(...)`` takes numpy arrays.

=========  ======================================================================
``ips``    inverse probability weighting: unbiased with known propensities, noisy
           when the policy disagrees often with the logged arms.
``snips``  self-normalised IPS: divides by the realised sum of weights; a little
           biased, usually less noisy, and robust to propensities off by a constant.
``dm``     direct method: the reward model's prediction for the policy's arms;
           low variance, but as biased as the reward model.
``dr``     doubly robust: the direct method plus an IPS correction of the reward
           model's error on the logged arm; unbiased with known propensities and,
           with a good (cross-fitted) reward model, much less noisy than IPS.
=========  ======================================================================

Every :class:`Estimate` carries its per-unit ``contributions`` (influence
values) whose mean is the estimate: two policies evaluated on the same units
can then be compared with a paired standard error (:func:`difference`), which
is far tighter than treating the two estimates as independent.

Reward models for DM and DR come from :func:`cross_fit_rewards`: a unit's
prediction never uses the unit's own outcome, which keeps DR unbiased with
known propensities however good or bad the model is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Protocol

import numpy as np

from pex.errors import DataError
from pex.hte import boosting

Z95 = NormalDist().inv_cdf(0.975)
ROW_SUM_TOLERANCE = 1e-6
MIN_ARM_UNITS = 10  # fewer training units of an arm than this: its reward model is the arm's mean

# diagnostics() thresholds
MIN_ESS_SHARE = 0.1
MAX_WEIGHT = 20.0
MIN_PSCORE = 0.01
MEAN_WEIGHT_Z = 3.0


@dataclass(frozen=True)
class Estimate:
    """A policy's estimated average outcome per unit on one metric.

    Attributes
    ----------
    estimator
        Which estimator produced it (``ips``, ``snips``, ``dm``, ``dr``, or a
        difference such as ``dr`` for two ``dr`` estimates).
    value, se
        The estimate and its standard error.
    ci_low, ci_high
        The 95% normal confidence interval ``value -/+ 1.96 se``.
    n
        Number of units.
    contributions
        Per-unit influence values, shape (n,): their mean is ``value`` and
        their sample standard deviation over ``sqrt(n)`` is ``se``. Kept so
        estimates on the same units can be compared pairwise (:func:`difference`).
        Read-only.
    """

    estimator: str
    value: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    contributions: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (everything but ``contributions``)."""
        return {"estimator": self.estimator, "value": self.value, "se": self.se,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


    @classmethod
    def from_contributions(cls, estimator: str, contributions: np.ndarray) -> Estimate:
        """The mean of per-unit influence values, with its standard error and 95% normal interval.

        For estimates built outside this module that are means over units,
        e.g. a weighted sum of several metrics' contributions on the same units.
        """
        c = np.array(contributions, dtype=np.float64)  # a private, read-only copy
        if c.ndim != 1 or len(c) < 2:
            raise ValueError(f"contributions must be one value per unit for at least 2 units, got shape {c.shape}")
        c.setflags(write=False)
        n = len(c)
        value = float(c.mean())
        se = float(c.std(ddof=1) / np.sqrt(n))
        return cls(estimator=estimator, value=value, se=se, ci_low=value - Z95 * se, ci_high=value + Z95 * se,
                   n=n, contributions=c)


_from_contributions = Estimate.from_contributions  # the name pex.evaluation.comparison uses


def difference(a: Estimate, b: Estimate, estimator: str | None = None) -> Estimate:
    """``a - b`` for two estimates on the same units, with a paired standard error.

    Both estimates' errors come mostly from the same units' outcomes, so they
    are strongly correlated; the standard error of the per-unit differences
    of their contributions accounts for that, where combining the two standard
    errors as if independent would overstate the uncertainty of the comparison.

    Parameters
    ----------
    a, b
        Estimates computed on the same units, in the same order (this cannot be
        checked beyond their number).
    estimator
        Label of the result; defaults to the shared estimator name, or
        ``"<a>-<b>"`` when they differ.

    Raises
    ------
    ValueError
        When ``a`` and ``b`` have different numbers of units.
    """
    if a.n != b.n or len(a.contributions) != len(b.contributions):
        raise ValueError(f"difference() needs estimates on the same units, got n={a.n} and n={b.n}")
    label = estimator or (a.estimator if a.estimator == b.estimator else f"{a.estimator}-{b.estimator}")
    return _from_contributions(label, a.contributions - b.contributions)


def simultaneous_z(estimates: Sequence[Estimate], alpha: float = 0.05, draws: int = 100_000, seed: int = 0) -> float:
    """One-sided critical value that holds for every estimate at once: ``P(max_k (value_k - truth_k) / se_k <= z)
    = 1 - alpha`` under their joint normal law (the "max-t" method of simultaneous inference).

    Estimates on the same units are correlated through their contributions (policies that agree on most units
    err alike); Bonferroni ignores that and, over many alike candidates, is far wider than needed. The joint law's
    correlation comes from the per-unit contributions, and the quantile of the maximum from ``draws`` seeded
    normal draws (statsmodels and scipy offer max-t only for one-way designs or a few dimensions). The result
    lies between the single-estimate and the Bonferroni critical values. Estimates with no variance are left
    out: they cannot err.
    """
    normal = NormalDist()
    live = [e for e in estimates if e.se > 0 and np.isfinite(e.se)]
    single = normal.inv_cdf(1.0 - alpha)
    if len(live) <= 1:
        return single
    bonferroni = normal.inv_cdf(1.0 - alpha / len(live))
    corr = np.corrcoef(np.column_stack([e.contributions for e in live]), rowvar=False)
    values, vectors = np.linalg.eigh(np.nan_to_num(corr))
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    z = root @ _normal_draws(draws, len(live), seed)  # (k, draws): the maximum over k rows is a fast elementwise one
    return float(np.clip(np.quantile(z.max(axis=0), 1.0 - alpha), single, bonferroni))


@lru_cache(maxsize=8)
def _normal_draws(draws: int, k: int, seed: int) -> np.ndarray:
    """The seeded ``(draws, k)`` standard normal draws of :func:`simultaneous_z`, transposed to ``(k, draws)`` and
    made once per shape and seed: the procedures call it at every step with the same seed (``draws * k`` normals
    each time), so only the correlation applied to the draws changes. Read-only, as it is shared."""
    out = np.ascontiguousarray(np.random.default_rng(seed).standard_normal((draws, k)).T)
    out.flags.writeable = False
    return out


def step_down_upper(estimates: Sequence[Estimate], limits: Sequence[float], alpha: float = 0.05,
                    seed: int = 0) -> list[float | None]:
    """Which of several "value below its limit" claims hold together: step-down max-t (Romano & Wolf, 2005).

    Claim ``j`` is that the true value of ``estimates[j]`` is below ``limits[j]``. Starting with every claim,
    the critical value ``c`` of :func:`simultaneous_z` over the claims not yet made is computed, every claim
    whose upper bound ``value + c * se`` is within its limit is made, and the procedure repeats over the rest
    (``c`` shrinks as claims are made) until none is. The chance that any claim made is false stays within
    ``alpha`` however many there are, with no order fixed in advance and no stop at the first failure; alike
    estimates (correlated contributions) cost little. Returns, per claim, the critical value it was made at,
    or None.
    """
    if len(estimates) != len(limits):
        raise ValueError(f"step_down_upper() needs one limit per estimate, got {len(estimates)} and {len(limits)}")
    made: list[float | None] = [None] * len(estimates)
    open_ = [j for j, e in enumerate(estimates) if np.isfinite(e.value) and np.isfinite(limits[j])]
    while open_:
        z = simultaneous_z([estimates[j] for j in open_], alpha, seed=seed)
        now = [j for j in open_ if estimates[j].value + z * (estimates[j].se if np.isfinite(estimates[j].se) else np.inf)
               <= limits[j]]
        if not now:
            break
        for j in now:
            made[j] = float(z)
        open_ = [j for j in open_ if j not in now]
    return made


# -- input checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Logged:
    """Validated inputs: float/int arrays of consistent shapes."""

    reward: np.ndarray | None
    action: np.ndarray
    pscore: np.ndarray
    action_dist: np.ndarray
    reward_hat: np.ndarray | None

    @property
    def weight(self) -> np.ndarray:
        """pi(a_i | x_i) / pscore_i: how much more (or less) often the policy picks the logged arm."""
        return self.action_dist[np.arange(len(self.action)), self.action] / self.pscore


def _as_action(action, n_arms: int | None) -> np.ndarray:
    a = np.asarray(action)
    if a.ndim != 1:
        raise DataError(f"action must be one-dimensional (one arm index per unit), got shape {a.shape}",
                        "pass the logged arm of each unit as an integer index into the policy's arms")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise DataError("action holds values that are not whole numbers",
                            "pass integer arm indices (0 .. n_arms - 1), not labels or probabilities")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise DataError(f"action must hold integer arm indices, got dtype {a.dtype}",
                        "map arm labels to their index in the policy's arms first")
    a = a.astype(np.int64, copy=False)
    if n_arms is not None and a.size and (a.min() < 0 or a.max() >= n_arms):
        bad = int(a[(a < 0) | (a >= n_arms)][0])
        raise DataError(f"action {bad} is out of range for {n_arms} arms",
                        f"arm indices run from 0 to {n_arms - 1}, in the order of action_dist's columns")
    return a


def _check(reward, action, pscore, action_dist, reward_hat=None, *, need_reward: bool = True,
           need_reward_hat: bool = False) -> _Logged:
    dist = np.asarray(action_dist, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[1] < 1:
        raise DataError(f"action_dist must have shape (n_units, n_arms), got {dist.shape}",
                        "pass the policy's probability of every arm for every unit, e.g. policy.action_probabilities(frame)")
    n, k = dist.shape
    if n < 2:
        raise DataError(f"off-policy evaluation needs at least 2 units, got {n}",
                        "a standard error needs two or more units")
    p = np.asarray(pscore, dtype=np.float64)
    a = _as_action(action, k)
    lengths = {"action": a.shape, "pscore": p.shape}
    r = None
    if need_reward:
        r = np.asarray(reward, dtype=np.float64)
        lengths["reward"] = r.shape
    for name, shape in lengths.items():
        if shape != (n,):
            raise DataError(f"{name} has shape {shape} but action_dist has {n} rows",
                            "every input must have one entry per unit, in the same unit order")
    if r is not None and not np.all(np.isfinite(r)):
        raise DataError(f"reward has {int((~np.isfinite(r)).sum())} missing or infinite values",
                        "drop or impute units without an observed outcome before evaluating")
    if not np.all(np.isfinite(p)) or p.min() <= 0 or p.max() > 1:
        bad = float(p[~(np.isfinite(p) & (p > 0) & (p <= 1))][0])
        raise DataError(f"pscore must be a probability in (0, 1], found {bad:g}",
                        "pscore is the logging probability of the logged arm; randomized arms always have one above 0")
    if not np.all(np.isfinite(dist)) or dist.min() < 0:
        raise DataError("action_dist holds negative or missing probabilities",
                        "every entry must be a probability between 0 and 1")
    row_error = np.abs(dist.sum(axis=1) - 1.0)
    if row_error.max() > ROW_SUM_TOLERANCE:
        i = int(row_error.argmax())
        raise DataError(f"action_dist rows must sum to 1; row {i} sums to {dist[i].sum():.6g}",
                        "each row is the policy's distribution over arms for one unit")
    q = None
    if need_reward_hat:
        if reward_hat is None:
            raise DataError("this estimator needs reward_hat, the predicted reward of every arm for every unit",
                            "fit one with cross_fit_rewards(X, action, reward, n_arms, binary=...)")
        q = np.asarray(reward_hat, dtype=np.float64)
        if q.shape != (n, k):
            raise DataError(f"reward_hat has shape {q.shape} but action_dist has shape {(n, k)}",
                            "reward_hat needs one prediction per unit and arm, columns in the order of action_dist's")
        if not np.all(np.isfinite(q)):
            raise DataError("reward_hat holds missing or infinite predictions",
                            "every unit needs a finite predicted reward for every arm")
    return _Logged(reward=r, action=a, pscore=p, action_dist=dist, reward_hat=q)


# -- estimators --------------------------------------------------------------------------------


class OffPolicyEstimator(Protocol):
    """What :func:`evaluate` needs of an estimator."""

    name: str

    def estimate(self, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray,
                 reward_hat: np.ndarray | None = None) -> Estimate:
        """The value of the policy ``action_dist`` from logged rewards, actions and propensities."""
        ...


@dataclass(frozen=True)
class InverseProbabilityWeighting:
    """Inverse probability weighting (IPS).

    ``V = mean_i w_i r_i`` with ``w_i = pi(a_i | x_i) / pscore_i``: each logged
    outcome counts as often as the policy would have picked its arm relative to
    how often the experiment did. Unbiased whenever the propensities are the
    true assignment probabilities (a randomized experiment's are), but its
    variance grows with the weights, i.e. with how rarely the logged arms
    agree with the policy.
    """

    name: str = "ips"

    def estimate(self, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray,
                 reward_hat: np.ndarray | None = None) -> Estimate:
        """Estimate the policy's average reward; ``reward_hat`` is ignored."""
        d = _check(reward, action, pscore, action_dist)
        return _from_contributions(self.name, d.weight * d.reward)


@dataclass(frozen=True)
class SelfNormalizedIPS:
    """Self-normalised inverse probability weighting (SNIPS).

    ``V = sum_i w_i r_i / sum_i w_i``: IPS divided by the realised mean weight,
    whose expectation is 1. Consistent but slightly biased in small samples;
    usually less variable than IPS, invariant to adding a constant to the
    rewards, and unaffected by propensities that are all off by one factor.
    The standard error is the delta method's: ``contributions`` are the
    linearised influence values ``V + w_i (r_i - V) / mean(w)``.
    """

    name: str = "snips"

    def estimate(self, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray,
                 reward_hat: np.ndarray | None = None) -> Estimate:
        """Estimate the policy's average reward; ``reward_hat`` is ignored."""
        d = _check(reward, action, pscore, action_dist)
        w = d.weight
        if w.sum() <= 0:
            raise DataError("the policy gives probability 0 to every logged arm, so no unit informs its value",
                            "check overlap with pex.evaluation.estimators.diagnostics(); the policy must choose arms the experiment logged")
        value = float((w * d.reward).sum() / w.sum())
        return _from_contributions(self.name, value + w * (d.reward - value) / w.mean())


@dataclass(frozen=True)
class DirectMethod:
    """Direct method (DM): the reward model's prediction for the policy's arms.

    ``V = mean_i sum_a pi(a | x_i) q(x_i, a)``. Uses no weights, so it is
    stable even when the policy rarely agrees with the logged arms, but it is
    exactly as biased as the reward model ``q`` is for the policy's arms.
    The standard error is that of the per-unit predictions only: it treats the
    reward model as known and ignores the model's own estimation error, so its
    interval is too narrow whenever the model is wrong. Prefer DR for inference.
    """

    name: str = "dm"

    def estimate(self, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray,
                 reward_hat: np.ndarray | None = None) -> Estimate:
        """Estimate the policy's average reward from ``reward_hat`` (shape (n_units, n_arms))."""
        d = _check(reward, action, pscore, action_dist, reward_hat, need_reward_hat=True)
        return _from_contributions(self.name, (d.action_dist * d.reward_hat).sum(axis=1))


@dataclass(frozen=True)
class DoublyRobust:
    """Doubly robust (DR) estimation: the direct method plus an IPS correction.

    ``psi_i = sum_a pi(a | x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i))``, ``V = mean_i psi_i``.
    The weighted residual removes the reward model's bias on average, so DR
    is unbiased with known propensities whatever the model (as long as a unit's
    prediction does not use its own outcome, see :func:`cross_fit_rewards`);
    the better the model, the smaller the residuals and the variance.
    """

    name: str = "dr"

    def estimate(self, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray,
                 reward_hat: np.ndarray | None = None) -> Estimate:
        """Estimate the policy's average reward from outcomes and ``reward_hat`` (shape (n_units, n_arms))."""
        d = _check(reward, action, pscore, action_dist, reward_hat, need_reward_hat=True)
        q_logged = d.reward_hat[np.arange(len(d.action)), d.action]
        psi = (d.action_dist * d.reward_hat).sum(axis=1) + d.weight * (d.reward - q_logged)
        return _from_contributions(self.name, psi)


ESTIMATORS: tuple[OffPolicyEstimator, ...] = (InverseProbabilityWeighting(), SelfNormalizedIPS(), DirectMethod(),
                                              DoublyRobust())


def evaluate(reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray,
             reward_hat: np.ndarray | None, estimators: Sequence[OffPolicyEstimator] = ESTIMATORS) -> dict[str, Estimate]:
    """Run several estimators on the same logged data; returns ``{estimator.name: Estimate}``.

    ``reward_hat`` may be ``None`` only when no estimator needs it (DM and DR do).
    """
    names = [e.name for e in estimators]
    if len(set(names)) != len(names):
        raise ValueError(f"estimator names must be unique, got {names}")
    return {e.name: e.estimate(reward, action, pscore, action_dist, reward_hat) for e in estimators}


# -- diagnostics -------------------------------------------------------------------------------


def diagnostics(action: np.ndarray, pscore: np.ndarray, action_dist: np.ndarray) -> dict:
    """How much the logged data can say about a policy, with plain-English warnings.

    Returns
    -------
    dict
        ``ess``: Kish effective sample size ``(sum w)^2 / sum w^2`` of the
        importance weights ``w_i = pi(a_i | x_i) / pscore_i``, i.e. about how
        many units' worth of information IPS has; ``ess_share``: ``ess / n``;
        ``max_weight`` and ``mean_weight``; ``n``; ``min_pscore``; and
        ``warnings``, a list of sentences, empty when nothing looks wrong:

        * few effective units (``ess_share`` below 0.1): estimates are noisy;
        * a weight above 20: a handful of units dominate IPS and DR;
        * poor overlap: the policy puts probability on an arm the data never
          logged (no estimator without a model can see its outcomes), or some
          logging probability is below 0.01;
        * a mean weight far from 1 (more than 3 standard errors): with correct
          propensities and full overlap its expectation is exactly 1, so this
          signals wrong propensities (or arms the policy uses but the data lacks).
    """
    d = _check(None, action, pscore, action_dist, need_reward=False)
    n, k = d.action_dist.shape
    w = d.weight
    sum_w2 = float((w ** 2).sum())
    ess = float(w.sum() ** 2 / sum_w2) if sum_w2 > 0 else 0.0
    mean_w = float(w.mean())
    se_w = float(w.std(ddof=1) / np.sqrt(n))
    out = {"n": n, "ess": ess, "ess_share": ess / n, "max_weight": float(w.max()), "mean_weight": mean_w,
           "min_pscore": float(d.pscore.min()), "warnings": []}
    warnings: list[str] = out["warnings"]
    if out["ess_share"] < MIN_ESS_SHARE:
        warnings.append(f"Few effective units: the weights leave an effective sample of {ess:.0f} of {n} units "
                        f"({out['ess_share']:.1%}); estimates of this policy will be noisy.")
    if out["max_weight"] > MAX_WEIGHT:
        heavy = int((w > MAX_WEIGHT).sum())
        warnings.append(f"Dominant units: {heavy} unit(s) carry a weight above {MAX_WEIGHT:g} (largest "
                        f"{out['max_weight']:.1f}); a few outcomes drive the IPS and DR estimates.")
    logged = np.bincount(d.action, minlength=k)
    unlogged = [a for a in range(k) if logged[a] == 0 and d.action_dist[:, a].max() > 0]
    if unlogged:
        mass = float(d.action_dist[:, unlogged].sum(axis=1).mean())
        warnings.append(f"Poor overlap: the policy gives arm(s) {', '.join(map(str, unlogged))} {mass:.1%} of its "
                        "decisions but the data has no unit logged in them; their outcomes are unknown.")
    if out["min_pscore"] < MIN_PSCORE:
        warnings.append(f"Poor overlap: some logged arms had a probability as low as {out['min_pscore']:.2g} "
                        f"(below {MIN_PSCORE:g}); their units get very large weights.")
    if abs(mean_w - 1.0) > max(MEAN_WEIGHT_Z * se_w, 1e-9):
        warnings.append(f"Suspicious propensities: the mean weight is {mean_w:.3f} (standard error {se_w:.3f}) "
                        "but must be close to 1 when pscore holds the true assignment probabilities; "
                        "check the allocation or propensity column.")
    return out


def disagreement(estimates: Sequence[Estimate]) -> bool:
    """True when the 95% intervals of any two estimates do not overlap.

    Estimates of one policy on the same units share most of their noise, so
    intervals that do not even overlap point at a problem (a biased reward
    model for DM, wrong propensities, poor overlap) rather than at chance.
    """
    return any(a.ci_high < b.ci_low or b.ci_high < a.ci_low
               for i, a in enumerate(estimates) for b in estimates[i + 1:])


# -- reward models -----------------------------------------------------------------------------


def cross_fit_rewards(X: np.ndarray, action: np.ndarray, reward: np.ndarray, n_arms: int, *, binary: bool,
                      categorical: Sequence[int] = (), folds: int = 2, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions of E[reward | x, arm] for every unit and arm (the ``reward_hat`` of DM and DR).

    Units are split into ``folds`` folds, stratified by logged arm; each fold's
    predictions come from one LightGBM model per arm trained on that arm's
    units in the other folds. No unit's prediction uses its own outcome, which
    is what keeps DR unbiased with known propensities (an in-sample model would
    fit part of each unit's noise and shrink the residual correction).

    Parameters
    ----------
    X
        Features, shape (n_units, n_features); NaN marks a missing value.
    action
        Logged arm index per unit, shape (n_units,).
    reward
        Observed outcome per unit, shape (n_units,).
    n_arms
        Number of arms (columns of the result).
    binary
        The reward is 0/1: models predict probabilities.
    categorical
        Column indices of ``X`` holding category codes.
    folds
        Number of folds (2 or more).
    seed
        Seed of the fold split and of LightGBM.

    Returns
    -------
    numpy.ndarray
        Shape (n_units, n_arms). When an arm has fewer than 10 units in a
        fold's training folds, its prediction is those units' mean reward
        (the training folds' overall mean when it has none).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(reward, dtype=np.float64)
    if isinstance(n_arms, bool) or not isinstance(n_arms, (int, np.integer)) or n_arms < 1:
        raise DataError(f"n_arms must be a positive integer, got {n_arms!r}", "pass the number of arms of the policy")
    a = _as_action(action, int(n_arms))
    n = len(a)
    if X.ndim != 2 or X.shape[0] != n or y.shape != (n,):
        raise DataError(f"X {X.shape}, action {a.shape} and reward {y.shape} must describe the same units",
                        "X needs shape (n_units, n_features); action and reward one entry per unit")
    if not np.all(np.isfinite(y)):
        raise DataError(f"reward has {int((~np.isfinite(y)).sum())} missing or infinite values",
                        "drop or impute units without an observed outcome first")
    if binary and not np.isin(y, (0.0, 1.0)).all():
        raise DataError("a binary reward must be 0 or 1", "pass binary=False for a continuous metric")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2 or folds > n:
        raise DataError(f"folds must be an integer from 2 to the number of units, got {folds!r}",
                        "cross-fitting needs at least one held-out fold")
    cat = [int(c) for c in categorical]
    if any(c < 0 or c >= X.shape[1] for c in cat):
        raise DataError(f"categorical column indices {cat} are out of range for {X.shape[1]} feature columns",
                        "pass indices of X's columns that hold category codes")
    fold = boosting.assign_folds(a, int(folds), seed)
    out = np.empty((n, int(n_arms)))

    def task(f: int, arm: int) -> tuple[int, int, np.ndarray]:
        train, held_out = fold != f, fold == f
        rows = train & (a == arm)
        m = int(rows.sum())
        if m < MIN_ARM_UNITS or X.shape[1] == 0:
            level = y[rows].mean() if m else y[train].mean()
            return f, arm, np.full(int(held_out.sum()), level)
        model = boosting.train(X[rows], y[rows], boosting.outcome_params(m, binary, seed + f), cat)
        return f, arm, boosting.predict(model, X[held_out])

    # LightGBM releases the GIL while it trains: one single-threaded booster per core
    with boosting.booster_pool() as pool:
        for f, arm, pred in pool.map(lambda job: task(*job), [(f, arm) for f in range(int(folds))
                                                                for arm in range(int(n_arms))]):
            out[fold == f, arm] = pred
    return out
