"""Distilled tree policies: shallow if-else trees that imitate a value-model policy.

A tree needs no model to serve and can be read by the experiment owner
(arXiv 2111.03267, "Interpretable Personalized Experimentation"). It is fitted
as a weighted classifier whose labels are the value policy's arms and whose
weights are each unit's gap between its best and second-best arm score, so
mistakes on units where the choice matters cost more. Each leaf then takes
the arm with the highest total score of its units (the imitation target is
the decision, but what counts is value), and sibling leaves with the same arm
are merged.

Depth is chosen on held-out value: trees are fitted on one half of the
building units and valued on the other half with out-of-fold doubly-robust
pseudo-outcomes (honest per-unit effect signals, see :mod:`pex.hte`). The
smallest depth within one standard error of the best is kept: a tree people
can read beats a deeper one that is not measurably better (a tree giving every
unit one arm is passed over when a depth within reach personalizes). Final trees are
refitted on all building units.

scikit-learn's CART does the fitting (it handles missing values natively and
records where they go); this module only translates the fitted tree into a
``pex.policy/1`` tree in which missing values and unseen categories follow the
same branch as at training time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

from pex.experiment.features import FeatureEncoder
from pex.policy.base import Policy, PolicyError
from pex.policy.constrained import Constraint, choose_constrained, group_chooser
from pex.policy.tree import TreePolicy

DEPTHS = (1, 2, 3, 4)


@dataclass
class Distillation:
    """Trees per depth plus the fidelity report of the depth search."""

    trees: dict[int, Policy]
    chosen_depth: int
    curve: list[dict] = field(default_factory=list)  # per depth: held-out value, agreement, value lost (with SEs)
    value_policy_value: float = 0.0
    value_policy_se: float = 0.0
    n_fit: int = 0
    n_validation: int = 0

    @property
    def chosen(self) -> Policy:
        """The tree of the chosen depth."""
        return self.trees[self.chosen_depth]

    def to_dict(self) -> dict[str, Any]:
        """The distillation's depth curve and choice as JSON."""
        return {"chosen_depth": self.chosen_depth, "curve": self.curve, "value_policy_value": self.value_policy_value,
                "value_policy_se": self.value_policy_se, "n_fit": self.n_fit, "n_validation": self.n_validation,
                "value_unit": "weighted sum of effects in control-arm standard deviations per unit (the value policy's objective)"}


