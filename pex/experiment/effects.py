"""Experiment health and average effects.

* :func:`srm_test` - sample-ratio mismatch: chi-square test of the arm counts
  against the planned allocation.
* :func:`average_effects` - per non-control arm x metric: arm and control
  means, absolute and relative lift with confidence intervals, p-values with a
  Holm correction across all arms x metrics, and CUPED variance reduction
  when the metric has a pre-period covariate.
* :func:`guardrail_verdicts` - one-sided tests of harm beyond ``max_harm``,
  by the shared rule of :mod:`pex.experiment.guardrail`.

Effects are OLS regressions fitted by statsmodels with HC2
heteroskedasticity-robust errors: for a two-group comparison HC2 equals the
unbiased Neyman (Welch) variance of a difference in means, and with a
pre-period covariate the same regression is Lin's (2013) fully interacted
adjustment, which cannot hurt precision asymptotically.

When the spec's ``propensity`` column says that assignment probabilities vary
between units of an arm (e.g. P(treatment) = 0.8 for some users and 0.2 for
others), arm membership depends on the units' characteristics and a raw
difference in means is confounded: it mixes the effect with the difference
between the kinds of users each arm got. Each comparison of an arm with
control then weights every unit by 1 / P(assigned arm) (the Hajek, or
normalized inverse-propensity, estimator: the weighted group means estimate
the whole population's mean outcome under each arm) and fits the same
regressions by weighted least squares with HC2 errors, the covariate centred
at its weighted mean. With a pre-period covariate this is inverse-propensity
weighted regression adjustment, consistent when either the propensities
(known here, by design) or the linear outcome model are right. Propensities
constant within each arm need no weights (they would leave every group mean
unchanged), and those comparisons keep the unweighted estimators exactly.
``ArmEffect.method`` says which estimator produced each effect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pex.experiment.balance import BalanceResult, covariate_balance, inverse_propensity_weights
from pex.experiment.data import PROPENSITY, Dataset
from pex.experiment.guardrail import GuardrailRule
from pex.experiment.spec import MetricSpec

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio-mismatch check. ``ok`` is False when p < ``threshold``."""

    counts: dict[str, int]
    expected_shares: dict[str, float]
    chi2: float
    p_value: float
    ok: bool
    basis: str
    threshold: float = SRM_THRESHOLD

    def to_dict(self) -> dict:
        """The result as JSON."""
        return asdict(self)


@dataclass(frozen=True)
class ArmEffect:
    """Average effect of one arm against control on one metric.

    ``method`` is the estimator: ``ols`` (difference in means), ``cuped`` (Lin's interacted
    regression on the pre-period covariate), or, when propensities vary within the arm or control,
    their inverse-propensity-weighted versions ``weighted`` and ``weighted_cuped``. With weights,
    ``control_mean`` and ``arm_mean`` are the weighted (Hajek) means: estimates of the population's
    mean outcome under each arm, not the raw means of the units each arm happened to get.
    """

    metric: str
    arm: str
    n_control: int
    n_arm: int
    control_mean: float
    arm_mean: float
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    relative: float
    relative_se: float
    relative_ci_low: float
    relative_ci_high: float
    cuped: bool
    variance_reduction: float | None
    method: str = "ols"
    # the control mean the relative lift divides by (the regression's intercept), its standard error and its
    # covariance with ``estimate``: what Fieller's guardrail test needs (GuardrailRule.assess_means)
    baseline: float = float("nan")
    baseline_se: float = float("nan")
    baseline_cov: float = float("nan")

    def to_dict(self) -> dict:
        """The result as JSON."""
        return asdict(self)


