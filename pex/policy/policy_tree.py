"""Policy trees learned directly on per-unit rewards, by exhaustive search.

Given a reward for every unit and arm (doubly-robust scores, possibly with a
guardrail penalty already subtracted), find the shallow tree whose leaves each
assign one arm so that the summed reward of the assigned arms is largest. This
is the policy-learning estimator of Athey & Wager (2021), "Policy Learning
With Observational Data" (Econometrica 89(1)), and of the R package
``policytree``: like ``policytree``, depth 1 and 2 are searched exhaustively
(the root split is chosen jointly with the best split of each child), not
greedily. Unlike :mod:`pex.policy.distill`, which imitates a value policy's arm
choice with a classifier, the objective here is the reward itself.

Why not EconML's ``DRPolicyTree``, whose final model is its ``PolicyTree``
(read in ``econml/policy/_drlearner.py``, ``econml/policy/_forest/_tree.py``,
the ``LinearPolicyCriterion`` source in ``_criterion.c`` and ``econml/tree``):

* it grows the tree greedily (``DepthFirstTreeBuilder`` picks the best split
  of one node at a time), so a root split that only pays off together with
  its children's splits is never found. Its split criterion is the welfare
  itself (sum over the two children of the best arm's reward total), so the
  difference is the greedy search, not the objective;
* its defaults are honest (leaf values from a held-out half of the units) and
  forbid splits leaving less than 5% of a node on one side
  (``min_balancedness_tol=0.45``), which suits inference, not this search;
* its final model (``PolicyTree``) rejects missing feature values
  (``check_X_y``: "Input X contains NaN"), while our features carry NaN for
  missing values and unseen categories that a ``pex.policy/1`` tree routes
  down a declared ``"missing"`` branch; here both directions are candidate
  splits and the chosen one is recorded;
* the guardrail search re-runs the policy search many times under different
  penalties, so speed matters: each feature is binned once per fit, each root
  feature then costs one pass over the units (a joint bin x feature x bin
  histogram of rewards), and every root threshold and child split is scored
  from cumulative sums of those histograms (about 0.4 s for depth 2 at
  n = 40,000, p = 14, 3 arms, 32 bins on one core).

Splits are ``x <= t`` (left) at up to ``bins`` thresholds per feature, each the
midpoint between two distinct observed values near a quantile; categorical
features are integer codes (:class:`pex.experiment.features.FeatureEncoder`) split the
same way, ``code <= t``, which :func:`to_policy_node` writes as an ``"in"``
list exactly as :func:`pex.policy.distill.split_node` does for scikit-learn trees.
A split on codes can only cut the category order once, so isolating a level
in the middle of the order takes two splits (one level of depth).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pex.experiment.features import FeatureEncoder
from pex.policy.distill import split_node

MAX_DEPTH = 3


@dataclass
class PolicyTreeFit:
    """The best tree found by :func:`fit_policy_tree`.

    Attributes
    ----------
    node
        Nested dicts; internal nodes ``{"feature": j, "threshold": t,
        "missing_left": bool, "left": ..., "right": ...}`` (column index ``j``
        of ``X``, ``x <= t`` goes left, NaN goes left iff ``missing_left``),
        leaves ``{"arm": a}`` (column index of ``rewards``).
    value
        Mean reward of the tree's arms over the fitted units (total / n).
    n_units
        Number of units the tree was fitted on.
    """

    node: dict
    value: float
    n_units: int = 0

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The arm index for each row of ``X``, shape (n,).

        Routes exactly as the ``pex.policy/1`` tree from :func:`to_policy_node`
        does: ``x <= t`` left, NaN (missing or unseen category) down the
        recorded missing side.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-d matrix, got shape {X.shape}")
        out = np.empty(len(X), dtype=np.int64)
        stack: list[tuple[dict, np.ndarray]] = [(self.node, np.arange(len(X)))]
        while stack:
            node, rows = stack.pop()
            if "arm" in node:
                out[rows] = node["arm"]
                continue
            left = _goes_left(X[rows, node["feature"]], node["threshold"], node["missing_left"])
            stack.append((node["left"], rows[left]))
            stack.append((node["right"], rows[~left]))
        return out


def fit_policy_tree(
    X: np.ndarray,
    rewards: np.ndarray,
    *,
    depth: int = 2,
    min_leaf: int = 1,
    bins: int = 32,
    categorical: Sequence[int] = (),
) -> PolicyTreeFit:
    """The tree of at most ``depth`` levels maximizing the total reward of its arms.

    Parameters
    ----------
    X
        Features, shape (n, p), as from :meth:`FeatureEncoder.transform`:
        floats with NaN for missing values (and unseen categories).
    rewards
        ``rewards[i, a]`` is the reward of giving arm ``a`` to unit ``i``,
        shape (n, A); e.g. doubly-robust scores. The search maximizes
        ``sum_i rewards[i, arm(i)]``.
    depth
        1: best single split or none. 2: exhaustive over the root split and,
        jointly, the best depth-1 subtree (or leaf) on each side. 3: the root
        of the best depth-2 tree, then the best depth-2 subtree on each side
        (a one-level greedy step, so not guaranteed optimal).
    min_leaf
        Fewest units any leaf may hold.
    bins
        Most candidate thresholds per feature (at quantiles of its observed
        values). A feature with at most ``bins + 1`` distinct values has every
        split as a candidate, so the search over it is exact.
    categorical
        Column indices holding category codes; they are checked to be
        non-negative integers (or NaN). The split rule is the same ``code <=
        t`` as for numbers, so the column kinds only matter when the tree is
        written out (:func:`to_policy_node`).

    Returns
    -------
    PolicyTreeFit
        Ties go to the simpler tree: a split is kept only if it raises the
        total reward by more than a rounding tolerance.
    """
    X = np.asarray(X, dtype=np.float64)
    R = np.asarray(rewards, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d matrix, got shape {X.shape}")
    if R.ndim != 2 or R.shape[0] != X.shape[0] or R.shape[1] < 1:
        raise ValueError(f"rewards must have shape (n_units={X.shape[0]}, n_arms), got {R.shape}")
    if not np.isfinite(R).all():
        raise ValueError("rewards must be finite numbers (no NaN or infinity)")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be 1, 2 or 3, got {depth!r}: depth 1 and 2 are searched exhaustively, "
                         "3 with a greedy root (policy trees are meant to be read; deeper ones are not searched)")
    if isinstance(min_leaf, bool) or not isinstance(min_leaf, (int, np.integer)) or min_leaf < 1:
        raise ValueError(f"min_leaf must be a positive integer, got {min_leaf!r}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    n, p = X.shape
    if n < min_leaf:
        raise ValueError(f"{n} units cannot fill even one leaf of min_leaf={min_leaf}")
    for j in categorical:
        if not 0 <= j < p:
            raise ValueError(f"categorical column index {j} is outside 0..{p - 1}")
        codes = X[:, j][~np.isnan(X[:, j])]
        if (codes < 0).any() or (codes != np.round(codes)).any():
            raise ValueError(f"categorical column {j} must hold integer codes 0..k-1 or NaN")

    if p == 0:
        node: dict = {"arm": int(np.argmax(R.sum(axis=0)))}
    else:
        node = _Search(X, R, int(min_leaf), int(bins)).fit(np.arange(n), int(depth))
    fit = PolicyTreeFit(node=node, value=0.0, n_units=n)
    # the reported value is recomputed by routing, so it is exactly what the tree earns
    fit.value = float(R[np.arange(n), fit.apply(X)].sum() / n)
    return fit


def to_policy_node(fit_node: dict, encoder: FeatureEncoder, arms: list[str]) -> dict:
    """A :class:`PolicyTreeFit` node as a ``pex.policy/1`` tree.

    Parameters
    ----------
    fit_node
        ``PolicyTreeFit.node`` of a tree fitted on ``encoder.transform(...)``.
    encoder
        Gives column names, kinds and category levels.
    arms
        Arm labels in the column order of the rewards.

    Returns
    -------
    dict
        Numeric splits as ``{"op": "<=", "missing": "left"|"right"}``;
        categorical splits as ``{"op": "in"}`` listing the labels of the side
        missing values do not take, with ``"missing": "right"``, so that labels
        the encoder never saw (NaN codes when fitting) follow missing values, as
        in :func:`pex.policy.distill.split_node`. Sibling leaves with the same arm are merged.
    """

    def node(d: dict) -> dict:
        if "arm" in d:
            a = int(d["arm"])
            if not 0 <= a < len(arms):
                raise ValueError(f"leaf arm index {a} is outside the {len(arms)} arm labels given")
            return {"arm": arms[a]}
        return split_node(encoder, int(d["feature"]), float(d["threshold"]), bool(d["missing_left"]),
                          node(d["left"]), node(d["right"]))

    return node(fit_node)


def candidate_thresholds(x: np.ndarray, bins: int) -> np.ndarray:
    """Sorted split thresholds for one feature column (NaN ignored), at most ``bins``.

    Each is the midpoint between two consecutive distinct finite values, so a
    threshold never coincides with an observed value and ``x <= t`` means the
    same to every reader. With more than ``bins + 1`` distinct values the
    midpoints next to ``bins`` evenly spaced quantiles are taken.
    """
    values = np.sort(x[np.isfinite(x)])
    distinct = np.unique(values)
    if len(distinct) < 2:
        return np.empty(0)
    if len(distinct) - 1 > bins:
        ranks = np.floor(np.arange(1, bins + 1) / (bins + 1) * (len(values) - 1)).astype(np.int64)
        idx = np.unique(np.searchsorted(distinct, values[ranks]))
        idx = idx[idx < len(distinct) - 1]
    else:
        idx = np.arange(len(distinct) - 1)
    mids = distinct[idx] / 2 + distinct[idx + 1] / 2  # halves first: no overflow near the float maximum
    return np.unique(mids)


# -- the search -----------------------------------------------------------------------


def _goes_left(v: np.ndarray, threshold: float, missing_left: bool) -> np.ndarray:
    return np.where(np.isnan(v), missing_left, v <= threshold)


class _Search:
    """Binned features and reward histograms for one fit.

    Each feature's values become bin codes: code ``c`` in ``0..bins`` means
    ``c`` thresholds lie below the value (so ``x <= T[k]`` iff ``c <= k``),
    code ``bins + 1`` means missing. Reward totals per arm plus a unit count
    (channel ``A``) are then summed per bin, and left/right totals of every
    threshold are cumulative sums over bins.
    """

    def __init__(self, X: np.ndarray, R: np.ndarray, min_leaf: int, bins: int) -> None:
        n, p = X.shape
        self.p, self.bins, self.B = p, bins, bins + 2
        self.A = R.shape[1]
        self.min_leaf = min_leaf
        self.W = np.hstack([R, np.ones((n, 1))])
        self.thresholds = np.full((p, bins), np.nan)
        self.valid = np.zeros((p, bins), dtype=bool)
        self.codes = np.empty((n, p), dtype=np.int64)
        for j in range(p):
            t = candidate_thresholds(X[:, j], bins)
            self.thresholds[j, :len(t)] = t
            self.valid[j, :len(t)] = True
            self.codes[:, j] = np.where(np.isnan(X[:, j]), bins + 1, np.searchsorted(t, X[:, j], side="left"))
        # a split that moves nothing cannot beat its leaf; the slack absorbs cumulative-sum rounding
        self.tol = 1e-10 * (np.abs(R).sum() + 1.0)

    # histograms

    def _hist(self, rows: np.ndarray) -> np.ndarray:
        """Per feature and bin, reward totals and count: shape (p, B, A+1)."""
        p, B = self.p, self.B
        idx = (self.codes[rows] + np.arange(p) * B).ravel()
        W = self.W[rows]
        return np.stack([np.bincount(idx, weights=np.repeat(W[:, c], p), minlength=p * B)
                         for c in range(W.shape[1])], axis=-1).reshape(p, B, -1)

    def _joint_hist(self, rows: np.ndarray, j: int) -> np.ndarray:
        """Per bin of feature ``j``, the histogram of every feature: shape (B, p, B, A+1)."""
        p, B = self.p, self.B
        codes = self.codes[rows]
        idx = (codes[:, j, None] * (p * B) + np.arange(p) * B + codes).ravel()
        W = self.W[rows]
        return np.stack([np.bincount(idx, weights=np.repeat(W[:, c], p), minlength=B * p * B)
                         for c in range(W.shape[1])], axis=-1).reshape(B, p, B, -1)

    # split values from histograms

    def _sides(self, H: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Left and right totals of every split, (..., p, bins, A+1) each, once per place of the missing values:
        [0] right, [1] left (right first, so that ties pick the policy format's default). Kept apart rather than
        stacked: they are the tree search's largest arrays, and stacking copied them for every histogram."""
        total = H[..., :1, :, :].sum(axis=-2)[..., None, :]  # (..., 1, 1, A+1)
        below = np.cumsum(H[..., :self.bins, :], axis=-2)
        missing = H[..., self.bins + 1:, :]
        return [(left, total - left) for left in (below, below + missing)]

    def _best_arm(self, totals: np.ndarray) -> np.ndarray:
        """The largest of the arms' totals (the first A entries of the last axis), as elementwise maxima: numpy's
        reduction along a last axis of 2-3 entries is over ten times slower, and this is the tree search's inner loop."""
        return functools.reduce(np.maximum, (totals[..., a] for a in range(self.A)))

    def _split_values(self, H: np.ndarray) -> np.ndarray:
        """Total reward of each depth-1 split with the best arm per side, (..., p, bins, 2); -inf where not allowed.
        The axis of length 2 is where missing values go, as in :meth:`_sides`."""
        A, m = self.A, self.min_leaf - 0.5  # counts are sums of ones: exact, but compared with slack anyway
        values = []
        for left, right in self._sides(H):
            ok = (left[..., A] >= m) & (right[..., A] >= m) & self.valid
            values.append(np.where(ok, self._best_arm(left) + self._best_arm(right), -np.inf))
        return np.stack(values, axis=-1)

    def _leaf_value(self, H: np.ndarray) -> np.ndarray:
        total = H[..., 0, :, :].sum(axis=-2)
        return np.where(total[..., self.A] >= self.min_leaf - 0.5, self._best_arm(total), -np.inf)

    def _best_depth1_value(self, H: np.ndarray) -> np.ndarray:
        """Best of a leaf and every single split, per histogram in the leading axes."""
        split = self._split_values(H)
        return np.maximum(self._leaf_value(H), split.reshape(*split.shape[:-3], -1).max(axis=-1))

    # trees

    def _leaf(self, rows: np.ndarray) -> dict:
        return {"arm": int(np.argmax(self.W[rows, :self.A].sum(axis=0)))}

    def _split_node(self, rows: np.ndarray, j: int, k: int, d: int) -> tuple[dict, np.ndarray]:
        code = self.codes[rows, j]
        left = (code <= k) | ((code == self.bins + 1) & bool(d))
        return {"feature": int(j), "threshold": float(self.thresholds[j, k]), "missing_left": bool(d)}, left

    def fit(self, rows: np.ndarray, depth: int) -> dict:
        if depth == 1:
            return self._fit1(rows)
        if depth == 2:
            return self._fit2(rows)
        top = self._fit2(rows)  # deeper: keep the best depth-2 root, then search each side afresh
        if "arm" in top:
            return top
        j = top["feature"]
        k = int(np.flatnonzero(self.thresholds[j] == top["threshold"])[0])
        node, left = self._split_node(rows, j, k, int(top["missing_left"]))
        node["left"], node["right"] = self.fit(rows[left], depth - 1), self.fit(rows[~left], depth - 1)
        return node

    def _fit1(self, rows: np.ndarray) -> dict:
        H = self._hist(rows)
        split = self._split_values(H)
        best = np.unravel_index(int(np.argmax(split)), split.shape)
        if not split[best] > self._leaf_value(H) + self.tol:
            return self._leaf(rows)
        node, left = self._split_node(rows, *map(int, best))
        node["left"], node["right"] = self._leaf(rows[left]), self._leaf(rows[~left])
        return node

    def _fit2(self, rows: np.ndarray) -> dict:
        leaf = float(self._leaf_value(self._hist(rows)))
        best_value, best = -np.inf, None
        for j in range(self.p):
            if not self.valid[j].any():
                continue
            # every root split on j hands each child a full histogram (bins, 2, p, B, A+1):
            # cumulative sums over j's bins of the joint histogram, as _sides does in one dimension
            J = self._joint_hist(rows, j)
            below = np.cumsum(J[:self.bins], axis=0)
            left_h = np.stack([below, below + J[self.bins + 1]], axis=1)
            right_h = J.sum(axis=0) - left_h
            value = self._best_depth1_value(left_h) + self._best_depth1_value(right_h)  # (bins, 2)
            value = np.where(self.valid[j][:, None], value, -np.inf)
            k, d = np.unravel_index(int(np.argmax(value)), value.shape)
            if value[k, d] > best_value:
                best_value, best = float(value[k, d]), (j, int(k), int(d))
        if best is None or not best_value > leaf + self.tol:
            return self._leaf(rows)
        node, left = self._split_node(rows, *best)
        node["left"], node["right"] = self._fit1(rows[left]), self._fit1(rows[~left])
        return node