def distill(
    *,
    frame: pd.DataFrame,
    encoder: FeatureEncoder,
    scores: np.ndarray,
    honest_value: np.ndarray,
    arms: list[str],
    control: str,
    name_prefix: str,
    depths: tuple[int, ...] = DEPTHS,
    min_leaf_share: float = 0.05,
    exploration: float = 0.0,
    experiment: str = "",
    lineage: dict | None = None,
    seed: int = 0,
    guardrails: list[Constraint] | None = None,
    n_eval: int | None = None,
) -> Distillation:
    """Trees of each depth imitating the arm choice ``argmax(scores)``.

    Parameters
    ----------
    frame
        The building units (raw feature columns).
    scores
        The value policy's arm scores for those units, shape (n, n_arms).
    honest_value
        Per unit and arm, an unbiased signal of the arm's value (control 0),
        used only to compare depths on held-out units.
    min_leaf_share
        Smallest share of the units in any leaf.
    guardrails
        Per guardrail, its rule and per-unit, per-arm change signal (rows of ``frame``): each tree's leaf arms
        are then the most ``honest_value`` whose harm is certifiable for a held-out test of ``n_eval`` units
        (:mod:`pex.policy.constrained`), control included, rather than the leaf's best arm by score.
    """
    if not depths or any(not 1 <= d <= 4 for d in depths):
        raise PolicyError(f"tree depths must be from 1 to 4, got {list(depths)}", "distilled trees are shallow; e.g. depths 1,2,3,4")
    if not 0.0 < min_leaf_share < 0.5:
        raise PolicyError(f"min_leaf_share must be above 0 and below 0.5, got {min_leaf_share}",
                          "e.g. 0.05: every leaf holds at least 5% of units")
    n = len(frame)
    X = encoder.transform(frame, strict=False)
    target = np.argmax(scores, axis=1)
    half = np.random.default_rng(seed).permutation(n) < n // 2
    fit_rows, val_rows = np.flatnonzero(half), np.flatnonzero(~half)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    ctrl = arms.index(control)

    def make(depth: int, rows: np.ndarray) -> Policy:
        tree = _fit_tree(X[rows], scores[rows], depth, min_leaf_share, seed)
        leaf_of = tree.apply(X[rows])
        if guardrails:
            constraints = [c.rows(rows) for c in guardrails]
            picked = choose_constrained(group_chooser(leaf_of), honest_value[rows], constraints, ctrl, exploration,
                                        n_eval or len(rows)).chosen
        else:  # the imitation target: each leaf's best arm by total score
            picked = group_chooser(leaf_of)(scores[rows])
        leaf_arm = {int(leaf): int(arm) for leaf, arm in zip(leaf_of, picked)}
        return TreePolicy(name=f"{name_prefix}-tree-d{depth}", arms=list(arms), default_arm=control,
                          exploration=exploration, tree=_to_node(tree, leaf_arm, encoder, arms), experiment=experiment,
                          trained_at=stamp, lineage=dict(lineage or {}, distilled_depth=depth))

    hv = honest_value[val_rows]
    vp = hv[np.arange(len(val_rows)), target[val_rows]]
    per_depth: dict[int, np.ndarray] = {}
    curve = []
    for depth in depths:
        chosen = make(depth, fit_rows).greedy_arms(frame.iloc[val_rows])
        values = hv[np.arange(len(val_rows)), chosen]
        per_depth[depth] = values
        lost = vp - values
        curve.append({"depth": depth, "value": float(values.mean()), "value_se": _se(values),
                      "agreement": float((chosen == target[val_rows]).mean()),
                      "value_lost": float(lost.mean()), "value_lost_se": _se(lost)})
    best = max(depths, key=lambda d: per_depth[d].mean())
    near = [d for d in depths if per_depth[d].mean() >= per_depth[best].mean() - _se(per_depth[best] - per_depth[d])]
    trees = {d: make(d, np.arange(n)) for d in depths}
    # a tree that gives everyone one arm (the guardrails left nothing to personalize at that depth) is only
    # chosen when no depth within reach personalizes
    personal = [d for d in near if "arm" not in trees[d].tree]
    chosen_depth = min(personal or near)
    # only the chosen depth competes for the recommendation; the others are shown
    trees = {d: tree.replace(lineage={**tree.lineage, "candidate": d == chosen_depth}) for d, tree in trees.items()}
    return Distillation(trees=trees, chosen_depth=chosen_depth, curve=curve, value_policy_value=float(vp.mean()),
                        value_policy_se=_se(vp), n_fit=len(fit_rows), n_validation=len(val_rows))


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def _fit_tree(X: np.ndarray, scores: np.ndarray, depth: int, min_leaf_share: float, seed: int) -> DecisionTreeClassifier:
    ordered = np.sort(scores, axis=1)
    # a wrong arm costs at most the gap between the best and second-best score here
    weight = (ordered[:, -1] - ordered[:, -2]) if scores.shape[1] > 1 else np.ones(len(scores))
    weight = weight + 1e-9 * (np.abs(weight).max() + 1.0)
    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=max(1, math.ceil(min_leaf_share * len(X))),
                                  random_state=seed)
    return tree.fit(X, np.argmax(scores, axis=1), sample_weight=weight)


def _to_node(tree: DecisionTreeClassifier, leaf_arm: dict[int, int], encoder: FeatureEncoder, arms: list[str]) -> dict:
    """The fitted sklearn tree as a ``pex.policy/1`` tree with the arm of each leaf from ``leaf_arm``."""
    t = tree.tree_

    def node(i: int) -> dict:
        left, right = int(t.children_left[i]), int(t.children_right[i])
        if left == -1:
            # a leaf no building unit reaches cannot happen in CART; keep the class vote just in case
            return {"arm": arms[leaf_arm.get(i, int(np.argmax(t.value[i][0])))]}
        return split_node(encoder, int(t.feature[i]), float(t.threshold[i]), bool(t.missing_go_to_left[i]),
                          node(left), node(right))

    return node(0)


def split_node(encoder: FeatureEncoder, feature: int, threshold: float, missing_left: bool, left: dict, right: dict) -> dict:
    """One ``pex.policy/1`` split on encoded column ``feature`` ("value <= threshold" goes left, categories by
    their codes), or ``left`` itself when both sides are the same leaf (the split decides nothing)."""
    if "arm" in left and left == right:
        return left
    column = encoder.columns[feature]
    if encoder.kinds[column] == "numeric":
        return {"feature": column, "op": "<=", "value": threshold, "missing": "left" if missing_left else "right",
                "left": left, "right": right}
    levels = encoder.categories[column]
    low = [lv for code, lv in enumerate(levels) if code <= threshold]
    high = [lv for code, lv in enumerate(levels) if code > threshold]
    # "in" lists the labels of the side missing values do NOT take, so that
    # labels never seen in training follow missing values, as in training
    if missing_left:
        return {"feature": column, "op": "in", "value": high, "missing": "right", "left": right, "right": left}
    return {"feature": column, "op": "in", "value": low, "missing": "right", "left": left, "right": right}
