"""Segments that respond: a shallow tree over all predicted effects at once.

A multi-output regression tree (scikit-learn) is fitted to the out-of-fold
predicted effects of every arm x metric (each standardised, so no metric
dominates by its units). Its leaves read as rules.

Honesty: the tree is grown on the units of one cross-fitting fold, from their
out-of-fold predictions, which were made by models trained on the other folds.
So the splits depend on those units' features but not on their outcomes, and
each leaf's effects are then estimated from the same units' doubly-robust
pseudo-outcomes (whose outcome models were also trained on the other folds),
with 95% CIs. Units of the other folds cannot be used for the estimates: their
outcomes shaped the predictions the tree was grown on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeRegressor

from pex.experiment.features import FeatureEncoder


@dataclass(frozen=True)
class Segment:
    """A group of units, described by feature conditions, whose effect differs from the average."""
    rule: str
    share: float  # of all units
    n_estimation: int
    effects: list[dict]  # per metric x arm: predicted, estimate, ci_low, ci_high

    def to_dict(self) -> dict:
        """The segment as JSON."""
        return asdict(self)


def _design(encoder: FeatureEncoder, X: np.ndarray, max_levels: int = 30) -> tuple[np.ndarray, list[tuple[str, str, str | None]]]:
    """Numeric features as they are (NaN allowed), categorical ones as one indicator
    per level (the ``max_levels`` most frequent: a rule on a rarer level would
    describe too few units to matter, and the indicators cost memory)."""
    cols, meta = [], []
    for j, name in enumerate(encoder.columns):
        if encoder.kinds[name] == "numeric":
            cols.append(X[:, j].astype(np.float32))
            meta.append((name, "numeric", None))
        else:
            codes = X[:, j]
            counts = np.bincount(codes[~np.isnan(codes)].astype(int), minlength=len(encoder.categories[name]))
            for code in np.argsort(-counts, kind="stable")[:max_levels]:
                if counts[code] == 0:
                    break
                cols.append((codes == code).astype(np.float32))
                meta.append((name, "level", encoder.categories[name][code]))
    if not cols:
        return np.empty((len(X), 0), dtype=np.float32), []
    return np.column_stack(cols), meta


def find_segments(
    encoder: FeatureEncoder,
    X: np.ndarray,
    predicted: dict[tuple[str, str], np.ndarray],
    pseudo: dict[tuple[str, str], np.ndarray],
    grow: np.ndarray,
    *,
    max_depth: int = 3,
    min_share: float = 0.05,
    seed: int = 0,
) -> list[Segment]:
    """Leaves of an honest multi-output tree on the predicted effects.

    ``grow`` marks the units (one cross-fitting fold) that grow the tree and
    estimate its leaves; see the module docstring for why these are the same.
    """
    keys = list(predicted)
    D, meta = _design(encoder, X)
    leaves_all = np.zeros(len(X), dtype=int)
    rules = {0: "all units"}
    if D.shape[1] > 0:
        Y = np.column_stack([predicted[k] for k in keys])
        scale = Y.std(axis=0)
        Y = (Y - Y.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
        min_leaf = max(int(min_share * grow.sum()), 20)
        tree = DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=min_leaf, random_state=seed).fit(D[grow], Y[grow])
        leaves_all = tree.apply(D)
        rules = _leaf_rules(tree, meta, D)
    segments = []
    for leaf, rule in rules.items():
        in_leaf = leaves_all == leaf
        rows = in_leaf & grow
        effects = []
        for k in keys:
            psi = pseudo[k][rows]
            m = float(psi.mean()) if len(psi) else float("nan")
            se = float(psi.std(ddof=1) / np.sqrt(len(psi))) if len(psi) > 1 else float("nan")
            effects.append({"metric": k[0], "arm": k[1], "predicted": float(predicted[k][in_leaf].mean()),
                            "estimate": m, "ci_low": m - 1.96 * se, "ci_high": m + 1.96 * se})
        segments.append(Segment(rule=rule, share=float(in_leaf.mean()), n_estimation=int(rows.sum()), effects=effects))
    return segments


def _leaf_rules(tree: DecisionTreeRegressor, meta, D: np.ndarray) -> dict[int, str]:
    t = tree.tree_
    has_missing = np.isnan(D).any(axis=0)
    rules: dict[int, str] = {}

    def walk(node: int, conds: list[tuple]) -> None:
        if t.children_left[node] == -1:
            rules[node] = _render(conds) or "all units"
            return
        j = t.feature[node]
        name, kind, level = meta[j]
        # "or missing" only where the feature has missing values to route
        miss_left = bool(t.missing_go_to_left[node]) if has_missing[j] else None
        if kind == "level":
            walk(t.children_left[node], [*conds, (name, "ne", level)])
            walk(t.children_right[node], [*conds, (name, "eq", level)])
        else:
            thr = _readable_threshold(D[:, j], float(t.threshold[node]))
            walk(t.children_left[node], [*conds, (name, "le", thr, miss_left is True)])
            walk(t.children_right[node], [*conds, (name, "gt", thr, miss_left is False)])

    walk(0, [])
    return rules


def _readable_threshold(values: np.ndarray, threshold: float) -> float:
    """The shortest decimal that splits the observed values exactly as ``threshold`` does."""
    below = values[values <= threshold]
    above = values[values > threshold]
    lo = float(below.max()) if below.size else -np.inf
    hi = float(above.min()) if above.size else np.inf
    for digits in range(1, 18):
        r = float(f"{threshold:.{digits}g}")
        if lo <= r < hi:
            return r
    return threshold


def _render(conds: list[tuple]) -> str:
    """Merge conditions per feature into readable clauses."""
    by_feature: dict[str, dict] = {}
    for c in conds:
        f = by_feature.setdefault(c[0], {"eq": None, "ne": [], "lo": None, "hi": None, "missing": True})
        if c[1] == "eq":
            f["eq"] = c[2]
        elif c[1] == "ne":
            f["ne"].append(c[2])
        else:
            op, thr, with_missing = c[1], c[2], c[3]
            if op == "le":
                f["hi"] = thr if f["hi"] is None else min(f["hi"], thr)
            else:
                f["lo"] = thr if f["lo"] is None else max(f["lo"], thr)
            f["missing"] = f["missing"] and with_missing
    parts = []
    for name, f in by_feature.items():
        if f["eq"] is not None:
            parts.append(f"{name} = {f['eq']}")
        elif f["ne"]:
            parts.append(f"{name} != {f['ne'][0]}" if len(f["ne"]) == 1 else f"{name} not in {{{', '.join(map(str, f['ne']))}}}")
        if f["lo"] is not None or f["hi"] is not None:
            if f["lo"] is not None and f["hi"] is not None:
                clause = f"{_num(f['lo'])} < {name} <= {_num(f['hi'])}"
            elif f["hi"] is not None:
                clause = f"{name} <= {_num(f['hi'])}"
            else:
                clause = f"{name} > {_num(f['lo'])}"
            parts.append(f"({clause} or missing)" if f["missing"] else clause)
    return " and ".join(parts)


def _num(x: float) -> str:
    return np.format_float_positional(np.float64(x), unique=True, trim="-")


def segments_frame(segments: list[Segment]) -> pd.DataFrame:
    """Segments as a table, one row per segment."""
    rows = []
    for s in segments:
        for e in s.effects:
            rows.append({"rule": s.rule, "share": s.share, **e})
    return pd.DataFrame(rows)
