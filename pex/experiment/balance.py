"""Covariate balance: does each arm look like control before treatment?

Randomization makes arms alike in expectation; a large standardized mean
difference (SMD) on a pre-treatment column points at broken assignment,
logging that depends on the arm, or filtering after assignment. The rule of
thumb flags |SMD| > 0.1 (Austin 2009). Categorical columns are compared level by
level (SMD of the level's indicator) and missing values by the SMD of the
missing-value indicator, so a feature that goes missing more often in one arm
is caught too.

When assignment probabilities vary between units (the spec's ``propensity``
column), arms differ by design: a unit with a high P(treatment | x) lands in
treatment more often, so raw arm means of x differ even when assignment works
as planned. Each unit is then weighted by 1 / P(assigned arm), which makes
every arm's weighted covariate distribution an estimate of the whole
population's; the SMD of weighted means over the weighted SDs (Austin & Stuart
2015) is then near zero exactly when assignment followed the propensities.
With propensities constant within each arm the weights change nothing and
the unweighted SMD is used, unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pex.experiment.data import PROPENSITY, Dataset

SMD_THRESHOLD = 0.1
PROPENSITY_RTOL = 1e-9  # spread of P(assigned arm) within an arm, relative to its largest, that counts as varying


@dataclass(frozen=True)
class Imbalance:
    """The largest standardized difference of one column between an arm and control."""

    column: str
    arm: str
    smd: float
    detail: str  # which comparison: "mean", "missing", or "level <name>"

    def to_dict(self) -> dict:
        """The imbalance as JSON."""
        return asdict(self)


@dataclass(frozen=True)
class BalanceResult:
    """Covariate balance across arms: one test per feature and arm, and the overall verdict."""
    worst: list[Imbalance]  # per column, the largest |SMD| over arms, largest first
    threshold: float = SMD_THRESHOLD

    @property
    def ok(self) -> bool:
        """True when no feature is flagged as imbalanced."""
        return all(abs(i.smd) <= self.threshold for i in self.worst)

    @property
    def flagged(self) -> list[Imbalance]:
        """The features flagged as imbalanced."""
        return [i for i in self.worst if abs(i.smd) > self.threshold]

    def to_dict(self) -> dict:
        """The balance check as JSON."""
        return {"ok": self.ok, "threshold": self.threshold, "worst": [i.to_dict() for i in self.worst]}


def inverse_propensity_weights(propensity: np.ndarray, groups: np.ndarray) -> np.ndarray | None:
    """1 / P(assigned arm) per unit, or None when the propensity is constant within every group.

    Parameters
    ----------
    propensity
        Each unit's probability of the arm it was assigned (``pex.experiment.data.PROPENSITY``).
    groups
        Each unit's arm (or treatment indicator); the units compared, e.g. control and one arm.

    Returns
    -------
    The weights, aligned with ``propensity``; None when within each group every unit has the
    same propensity (up to :data:`PROPENSITY_RTOL`). Weights constant within a group leave each
    group's means unchanged, so callers then keep their unweighted estimators exactly.
    """
    for g in pd.unique(groups):
        p = propensity[groups == g]
        if np.ptp(p) > PROPENSITY_RTOL * np.max(p):
            return 1.0 / propensity
    return None


def _smd(x1: np.ndarray, x0: np.ndarray, w1: np.ndarray | None = None, w0: np.ndarray | None = None) -> float:
    """Standardized mean difference of ``x1`` (arm) against ``x0`` (control).

    With weights ``w1`` and ``w0`` (both or neither), the means are weighted and the variances are
    the unbiased reliability-weighted ones (``np.cov`` with ``aweights``), as in Austin & Stuart (2015).
    """
    if len(x1) < 2 or len(x0) < 2:
        return 0.0
    if w1 is None or w0 is None:
        pooled = np.sqrt((x1.var(ddof=1) + x0.var(ddof=1)) / 2)
        diff = x1.mean() - x0.mean()
    else:
        pooled = np.sqrt((np.cov(x1, aweights=w1) + np.cov(x0, aweights=w0)) / 2)
        diff = np.average(x1, weights=w1) - np.average(x0, weights=w0)
    if pooled == 0:
        return 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    return float(diff / pooled)


def _column_comparisons(series: pd.Series, kind: str, in_arm: np.ndarray, in_ctrl: np.ndarray,
                        weights: np.ndarray | None = None, max_levels: int = 50):
    """(detail, SMD) pairs for one column, arm against control; ``weights`` (all rows) or None for unweighted."""

    def smd(values: np.ndarray, arm_rows: np.ndarray, ctrl_rows: np.ndarray) -> float:
        if weights is None:
            return _smd(values[arm_rows], values[ctrl_rows])
        return _smd(values[arm_rows], values[ctrl_rows], weights[arm_rows], weights[ctrl_rows])

    missing = series.isna().to_numpy()
    if missing.any():
        yield "missing", smd(missing.astype(float), in_arm, in_ctrl)
    if kind == "numeric":
        x = series.to_numpy(dtype=float)
        ok = ~missing
        yield "mean", smd(x, in_arm & ok, in_ctrl & ok)
    else:
        values = series.astype("string")
        for level in values.value_counts().index[:max_levels]:
            ind = (values == level).fillna(False).to_numpy(dtype=float)
            yield f"level {level}", smd(ind, in_arm, in_ctrl)


def covariate_balance(dataset: Dataset) -> BalanceResult:
    """Largest |SMD| per feature and pre-period column, over all arms vs control.

    An arm whose units (or control's) have varying propensities is compared with inverse-propensity
    weights (see the module docstring); otherwise the comparison is unweighted.
    """
    spec, frame = dataset.spec, dataset.frame
    arm = frame[spec.arm].to_numpy()
    in_ctrl = arm == spec.control
    propensity = frame[PROPENSITY].to_numpy(dtype=float)
    weights = {a: _pair_weights(propensity, arm, in_ctrl | (arm == a)) for a in dataset.arms[1:]}
    columns = {**dataset.features, **{c: "numeric" for c in spec.pre_columns}}
    worst: list[Imbalance] = []
    for col, kind in columns.items():
        best: Imbalance | None = None
        for a in dataset.arms[1:]:
            in_arm = arm == a
            for detail, smd in _column_comparisons(frame[col], kind, in_arm, in_ctrl, weights[a]):
                if best is None or abs(smd) > abs(best.smd):
                    best = Imbalance(column=col, arm=a, smd=smd, detail=detail)
        if best is not None:
            worst.append(best)
    worst.sort(key=lambda i: -abs(i.smd))
    return BalanceResult(worst=worst)


def _pair_weights(propensity: np.ndarray, arm: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """Inverse-propensity weights for all rows (only ``rows``, control and one arm, are read), or None."""
    w = inverse_propensity_weights(propensity[rows], arm[rows])
    if w is None:
        return None
    out = np.full(len(arm), np.nan)
    out[rows] = w
    return out
