"""Is there heterogeneity at all? Calibration test and Qini curves on held-out data.

Both use out-of-fold effect predictions S_i (made without unit i) and the
doubly-robust pseudo-outcomes psi_i, whose conditional mean is the true effect.

* Best linear predictor test (Chernozhukov, Demirer, Duflo & Fernandez-Val,
  2018): regress psi on [1, S - mean(S)] with HC2 errors. The slope is 1 for
  perfectly calibrated predictions and 0 when they carry no information about
  how effects vary; a slope significantly above 0 (one-sided) is evidence that
  effects differ across units.
* Qini curve: units ranked by S, the estimated cumulative effect of treating
  the top share q, (1/n) sum of psi over the top q, against q times the average
  effect. Its area, (1/n) sum psi_i (1/2 - (rank_i - 1/2)/n), is linear in psi,
  so it gets a standard error the same way.

The test runs on the mean of all fitted learners (not the selected one):
choosing the learner on the same pseudo-outcomes would favour predictions
correlated with them and make the test too eager.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests

DIFFER = "effects differ across units"
NO_EVIDENCE = "no evidence that effects differ"


@dataclass(frozen=True)
class HeterogeneityTest:
    """Do the effects of one arm on one metric differ across units? Calibration slope and Qini area, with tests."""
    metric: str
    arm: str
    ate: float  # BLP intercept: the average effect
    slope: float  # BLP slope on the centred prediction (1 = calibrated, 0 = uninformative)
    slope_ci_low: float
    slope_ci_high: float
    p_value: float  # one-sided, H0: slope <= 0
    p_holm: float
    verdict: str
    qini_area: float
    qini_area_se: float
    qini_curve: list[tuple[float, float]]  # (share targeted, cumulative effect per unit)

    def to_dict(self) -> dict:
        """The test as JSON."""
        return asdict(self)


def blp_test(pseudo: np.ndarray, prediction: np.ndarray) -> tuple[float, float, float, float, float]:
    """(ate, slope, slope_ci_low, slope_ci_high, one-sided p) of the BLP regression."""
    s = prediction - prediction.mean()
    if np.ptp(s) <= 1e-12 * max(1.0, float(np.abs(prediction).max())):
        return float(pseudo.mean()), 0.0, float("nan"), float("nan"), 1.0
    fit = sm.OLS(pseudo, np.column_stack([np.ones_like(s), s])).fit(cov_type="HC2", use_t=True)
    ate, slope = (float(v) for v in np.asarray(fit.params))
    lo, hi = np.asarray(fit.conf_int(alpha=0.05))[1]
    t = slope / float(np.asarray(fit.bse)[1])
    p = float(stats.t.sf(t, fit.df_resid))
    return ate, slope, float(lo), float(hi), p


def qini(pseudo: np.ndarray, prediction: np.ndarray, points: int = 20) -> tuple[float, float, list[tuple[float, float]]]:
    """(area, its standard error, curve) of the Qini curve ranked by ``prediction``.

    Units with tied predictions share their average rank and enter the curve
    together (linearly within the tie), so neither the area nor the curve
    depends on the order of the rows.
    """
    n = len(pseudo)
    rank = stats.rankdata(-prediction, method="average") / n
    contrib = pseudo * (0.5 - rank + 0.5 / n)
    area = float(contrib.mean())
    se = float(contrib.std(ddof=1) / np.sqrt(n))
    # cumulative effect at the end of each tie group, interpolated in between
    values, inverse = np.unique(-prediction, return_inverse=True)
    group_sum = np.bincount(inverse, weights=pseudo, minlength=len(values))
    group_n = np.bincount(inverse, minlength=len(values))
    x = np.concatenate([[0.0], np.cumsum(group_n) / n])
    y = np.concatenate([[0.0], np.cumsum(group_sum) / n])
    grid = np.linspace(0, 1, points + 1)
    curve = [(float(q), float(v)) for q, v in zip(grid, np.interp(grid, x, y))]
    return area, se, curve


def heterogeneity_tests(
    pseudo: dict[str, np.ndarray],
    predictions: dict[str, np.ndarray],
    arms: list[str],
    alpha: float = 0.05,
) -> list[HeterogeneityTest]:
    """Per metric and treated arm: BLP test (Holm-adjusted across all) and Qini curve.

    ``pseudo[metric]`` and ``predictions[metric]`` have shape (n_units, n_treated_arms).
    """
    raw = []
    for metric, psi in pseudo.items():
        for j, arm in enumerate(arms):
            ate, slope, lo, hi, p = blp_test(psi[:, j], predictions[metric][:, j])
            area, area_se, curve = qini(psi[:, j], predictions[metric][:, j])
            raw.append(dict(metric=metric, arm=arm, ate=ate, slope=slope, slope_ci_low=lo, slope_ci_high=hi,
                            p_value=p, qini_area=area, qini_area_se=area_se, qini_curve=curve))
    if not raw:
        return []
    holm = multipletests([r["p_value"] for r in raw], method="holm")[1]
    return [HeterogeneityTest(**r, p_holm=float(h), verdict=DIFFER if h < alpha else NO_EVIDENCE) for r, h in zip(raw, holm)]