@dataclass(frozen=True)
class GuardrailVerdict:
    """Is the arm's harm on a guardrail metric within ``max_harm``?

    ``harm`` is the relative change in the harmful direction (positive = worse);
    with a zero control mean it is the absolute change (``basis`` says which).
    ``verdict`` is ``pass`` when the one-sided upper bound of harm is at or
    below ``max_harm``, ``fail`` when the one-sided lower bound is above it, else
    ``inconclusive``. ``p_value`` tests H0: harm >= max_harm. The rule is
    :class:`pex.experiment.guardrail.GuardrailRule`; ``se`` is the standard error of
    ``harm`` (Fieller's at the limit), ``level`` the one-sided confidence level of
    the bounds and ``units_to_certify`` roughly how many units would let the upper
    bound pass with probability :data:`pex.experiment.guardrail.POWER` (None when
    the estimate is at or over the limit).
    """

    metric: str
    arm: str
    max_harm: float | None
    limit: float  # the rule's limit (GuardrailRule.limit): max_harm when relative, max_harm_abs, or 0 at a zero control mean
    harm: float
    harm_upper: float
    harm_lower: float
    p_value: float
    verdict: str
    basis: str = "relative"
    se: float = float("nan")
    level: float = 0.95
    units_to_certify: int | None = None
    max_harm_abs: float | None = None

    def to_dict(self) -> dict:
        """The result as JSON."""
        return asdict(self)


def srm_test_counts(counts: dict[str, int], shares: dict[str, float], basis: str = "allocation") -> SRMResult:
    """Chi-square goodness-of-fit of observed arm counts to expected shares."""
    arms = list(shares)
    observed = np.array([counts.get(a, 0) for a in arms], dtype=float)
    expected_share = np.array([shares[a] for a in arms], dtype=float)
    expected = observed.sum() * expected_share / expected_share.sum()
    chi2, p = stats.chisquare(observed, expected)
    return SRMResult(
        counts={a: int(c) for a, c in zip(arms, observed)},
        expected_shares={a: float(s) for a, s in zip(arms, expected_share / expected_share.sum())},
        chi2=float(chi2), p_value=float(p), ok=bool(p >= SRM_THRESHOLD), basis=basis,
    )


def srm_test(dataset: Dataset) -> SRMResult:
    """SRM test against the spec's allocation.

    Without an allocation, the expected shares are the mean assignment
    propensities when the spec names a propensity column, else an equal split
    (``basis`` says which).
    """
    spec, frame = dataset.spec, dataset.frame
    counts = dataset.arm_counts()
    if spec.allocation:
        return srm_test_counts(counts, spec.allocation, "allocation")
    if spec.propensity:
        # n_a / sum(1/p_i) over the arm's units is the Horvitz-Thompson estimate
        # of the arm's expected share: the plain mean of P(assigned arm) is not,
        # when propensities vary between units.
        inv = (1.0 / frame[spec.propensity]).groupby(frame[spec.arm]).sum().reindex(dataset.arms)
        shares = pd.Series(counts).reindex(dataset.arms) / inv
        return srm_test_counts(counts, (shares / shares.sum()).to_dict(), "propensity column")
    equal = {a: 1.0 / len(dataset.arms) for a in dataset.arms}
    return srm_test_counts(counts, equal, "equal split (no allocation in spec)")


def average_effects(dataset: Dataset, alpha: float = 0.05, cuped: bool = True) -> list[ArmEffect]:
    """Average effect of every non-control arm on every metric.

    Parameters
    ----------
    dataset
        A validated dataset.
    alpha
        1 - confidence level of the intervals (two-sided).
    cuped
        Adjust for the metric's pre-period covariate when the spec names one.
    """
    spec, frame = dataset.spec, dataset.frame
    arm_col = frame[spec.arm].to_numpy()
    propensity = frame[PROPENSITY].to_numpy(dtype=float)
    raw: list[dict] = []
    for metric in spec.metrics.values():
        y_all = frame[metric.column].to_numpy(dtype=float)
        pre_all = frame[metric.pre].to_numpy(dtype=float) if (cuped and metric.pre) else None
        for arm in dataset.arms[1:]:
            rows = (arm_col == spec.control) | (arm_col == arm)
            treat = (arm_col[rows] == arm).astype(float)
            pre = pre_all[rows] if pre_all is not None else None
            # With only P(assigned arm) known, 1/P over the units of control and this arm still gives
            # consistent (Hajek) means of Y(arm) and Y(control): each group is weighted to the population.
            weights = inverse_propensity_weights(propensity[rows], treat)
            raw.append(_pair_effect(metric, arm, treat, y_all[rows], pre, alpha, weights))
    if not raw:
        return []
    p = np.array([r["p_value"] for r in raw])
    holm = np.full(len(raw), np.nan)
    tested = np.isfinite(p)
    if tested.any():  # a comparison without a p-value (e.g. 2 units per arm) is not a test
        holm[tested] = multipletests(p[tested], method="holm")[1]
    return [ArmEffect(**r, p_holm=float(h)) for r, h in zip(raw, holm)]


