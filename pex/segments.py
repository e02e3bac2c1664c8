"""Segments that respond: a shallow tree over all predicted effects at once.

A multi-output regression tree (scikit-learn) is fitted to the out-of-fold
predicted effects of every arm x metric (each standardised, so no metric
dominates by its units). Its leaves read as rules. The tree is honest: it is
grown on one random half of the units and each leaf's effects are estimated on
the other half from the doubly-robust pseudo-outcomes, with 95% CIs, so a
leaf's numbers are not the ones the split was chosen to make large.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeRegressor

from pex.features import FeatureEncoder


@dataclass(frozen=True)
class Segment:
    rule: str
    share: float  # of all units
    n_estimation: int
    effects: list[dict]  # per metric x arm: predicted, estimate, ci_low, ci_high

    def to_dict(self) -> dict:
        return asdict(self)


def _design(encoder: FeatureEncoder, X: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str, str | None]]]:
    """Numeric features as they are (NaN allowed), categorical ones as one indicator per level."""
    cols, meta = [], []
    for j, name in enumerate(encoder.columns):
        if encoder.kinds[name] == "numeric":
            cols.append(X[:, j])
            meta.append((name, "numeric", None))
        else:
            for code, level in enumerate(encoder.categories[name]):
                cols.append((X[:, j] == code).astype(float))
                meta.append((name, "level", level))
    return np.column_stack(cols), meta


def find_segments(
    encoder: FeatureEncoder,
    X: np.ndarray,
    predicted: dict[tuple[str, str], np.ndarray],
    pseudo: dict[tuple[str, str], np.ndarray],
    *,
    max_depth: int = 3,
    min_share: float = 0.05,
    seed: int = 0,
) -> list[Segment]:
    """Leaves of an honest multi-output tree on the predicted effects, largest effect spread first."""
    keys = list(predicted)
    n = len(X)
    D, meta = _design(encoder, X)
    Y = np.column_stack([predicted[k] for k in keys])
    scale = Y.std(axis=0)
    Y = (Y - Y.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    half = np.random.default_rng(seed).permutation(n) < n // 2
    min_leaf = max(int(min_share * half.sum()), 20)
    tree = DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=min_leaf, random_state=seed).fit(D[half], Y[half])
    leaves_all = tree.apply(D)
    est = ~half
    segments = []
    has_missing = np.isnan(D[half]).any(axis=0)
    for leaf, rule in _leaf_rules(tree, meta, has_missing).items():
        in_leaf = leaves_all == leaf
        rows = in_leaf & est
        effects = []
        for k in keys:
            psi = pseudo[k][rows]
            m = float(psi.mean()) if len(psi) else float("nan")
            se = float(psi.std(ddof=1) / np.sqrt(len(psi))) if len(psi) > 1 else float("nan")
            effects.append({"metric": k[0], "arm": k[1], "predicted": float(predicted[k][in_leaf].mean()),
                            "estimate": m, "ci_low": m - 1.96 * se, "ci_high": m + 1.96 * se})
        segments.append(Segment(rule=rule, share=float(in_leaf.mean()), n_estimation=int(rows.sum()), effects=effects))
    return segments


def _leaf_rules(tree: DecisionTreeRegressor, meta, has_missing: np.ndarray) -> dict[int, str]:
    t = tree.tree_
    rules: dict[int, str] = {}

    def walk(node: int, conds: list[tuple]) -> None:
        if t.children_left[node] == -1:
            rules[node] = _render(conds) or "all units"
            return
        name, kind, level = meta[t.feature[node]]
        thr = float(t.threshold[node])
        # "or missing" only where the feature had missing values to route
        miss_left = bool(t.missing_go_to_left[node]) if has_missing[t.feature[node]] else None
        if kind == "level":
            walk(t.children_left[node], conds + [(name, "ne", level)])
            walk(t.children_right[node], conds + [(name, "eq", level)])
        else:
            walk(t.children_left[node], conds + [(name, "le", thr, miss_left is True)])
            walk(t.children_right[node], conds + [(name, "gt", thr, miss_left is False)])

    walk(0, [])
    return rules


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
    return f"{x:.4g}"


def segments_frame(segments: list[Segment]) -> pd.DataFrame:
    rows = []
    for s in segments:
        for e in s.effects:
            rows.append({"rule": s.rule, "share": s.share, **e})
    return pd.DataFrame(rows)
