"""Choosing arms for groups of units under the guardrails: the Lagrangian search shared by the tree builders.

A tree policy is a partition of units (its leaves) with one arm per leaf. The
best arms for the objective alone may break a guardrail; the best arms
*subject to* the guardrails solve a constrained problem. Relaxing it with one
multiplier per unit of harm turns it into an unconstrained one with rewards

    value(unit, arm) - lambda * sum over guardrails of harm(unit, arm) / spread,

which any arm chooser (a leaf-wise argmax for distilled trees, the exhaustive
policy-tree search of :mod:`pex.policy.policy_tree`) solves as before. The smallest
``lambda`` whose choice is certifiable on every guardrail
(:meth:`pex.experiment.guardrail.GuardrailRule.certifiable`, served with exploration)
is found by bisection; when even a very large one is not, nobody is treated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pex.experiment.guardrail import GuardrailRule

Chooser = Callable[[np.ndarray], np.ndarray]  # rewards (n, A) -> chosen arm index per unit (n,)
STEPS = 12


@dataclass(frozen=True)
class Constraint:
    """One guardrail with its per-unit, per-arm change signals (n, A), control's column 0.

    ``change`` (unbiased per unit, e.g. doubly-robust pseudo-outcomes) is what the harm is *measured* with;
    ``guide`` (e.g. out-of-fold predicted effects) is what the *penalty* steering the choice uses. Keeping the
    two apart matters: a search that penalizes the very noise it is then measured with picks units whose
    noise happens to look harmless, and its measured harm comes out optimistic.
    """

    rule: GuardrailRule
    change: np.ndarray
    guide: np.ndarray | None = None

    def rows(self, index: np.ndarray) -> Constraint:
        """The same constraint for a subset of units."""
        return Constraint(self.rule, self.change[index], None if self.guide is None else self.guide[index])


@dataclass(frozen=True)
class ConstrainedChoice:
    """The arms chosen, the multiplier that got there, and each guardrail's certifiable bound."""

    chosen: np.ndarray
    multiplier: float
    met: bool
    bounds: dict[str, float]
    harms: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Screen:
    """One guardrail's building-units check of a policy: its harm and standard error there, and the bound a test on
    other units would need (:meth:`pex.experiment.guardrail.GuardrailRule.certifiable`), held to ``rule``'s limit.
    A routing policy's screen averages its half-policies' (``halves``)."""

    rule: GuardrailRule
    harm: float
    se: float
    bound: float
    halves: tuple[Screen, ...] = ()

    @property
    def limit(self) -> float:
        """The rule's limit."""
        return self.rule.limit

    @property
    def passed(self) -> bool:
        """Whether the bound is within the limit (a held-out test could pass if the estimate were exact)."""
        return bool(self.bound <= self.rule.limit)

    @property
    def room(self) -> float:
        """How far the bound stays below the limit, relative to the limit where it is not 0 (larger is safer)."""
        return (self.limit - self.bound) / (abs(self.limit) or 1.0)

    @classmethod
    def average(cls, halves: list[Screen]) -> Screen:
        """The screen of a policy that routes each unit to one of ``halves``' policies, in equal shares: the mean harm
        and bound, the standard error of the mean of independent estimates."""
        return cls(rule=halves[0].rule, harm=float(np.mean([h.harm for h in halves])),
                   se=float(np.sqrt(sum(h.se ** 2 for h in halves)) / len(halves)),
                   bound=float(np.mean([h.bound for h in halves])), halves=tuple(halves))

    def to_dict(self) -> dict[str, Any]:
        """The screen as JSON (a comparison row's ``screen`` cell)."""
        out: dict[str, Any] = {"harm": self.harm, "se": self.se, "bound": self.bound, "limit": self.limit, "passed": self.passed}
        if self.halves:
            out["halves"] = [h.to_dict() for h in self.halves]
        return out


def served_change(change: np.ndarray, chosen: np.ndarray, exploration: float) -> np.ndarray:
    """Per unit, the change the served policy makes: the greedy arm's, mixed with the uniform average."""
    n = len(chosen)
    return (1.0 - exploration) * change[np.arange(n), chosen] + exploration * change.mean(axis=1)


def check(constraints: list[Constraint], chosen: np.ndarray, exploration: float, n_eval: int,
          margin: float | None = None) -> tuple[bool, dict, dict]:
    """Whether ``chosen`` is certifiable on every guardrail, with the bounds and (harm, se) pairs
    (``margin``: standard errors of the bound, default :func:`pex.experiment.guardrail.certify_margin`)."""
    bounds, harms, ok = {}, {}, True
    n = len(chosen)
    for c in constraints:
        estimate, se = c.rule.harm_and_se(served_change(c.change, chosen, exploration))
        harms[c.rule.metric] = (estimate, se)
        bounds[c.rule.metric] = c.rule.certifiable(estimate, se, n, n_eval, margin)
        ok &= bool(bounds[c.rule.metric] <= c.rule.limit) or not c.rule.has_limit
    return ok, bounds, harms


def choose_constrained(choose: Chooser, value: np.ndarray, constraints: list[Constraint], control: int,
                       exploration: float, n_eval: int, steps: int = STEPS) -> ConstrainedChoice:
    """The chooser's arms for ``value`` (n, A) penalized by the smallest multiplier that makes them certifiable."""
    active = [c for c in constraints if c.rule.has_limit]
    value = np.asarray(value, dtype=float)
    plain = choose(value)
    ok, bounds, harms = check(active, plain, exploration, n_eval)
    if ok or not active:
        return ConstrainedChoice(plain, 0.0, ok, bounds, harms)
    # harm in units of each guardrail's per-unit spread, value in its own: the multiplier is scale-free
    spread_v = float(np.std(value)) or 1.0
    penalty = np.zeros_like(value)
    for c in active:
        harm = c.rule.sign * np.asarray(c.change if c.guide is None else c.guide, dtype=float) / c.rule.scale
        penalty += harm / (float(np.std(harm)) or 1.0)
    penalty *= spread_v

    def at(lam: float) -> tuple[np.ndarray, bool, dict, dict]:
        chosen = choose(value - lam * penalty)
        return (chosen, *check(active, chosen, exploration, n_eval))

    low, high = 0.0, 1.0
    best = at(high)
    while not best[1] and high < 1e4:
        low, high = high, high * 8.0
        best = at(high)
    if not best[1]:
        nobody = np.full(len(value), control)
        ok, bounds, harms = check(active, nobody, exploration, n_eval)
        return ConstrainedChoice(nobody, float("inf"), ok, bounds, harms)
    for _ in range(steps):
        mid = 0.5 * (low + high)
        trial = at(mid)
        if trial[1]:
            high, best = mid, trial
        else:
            low = mid
    chosen, ok, bounds, harms = best
    return ConstrainedChoice(chosen, high, ok, bounds, harms)


def group_chooser(groups: np.ndarray) -> Chooser:
    """A chooser giving every unit of a group (e.g. a tree leaf) the arm with the largest total reward there."""
    labels, inverse = np.unique(groups, return_inverse=True)

    def choose(rewards: np.ndarray) -> np.ndarray:
        totals = np.column_stack([np.bincount(inverse, weights=rewards[:, a], minlength=len(labels))
                                  for a in range(rewards.shape[1])])
        return np.argmax(totals, axis=1)[inverse]

    return choose