def _design(treat: np.ndarray, pre: np.ndarray | None, weights: np.ndarray | None = None) -> np.ndarray:
    """Columns: intercept, treatment, then (optionally) centred pre-period terms.

    With the covariate centred and interacted with treatment, the intercept is
    the control mean and the treatment coefficient the average effect, both at
    the sample's covariate mean. Missing pre-period values are set to the mean
    with an indicator, so no unit is lost. A term enters only when it varies
    within both groups, keeps the design full rank and fits no unit exactly:
    otherwise its slope for one group is not identified.

    With ``weights`` (inverse propensities) the means are weighted, so the
    covariate is centred at the estimate of its population mean, and leverage
    is that of the weighted fit.
    """
    cols = [np.ones_like(treat), treat]
    if pre is None:
        return np.column_stack(cols)
    miss = np.isnan(pre)
    if not (~miss).any():
        fill = 0.0
    elif weights is None:
        fill = np.nanmean(pre)
    else:
        fill = np.average(pre[~miss], weights=weights[~miss])
    x = np.where(miss, fill, pre)
    groups = (treat == 0, treat == 1)
    for c in (x - _mean(x, weights), miss - _mean(miss, weights)):
        if not all(g.sum() > 1 and np.ptp(c[g]) > 0 for g in groups):
            continue
        candidate = np.column_stack([*cols, c, c * treat])
        whitened = candidate if weights is None else candidate * np.sqrt(weights)[:, None]
        if np.linalg.matrix_rank(candidate) == candidate.shape[1] and _max_leverage(whitened) < 1 - 1e-8:
            cols += [c, c * treat]
    return np.column_stack(cols)


def _mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    """The plain mean, or the weighted (Hajek) mean when there are weights."""
    return values.mean() if weights is None else np.average(values, weights=weights)


def _max_leverage(X: np.ndarray) -> float:
    """Largest hat-matrix diagonal; at 1 a unit is fitted exactly and HC2 divides by zero."""
    q, _ = np.linalg.qr(X)
    return float((q**2).sum(axis=1).max())


def _robust_fit(y: np.ndarray, X: np.ndarray, weights: np.ndarray | None = None):
    """OLS, or WLS with ``weights``, with HC2 errors (t reference distribution)."""
    if weights is None:
        return sm.OLS(y, X).fit(cov_type="HC2", use_t=True)
    return sm.WLS(y, X, weights=weights).fit(cov_type="HC2", use_t=True)


def _usable(fit) -> bool:
    bse = np.asarray(fit.bse)
    return fit.df_resid > 0 and bool(np.all(np.isfinite(bse))) and bse[1] > 0


