"""Pareto maths of the weight search: the points one method evaluated, which are non-dominated, how much they dominate.

Every objective is maximised. A point is *feasible* when every guardrail's certifiable bound is within its limit
(decided by the problem that valued it, :mod:`pex.search.tuning` offline, the online loop live); only feasible
points can be Pareto-optimal. The hypervolume is measured from all-control (a lift of 0 on every objective), so
fronts of different methods and runs are compared against the same point.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Front:
    """Every weight vector one method evaluated, and which of them are Pareto-optimal and feasible."""

    method: str
    draws: np.ndarray  # (K, dimension)
    objectives: np.ndarray  # (K, O)
    harms: np.ndarray  # (K, G)
    feasible: np.ndarray  # (K,)
    treated_share: np.ndarray  # (K,)
    seconds: float
    pareto: np.ndarray = field(default=None)  # indices into the K draws
    hypervolume: float = float("nan")
    requested: int | None = None  # points asked for, when a budget may have stopped the method early
    bounds: np.ndarray | None = None  # (K, G) certifiable harm bounds (what feasibility is judged by)
    weight_vectors: int | None = None  # distinct weight vectors behind the points (the dense sweep values each at many caps)

    def __post_init__(self) -> None:
        if self.pareto is None:
            self.pareto = pareto_indices(self.objectives, self.feasible)

    @property
    def front(self) -> np.ndarray:
        """The objectives of the Pareto-optimal points."""
        return self.objectives[self.pareto]

    @classmethod
    def merge(cls, method: str, fronts: list[Front]) -> Front:
        """One front from several methods' points, its Pareto set recomputed."""
        return cls(method=method, draws=np.vstack([f.draws for f in fronts]), objectives=np.vstack([f.objectives for f in fronts]),
                   harms=np.vstack([f.harms for f in fronts]), feasible=np.concatenate([f.feasible for f in fronts]),
                   treated_share=np.concatenate([f.treated_share for f in fronts]), seconds=sum(f.seconds for f in fronts),
                   bounds=np.vstack([f.bounds if f.bounds is not None else np.full_like(f.harms, np.nan) for f in fronts]))


def pareto_indices(objectives: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """Indices of the feasible points no other feasible point dominates (all objectives maximised), best first."""
    idx = np.flatnonzero(feasible)
    if len(idx) == 0:
        return idx
    Y = objectives[idx]
    order = np.lexsort(tuple(-Y[:, j] for j in reversed(range(Y.shape[1]))))  # by first objective, then the next, desc
    kept: list[int] = []
    for i in order:
        y = Y[i]
        if kept:
            K = Y[kept]
            if ((K >= y).all(axis=1) & (K > y).any(axis=1)).any() or (K == y).all(axis=1).any():
                continue
        kept.append(i)
    return idx[np.array(kept, dtype=int)]


def hypervolume(front: np.ndarray, reference: np.ndarray) -> float:
    """Volume the front dominates above ``reference`` (all objectives maximised), via BoTorch's exact algorithm."""
    if len(front) == 0:
        return 0.0
    above = front[(front > reference).all(axis=1)]
    if len(above) == 0:
        return 0.0
    if front.shape[1] == 1:
        return float(above.max() - reference[0])
    with warnings.catch_warnings():  # importing BoTorch trips torch's own deprecation warnings, not ours to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch
        from botorch.utils.multi_objective.hypervolume import Hypervolume

    return float(Hypervolume(ref_point=torch.as_tensor(reference, dtype=torch.double)).compute(
        torch.as_tensor(above, dtype=torch.double)))


def reference_point(fronts: list[Front]) -> np.ndarray:
    """All-control: a lift of 0 on every objective, so the hypervolume measures gains over doing nothing and
    does not move with the fronts compared. Only when no Pareto point of any front gains on every objective
    at once (every volume would be 0) is it lowered to the worst Pareto point."""
    points = [f.front for f in fronts if len(f.pareto)]
    if not points:
        return np.zeros(0)
    stacked = np.vstack(points)
    if (stacked > 0).all(axis=1).any():
        return np.zeros(stacked.shape[1])
    return np.minimum(0.0, stacked.min(axis=0))


def spread(front: Front, k: int) -> list[int]:
    """Up to ``k`` Pareto points far apart: the best on the first objective, then farthest-point picks (scaled objectives)."""
    idx = list(front.pareto)
    if not idx or k <= 0:
        return []
    Y = front.objectives[idx]
    span = np.ptp(Y, axis=0)
    Z = (Y - Y.min(axis=0)) / np.where(span > 0, span, 1.0)
    chosen = [0]  # pareto_indices lists the best first objective first
    while len(chosen) < min(k, len(idx)):
        d = np.min(np.linalg.norm(Z[:, None, :] - Z[None, chosen, :], axis=2), axis=1)
        nxt = int(np.argmax(d))
        if d[nxt] <= 0:
            break
        chosen.append(nxt)
    return [idx[c] for c in chosen]
