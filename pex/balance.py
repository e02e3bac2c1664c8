"""Covariate balance: does each arm look like control before treatment?

Randomization makes arms alike in expectation; a large standardized mean
difference (SMD) on a pre-treatment column points at broken assignment,
logging that depends on the arm, or filtering after assignment. The rule of
thumb flags |SMD| > 0.1 (Austin 2009). Categorical columns are compared level by
level (SMD of the level's indicator) and missing values by the SMD of the
missing-value indicator, so a feature that goes missing more often in one arm
is caught too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pex.data import Dataset

SMD_THRESHOLD = 0.1


@dataclass(frozen=True)
class Imbalance:
    """The largest standardized difference of one column between an arm and control."""

    column: str
    arm: str
    smd: float
    detail: str  # which comparison: "mean", "missing", or "level <name>"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BalanceResult:
    worst: list[Imbalance]  # per column, the largest |SMD| over arms, largest first
    threshold: float = SMD_THRESHOLD

    @property
    def ok(self) -> bool:
        return all(abs(i.smd) <= self.threshold for i in self.worst)

    @property
    def flagged(self) -> list[Imbalance]:
        return [i for i in self.worst if abs(i.smd) > self.threshold]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "threshold": self.threshold, "worst": [i.to_dict() for i in self.worst]}


def _smd(x1: np.ndarray, x0: np.ndarray) -> float:
    if len(x1) < 2 or len(x0) < 2:
        return 0.0
    pooled = np.sqrt((x1.var(ddof=1) + x0.var(ddof=1)) / 2)
    diff = x1.mean() - x0.mean()
    if pooled == 0:
        return 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    return float(diff / pooled)


def _column_comparisons(series: pd.Series, kind: str, in_arm: np.ndarray, in_ctrl: np.ndarray, max_levels: int = 50):
    missing = series.isna().to_numpy()
    if missing.any():
        yield "missing", _smd(missing[in_arm].astype(float), missing[in_ctrl].astype(float))
    if kind == "numeric":
        x = series.to_numpy(dtype=float)
        ok = ~missing
        yield "mean", _smd(x[in_arm & ok], x[in_ctrl & ok])
    else:
        values = series.astype("string")
        for level in values.value_counts().index[:max_levels]:
            ind = (values == level).fillna(False).to_numpy(dtype=float)
            yield f"level {level}", _smd(ind[in_arm], ind[in_ctrl])


def covariate_balance(dataset: Dataset) -> BalanceResult:
    """Largest |SMD| per feature and pre-period column, over all arms vs control."""
    spec, frame = dataset.spec, dataset.frame
    arm = frame[spec.arm].to_numpy()
    in_ctrl = arm == spec.control
    columns = {**dataset.features, **{c: "numeric" for c in spec.pre_columns}}
    worst: list[Imbalance] = []
    for col, kind in columns.items():
        best: Imbalance | None = None
        for a in dataset.arms[1:]:
            in_arm = arm == a
            for detail, smd in _column_comparisons(frame[col], kind, in_arm, in_ctrl):
                if best is None or abs(smd) > abs(best.smd):
                    best = Imbalance(column=col, arm=a, smd=smd, detail=detail)
        if best is not None:
            worst.append(best)
    worst.sort(key=lambda i: -abs(i.smd))
    return BalanceResult(worst=worst)