def _pair_effect(metric: MetricSpec, arm: str, treat: np.ndarray, y: np.ndarray, pre: np.ndarray | None, alpha: float,
                 weights: np.ndarray | None = None) -> dict:
    """One arm against control on one metric (fields of :class:`ArmEffect` but ``p_holm``).

    ``weights`` are the units' inverse propensities, or None when propensities are constant
    within each group (the unweighted estimators).
    """
    n0, n1 = int((treat == 0).sum()), int((treat == 1).sum())
    ctrl, trt = treat == 0, treat == 1
    if weights is None:
        m0, m1 = float(y[ctrl].mean()), float(y[trt].mean())
    else:
        m0, m1 = float(np.average(y[ctrl], weights=weights[ctrl])), float(np.average(y[trt], weights=weights[trt]))
    base = {"metric": metric.name, "arm": arm, "n_control": n0, "n_arm": n1, "control_mean": m0, "arm_mean": m1}
    if np.ptp(y) == 0:
        # A metric with one value in every unit: the effect is exactly zero and
        # regression p-values would only reflect floating-point noise.
        rel = 0.0 if m0 != 0 else float("nan")
        return {**base, "estimate": 0.0, "se": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0,
                "relative": rel, "relative_se": 0.0 if m0 != 0 else float("nan"),
                "relative_ci_low": rel, "relative_ci_high": rel, "cuped": False, "variance_reduction": None,
                "method": _method(weights is not None, False), "baseline": m0, "baseline_se": 0.0, "baseline_cov": 0.0}
    plain = _robust_fit(y, _design(treat, None), weights)
    fit, adjusted = plain, False
    if pre is not None:
        X = _design(treat, pre, weights)
        if X.shape[1] > 2:
            candidate = _robust_fit(y, X, weights)
            if _usable(candidate):
                fit, adjusted = candidate, True
    params, cov = np.asarray(fit.params), np.asarray(fit.cov_params())
    a, b = params[0], params[1]
    se = float(np.sqrt(cov[1, 1]))
    ci = np.asarray(fit.conf_int(alpha=alpha))[1]
    tcrit = float(stats.t.ppf(1 - alpha / 2, fit.df_resid)) if fit.df_resid > 0 else float("nan")
    # Relative lift b / |a| by the delta method on the (intercept, effect)
    # covariance. Dividing by |a| keeps the sign meaning "up" for metrics with
    # a negative baseline; with a zero baseline a relative change is undefined.
    scale = max(abs(m0), abs(m1), float(np.std(y)))
    if abs(a) > 1e-9 * scale:
        rel = b / abs(a)
        grad = np.array([-b * np.sign(a) / a**2, 1 / abs(a)])
        rel_se = float(np.sqrt(grad @ cov[:2, :2] @ grad))
    else:
        rel, rel_se = float("nan"), float("nan")
    plain_var = float(np.asarray(plain.cov_params())[1, 1])
    p_value = float(np.asarray(fit.pvalues)[1]) if se > 0 and np.isfinite(se) else float("nan")
    return {
        **base,
        "estimate": float(b),
        "se": se,
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "p_value": p_value,
        "relative": float(rel),
        "relative_se": rel_se,
        "relative_ci_low": float(rel - tcrit * rel_se),
        "relative_ci_high": float(rel + tcrit * rel_se),
        "cuped": adjusted,
        "variance_reduction": float(1 - se**2 / plain_var) if adjusted and plain_var > 0 else None,
        "method": _method(weights is not None, adjusted),
        "baseline": float(a),
        "baseline_se": float(np.sqrt(cov[0, 0])),
        "baseline_cov": float(cov[0, 1]),
    }


def _method(weighted: bool, cuped: bool) -> str:
    """``ArmEffect.method``: ols, cuped, weighted or weighted_cuped."""
    if weighted:
        return "weighted_cuped" if cuped else "weighted"
    return "cuped" if cuped else "ols"


def guardrail_verdicts(dataset: Dataset, effects: list[ArmEffect], alpha: float = 0.05) -> list[GuardrailVerdict]:
    """One-sided non-inferiority test per guardrail metric x arm (level ``alpha``).

    Harm is relative to the control mean. When the control mean is zero a
    relative change is undefined and any harm is unbounded in relative terms,
    so the test falls back to the absolute change against zero (``basis``).
    The verdict is :meth:`pex.experiment.guardrail.GuardrailRule.verdict`, the rule every
    stage of pex applies.
    """
    out = []
    for e in effects:
        metric = dataset.spec.metrics[e.metric]
        if metric.role == "guardrail":
            out.append(_guardrail_verdict(metric, e, alpha))
    return out


