"""The multiple-testing procedures that certify candidates' guardrails, carried out on their harm estimates.

Candidate ``i`` stands for the hypothesis "some guardrail of ``i`` is truly beyond its limit"; certifying ``i``
rejects it, when the one-sided upper bound of each of its guardrails' harm is within the limit (an
intersection-union test: no adjustment across one candidate's guardrails is needed). Every procedure here keeps
the chance that *any* certified candidate truly breaks a guardrail within ``alpha`` (the family-wise error),
however many candidates there are; they differ in how that ``alpha`` is shared out (:mod:`pex.evaluation.procedures`
names them and says so in words):

* ``fixed-sequence``: each candidate at the full level in a pre-set order, stopping at the first that fails;
* ``step-down``: step-down max-t over every (candidate, guardrail) claim at once
  (:func:`pex.evaluation.estimators.step_down_upper`), no order;
* ``gated``: the first candidate alone at the full level; only if it passes, step-down over the rest;
* ``graphical`` (Bretz et al., 2009): the first candidate gets a share ``weight`` of ``alpha``, the rest
  ``1 - weight`` of it, tested by step-down max-t; when the first passes, its share passes on to the rest
  (step-down again, at the full level), and when every one of the rest passes, theirs passes back to the first
  (tested again at the full level). This is the shortcut of the closed test whose local test of an intersection
  holding the first candidate and a set S of the others is "the first at ``weight * alpha`` or max-t over S at
  ``(1 - weight) * alpha``" (Bonferroni across the two parts), so its error is within ``alpha``. Unlike ``gated``,
  a first candidate that narrowly misses no longer stops every other test.

The claims are given in the order fixed before the test (by recipes and building units alone); only
``fixed-sequence``, ``gated`` and ``graphical`` use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pex.evaluation import estimators as ope
from pex.experiment.guardrail import ALPHA, tail_level, z_value

GRAPHICAL_WEIGHT = 0.5  # the first candidate's share of alpha under ``graphical``


@dataclass(frozen=True)
class Claim:
    """One guardrail of one candidate: its harm estimate (per-unit contributions for the joint law) and its limit."""

    metric: str
    estimate: ope.Estimate
    limit: float

    def passes(self, alpha: float) -> bool:
        """Whether the one-sided upper bound at level ``1 - alpha`` is within the limit."""
        return bool(self.estimate.value + z_value(alpha) * self.estimate.se <= self.limit)


@dataclass
class Tested:
    """What a procedure did: each tested candidate's level (the one-sided ``alpha`` its guardrails were judged at,
    the last it was tested at), the certified ones in family order, and those never tested."""

    alphas: dict[str, float] = field(default_factory=dict)
    certified: list[str] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)
    first: str | None = None  # the candidate tested first on its own (fixed-sequence, gated, graphical)
    first_alpha: float | None = None  # the level the first test was made at
    rest_alpha: float | None = None  # the level the others were first tested at (after the first test)


def certify(method: str, family: Sequence[tuple[str, Sequence[Claim]]], alpha: float = ALPHA,
            weight: float = GRAPHICAL_WEIGHT) -> Tested:
    """Run procedure ``method`` on ``family``: ``(candidate, claims)`` in the pre-set order."""
    family = list(family)
    if method == "fixed-sequence":
        return _fixed_sequence(family, alpha)
    if method == "step-down":
        return _step_down(family, alpha)
    if method == "gated":
        return _graphical(family, alpha, 1.0)
    if method == "graphical":
        return _graphical(family, alpha, weight)
    raise ValueError(f"unknown multiple-testing procedure {method!r}")


def _passes(claims: Sequence[Claim], alpha: float) -> bool:
    return all(c.passes(alpha) for c in claims)


def _fixed_sequence(family: list[tuple[str, Sequence[Claim]]], alpha: float) -> Tested:
    out = Tested(first=family[0][0] if family else None, first_alpha=alpha if family else None,
                 rest_alpha=alpha if len(family) > 1 else None)
    for i, (name, claims) in enumerate(family):
        out.alphas[name] = alpha
        if not _passes(claims, alpha):
            out.untested = [n for n, _c in family[i + 1:]]
            if i == 0:
                out.rest_alpha = None
            break
        out.certified.append(name)
    return out


def _step_down(family: list[tuple[str, Sequence[Claim]]], alpha: float) -> Tested:
    """Step-down max-t over every claim; a candidate is certified when all its claims are made, and is reported at
    the level of the largest critical value its claims were made at (the last critical value when not certified)."""
    out = Tested()
    if not family:
        return out
    flat = [(name, c) for name, claims in family for c in claims]
    made = ope.step_down_upper([c.estimate for _n, c in flat], [c.limit for _n, c in flat], alpha)
    if None in made:
        final = ope.simultaneous_z([c.estimate for (_n, c), z in zip(flat, made) if z is None], alpha)
    else:
        final = max(made, default=None)
    for name, _claims in family:
        mine = [z for (n, _c), z in zip(flat, made) if n == name]
        ok = all(z is not None for z in mine)
        level_z = max(mine) if ok and mine else final
        out.alphas[name] = tail_level(level_z) if level_z is not None else alpha
        if ok:
            out.certified.append(name)
    return out


def _graphical(family: list[tuple[str, Sequence[Claim]]], alpha: float, weight: float) -> Tested:
    """The two-node graph of the module docstring (``weight`` 1 is ``gated``: the rest get nothing until the first
    passes)."""
    if not family:
        return Tested()
    (first, claims), rest = family[0], family[1:]
    first_alpha = weight * alpha if rest else alpha  # alone, the first has the whole graph's weight
    first_passed = _passes(claims, first_alpha)
    rest_alpha = alpha if first_passed else (1.0 - weight) * alpha
    out = Tested(first=first, first_alpha=first_alpha, rest_alpha=rest_alpha if rest else None)
    others = _step_down(rest, rest_alpha) if rest and rest_alpha > 0 else Tested(untested=[n for n, _c in rest])
    alphas = {first: first_alpha}
    if not first_passed and len(others.certified) == len(rest):  # every other passed (or none): their share comes back
        alphas[first] = alpha
        first_passed = _passes(claims, alpha)
    out.alphas = {**alphas, **others.alphas}
    out.certified = ([first] if first_passed else []) + others.certified
    out.untested = others.untested
    return out