def _guardrail_verdict(metric: MetricSpec, e: ArmEffect, alpha: float) -> GuardrailVerdict:
    # The relative lift is undefined exactly when the (adjusted) control mean is zero to rounding:
    # the rule then needs a zero control mean, so that it tests the absolute change against 0.
    # Harm is relative to the mean the relative lift divides by (the regression's intercept), tested by Fieller's
    # test at the limit on the (intercept, effect) covariance, as every other stage tests it.
    control_mean = (e.baseline if np.isfinite(e.baseline) else e.control_mean) if np.isfinite(e.relative) else 0.0
    rule = GuardrailRule(metric=e.metric, goal=metric.goal, max_harm=metric.max_harm, control_mean=control_mean,
                         max_harm_abs=metric.max_harm_abs)
    if rule.relative and not (np.isfinite(e.baseline_se) and np.isfinite(e.baseline_cov)):
        # an effect without the intercept's (co)variance (stored before it was kept): the delta method's relative SE
        harm = rule.verdict(rule.sign * e.relative, e.relative_se, n=e.n_control + e.n_arm, alpha=alpha)
    else:
        harm = rule.assess_means(e.estimate, e.se, e.baseline_se, e.baseline_cov, n=e.n_control + e.n_arm, alpha=alpha)
    basis = "relative" if rule.relative else "absolute" if rule.max_harm_abs is not None else "absolute (control mean is 0)"
    return GuardrailVerdict(
        metric=e.metric, arm=e.arm, max_harm=metric.max_harm, limit=harm.limit, harm=harm.estimate,
        harm_upper=harm.upper, harm_lower=harm.lower, p_value=_harm_p_value(harm.estimate, harm.se, harm.limit),
        verdict=harm.verdict, basis=basis, se=harm.se, level=harm.level, units_to_certify=harm.units_to_certify(),
        max_harm_abs=metric.max_harm_abs,
    )


def _harm_p_value(harm: float, se: float, limit: float) -> float:
    """One-sided p-value of H0: harm >= limit (normal reference, as the rule's bounds)."""
    if se > 0 and np.isfinite(se):
        return float(stats.norm.cdf((harm - limit) / se))
    return float("nan") if not np.isfinite(se) else float(harm >= limit)


@dataclass
class Analysis:
    """Health and average effects of one dataset version."""

    experiment: str
    n_units: int
    arms: list[str]
    control: str
    srm: SRMResult
    effects: list[ArmEffect]
    guardrails: list[GuardrailVerdict]
    balance: BalanceResult
    dataset: dict

    def effects_frame(self) -> pd.DataFrame:
        """The average effects as a table, one row per metric and arm."""
        return pd.DataFrame([e.to_dict() for e in self.effects])

    def to_dict(self) -> dict:
        """The whole analysis as JSON."""
        return {
            "experiment": self.experiment,
            "n_units": self.n_units,
            "arms": self.arms,
            "control": self.control,
            "srm": self.srm.to_dict(),
            "effects": [e.to_dict() for e in self.effects],
            "guardrails": [g.to_dict() for g in self.guardrails],
            "balance": self.balance.to_dict(),
            "dataset": self.dataset,
        }


def analyze(dataset: Dataset, alpha: float = 0.05) -> Analysis:
    """SRM check, covariate balance, average effects and guardrail verdicts in one call."""
    effects = average_effects(dataset, alpha=alpha)
    return Analysis(
        experiment=dataset.spec.name,
        n_units=dataset.n_units,
        arms=list(dataset.arms),
        control=dataset.spec.control,
        srm=srm_test(dataset),
        effects=effects,
        guardrails=guardrail_verdicts(dataset, effects, alpha=alpha),
        balance=covariate_balance(dataset),
        dataset=dataset.summary(),
    )
