"""The guardrail rule, in one place.

A guardrail metric has a ``max_harm``: the largest tolerated change in its
harmful direction, relative to the control mean (absolute, against a limit of
0, when the control mean is 0 and a relative change is undefined). A policy or
an arm **keeps** a guardrail when the one-sided upper bound of its harm, at
level :data:`LEVEL`, is within the limit:

* ``pass``: upper bound <= limit (certified);
* ``fail``: lower bound > limit (harm beyond the limit is established);
* ``inconclusive``: neither.

Every stage uses this module: ``pex analyze`` (average effects), the value
policy's calibration, the trees, the weight search, the off-policy
comparison, the recommendation, the report and the CLI text. Harm and its
standard error come from paired per-unit contributions (the policy's and
all-control's doubly-robust contributions on the same units, or per-unit
effect signals), with the control mean's own sampling error carried by the
delta method.

Certification needs units that played no part in choosing the policy; the
stages that build policies therefore aim at a *certifiable* bound: the harm
they measure on their own units plus the margin the bound will need on the
held-out units (:meth:`GuardrailRule.certifiable`). That margin is planned for
a pass probability (:data:`POWER`); the value policy is also built for the
other :data:`LADDER_POWERS`, and the recommendation tests those steps safest
first, so the held-out units decide how bold a step they support.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from pex.experiment.spec import ExperimentSpec

ALPHA = 0.05  # one-sided: the upper bound is a 95% bound
LEVEL = 1.0 - ALPHA
POWER = 0.8  # building stages aim so that a policy whose training harm holds on held-out units passes 80% of the time
PLANNED_FAMILY = 1  # the held-out test judges each candidate at the full level (fixed-sequence testing, pex.evaluation.recommendation)
# A ladder of the same policy planned for other powers: safer steps are tested first in the fixed sequence, so a
# miss at 80% can still certify a safer step, and bolder steps are tried once the default has passed.
LADDER_POWERS = (0.99, 0.95, 0.9, POWER, 0.65, 0.5)


def z_value(alpha: float = ALPHA) -> float:
    """The one-sided normal quantile for level ``1 - alpha``."""
    return float(stats.norm.ppf(1.0 - alpha))


def tail_level(z: float) -> float:
    """The one-sided level ``alpha`` whose normal quantile is ``z`` (the inverse of :func:`z_value`)."""
    return float(stats.norm.sf(z))


def certify_margin(family: int = PLANNED_FAMILY, alpha: float = ALPHA, power: float = POWER) -> float:
    """Standard errors between a building-stage harm estimate and the limit so that the held-out bound (at level
    ``1 - alpha / family``) passes with probability ``power`` if the harm is as estimated."""
    return z_value(alpha / max(family, 1)) + float(stats.norm.ppf(power))


def judge(estimate: float, se: float, limit: float, alpha: float = ALPHA) -> tuple[float, float, str]:
    """One-sided bounds at level ``1 - alpha`` and the verdict: pass when the upper bound is within
    ``limit``, fail when the lower bound is beyond it, else inconclusive."""
    z = z_value(alpha)
    upper, lower = estimate + z * se, estimate - z * se
    if not (math.isfinite(upper) and math.isfinite(lower)):
        verdict = "inconclusive"
    elif upper <= limit:
        verdict = "pass"
    elif lower > limit:
        verdict = "fail"
    else:
        verdict = "inconclusive"
    return float(lower), float(upper), verdict


@dataclass(frozen=True)
class Harm:
    """One guardrail's harm for one policy or arm, with its verdict at ``level`` (one-sided)."""

    metric: str
    estimate: float
    se: float
    lower: float
    upper: float
    limit: float
    max_harm: float | None
    basis: str  # relative | absolute
    level: float
    verdict: str  # pass | fail | inconclusive
    n: int

    @property
    def passed(self) -> bool:
        """True when the upper bound is within the limit (the guardrail is kept)."""
        return self.verdict == "pass"

    def units_to_certify(self) -> int | None:
        """Roughly how many evaluation units would put the upper bound at the limit, if the harm and the
        per-unit spread stayed as estimated; None when the estimate itself is at or over the limit."""
        if not (math.isfinite(self.se) and self.se > 0 and self.n > 0):
            return None
        slack = self.limit - self.estimate
        if slack <= 0:
            return None
        z = (self.upper - self.estimate) / self.se
        return math.ceil(self.n * (z * self.se / slack) ** 2)

    def at(self, alpha: float) -> Harm:
        """The same estimate judged at another one-sided level (e.g. Bonferroni-adjusted over candidates)."""
        lower, upper, verdict = judge(self.estimate, self.se, self.limit, alpha)
        return replace(self, lower=lower, upper=upper, level=1.0 - alpha, verdict=verdict)

    def to_dict(self) -> dict:
        """The harm as JSON."""
        return {**asdict(self), "units_to_certify": self.units_to_certify()}

    @classmethod
    def from_dict(cls, d: dict) -> Harm:
        """Rebuild a harm from :meth:`to_dict` output."""
        return cls(**{f: d[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class GuardrailRule:
    """The rule for one guardrail metric: direction, limit and the control mean it is relative to."""

    metric: str
    goal: str  # the metric's goal: "increase" (harm = a fall) or "decrease" (harm = a rise)
    max_harm: float | None
    control_mean: float

    @property
    def relative(self) -> bool:
        """True when harm is relative to the control mean (False: absolute, the control mean is 0)."""
        return self.control_mean != 0.0

    @property
    def basis(self) -> str:
        """``relative`` or ``absolute``: what the harm is measured against."""
        return "relative" if self.relative else "absolute"

    @property
    def limit(self) -> float:
        """The bound harm must stay within: ``max_harm`` relative, or 0 absolute at a zero control mean."""
        if self.max_harm is None:
            return math.inf
        return float(self.max_harm) if self.relative else 0.0

    @property
    def sign(self) -> float:
        """+1 when a rise of the metric is harm, -1 when a fall is."""
        return 1.0 if self.goal == "decrease" else -1.0

    @property
    def scale(self) -> float:
        """What one unit of harm is divided by: the control mean's size, or 1 when harm is absolute."""
        return abs(self.control_mean) if self.relative else 1.0

    def to_dict(self) -> dict:
        """The rule as JSON (with its derived ``limit`` and ``basis``, for readers of the file)."""
        return {**asdict(self), "limit": self.limit if self.max_harm is not None else None, "basis": self.basis}

    @classmethod
    def from_dict(cls, d: dict) -> GuardrailRule:
        """Rebuild a rule from :meth:`to_dict` output (the derived fields are derived again, never read)."""
        return cls(metric=d["metric"], goal=d["goal"], max_harm=d["max_harm"], control_mean=float(d["control_mean"]))

    def at_control_mean(self, control_mean: float) -> GuardrailRule:
        """The same guardrail measured against another control mean (e.g. a live round's holdout)."""
        return replace(self, control_mean=float(control_mean))

    def verdict(self, estimate: float, se: float, n: int = 0, alpha: float = ALPHA) -> Harm:
        """The verdict on a harm estimate with its standard error (one-sided level ``1 - alpha``)."""
        lower, upper, verdict = judge(estimate, se, self.limit, alpha)
        return Harm(metric=self.metric, estimate=float(estimate), se=float(se), lower=lower, upper=upper,
                    limit=self.limit, max_harm=self.max_harm, basis=self.basis, level=1.0 - alpha, verdict=verdict, n=int(n))

    def harm(self, change: float | np.ndarray) -> float | np.ndarray:
        """The harm of a change against a known control mean (``self.control_mean``): true means, or one unit's."""
        return self.sign * change / self.scale

    def harm_and_se(self, change: np.ndarray, control: np.ndarray | None = None) -> tuple[float, float]:
        """Harm and standard error from per-unit changes against control (paired contributions).

        ``change[i]`` is unit i's contribution to the policy's value minus its contribution to all-control's
        (doubly-robust contributions, or a per-unit effect signal); ``control[i]`` its contribution to the
        control mean, whose sampling error enters by the delta method. Without ``control`` the control mean
        is taken as known (``self.control_mean``).
        """
        estimate, influence = self.harm_influence(change, control)
        n = len(influence)
        se = float(influence.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return estimate, se

    def harm_influence(self, change: np.ndarray, control: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Harm and its per-unit influence values (up to a constant) from the inputs of :meth:`harm_and_se`:
        their spread is the harm's standard error, and their correlation across policies on the same units is
        how alike those policies' harm estimates err (what simultaneous bounds need)."""
        change = np.asarray(change, dtype=float)
        n = len(change)
        if n == 0:
            return float("nan"), np.zeros(0)
        d = float(change.mean())
        if control is None or not self.relative:
            return float(self.harm(d)), self.harm(change)
        control = np.asarray(control, dtype=float)
        c = float(control.mean())
        if c == 0.0:
            return float("nan"), np.full(n, np.nan)
        # influence function of d / |c|: (change_i - d) / |c| - d * sign(c) * (control_i - c) / c^2
        influence = change / abs(c) - d * math.copysign(1.0, c) * control / c**2
        return float(self.sign * d / abs(c)), self.sign * influence

    def assess(self, change: np.ndarray, control: np.ndarray | None = None, alpha: float = ALPHA) -> Harm:
        """:meth:`harm_and_se` followed by :meth:`verdict`."""
        estimate, se = self.harm_and_se(change, control)
        return self.verdict(estimate, se, n=len(change), alpha=alpha)

    def certifiable(self, estimate: float, se: float, n: int, n_eval: int, margin: float | None = None) -> float:
        """The bound a held-out test of ``n_eval`` units is expected to need, from an estimate on ``n`` other
        units: ``estimate + margin * se * sqrt(n / n_eval)`` (the standard error grows as the units shrink)."""
        margin = certify_margin() if margin is None else margin
        return float(estimate + margin * se * math.sqrt(n / max(n_eval, 1)))


def rules_for(spec: ExperimentSpec, control_means: dict[str, float]) -> dict[str, GuardrailRule]:
    """One rule per guardrail metric of ``spec`` with a ``max_harm``, given each metric's control mean."""
    return {name: GuardrailRule(metric=name, goal=m.goal, max_harm=m.max_harm, control_mean=float(control_means[name]))
            for name, m in spec.metrics.items() if m.role == "guardrail"}


def prefix_bounds(rule: GuardrailRule, ranked_change: np.ndarray, base_change: np.ndarray | float = 0.0,
                  n_eval: int | None = None, margin: float | None = None) -> np.ndarray:
    """Certifiable harm bound of every prefix policy at once, along the last axis.

    ``ranked_change[..., i]`` is the change (in the metric's units) that treating the i-th ranked unit
    adds to it, and ``base_change[..., i]`` what that unit changes anyway (e.g. under exploration), so
    the policy treating the first ``L`` ranked units has per-unit changes
    ``base + ranked * [i < L]``. Returns, for every ``L = 1..n``, :meth:`GuardrailRule.certifiable` of its
    harm with the control mean taken as known (one cumulative sum of the changes and of their squares
    instead of one pass per prefix).
    """
    ranked = np.asarray(ranked_change, dtype=float)
    base = np.broadcast_to(np.asarray(base_change, dtype=float), ranked.shape)
    n = ranked.shape[-1]
    full = base + ranked
    total1 = base.sum(axis=-1, keepdims=True)
    total2 = (base**2).sum(axis=-1, keepdims=True)
    s1 = total1 + np.cumsum(ranked, axis=-1)
    s2 = total2 + np.cumsum(full**2 - base**2, axis=-1)
    mean = s1 / n
    var = np.maximum(s2 / n - mean**2, 0.0) * n / max(n - 1, 1)
    harm = rule.sign * mean / rule.scale
    se = np.sqrt(var / n) / rule.scale
    margin = certify_margin() if margin is None else margin
    return harm + margin * se * math.sqrt(n / max(n_eval or n, 1))


def certifiable_prefixes(constraints: list[tuple[GuardrailRule, np.ndarray, np.ndarray | float]], n_eval: int | None = None,
                         margin: float | None = None) -> np.ndarray:
    """Which prefix policies (treat the first L ranked units, L = 1..n along the last axis) are certifiable on
    every guardrail at once; constraints as :func:`best_certifiable_prefix` takes them."""
    allowed = None
    for rule, ranked, base in constraints:
        if rule.max_harm is None:
            continue
        ok = prefix_bounds(rule, ranked, base, n_eval=n_eval, margin=margin) <= rule.limit
        allowed = ok if allowed is None else allowed & ok
    return allowed


def best_certifiable_prefix(gain: np.ndarray, constraints: list[tuple[GuardrailRule, np.ndarray, np.ndarray | float]],
                            n_eval: int | None = None, max_count: np.ndarray | int | None = None,
                            margin: float | None = None, allowed: np.ndarray | None = None) -> np.ndarray:
    """How many top-ranked units to treat: the prefix with the largest total ``gain`` whose certifiable bound
    (:func:`prefix_bounds`) is within the limit on every guardrail at once.

    ``gain[..., i]`` is what treating the i-th ranked unit adds to the objective; each constraint is
    ``(rule, ranked_change, base_change)`` as :func:`prefix_bounds` takes them (or pass ``allowed`` from
    :func:`certifiable_prefixes` when several gains share one ranking). Checking all guardrails on the same
    prefix means raising the bar for one can never silently break another. Treating nobody (0) is the
    fallback when no prefix with a positive gain is certifiable.
    """
    gain = np.asarray(gain, dtype=float)
    n = gain.shape[-1]
    if allowed is None:
        allowed = certifiable_prefixes(constraints, n_eval=n_eval, margin=margin)
    allowed = np.ones(gain.shape, dtype=bool) if allowed is None else np.broadcast_to(allowed, gain.shape).copy()
    if max_count is not None:
        allowed &= np.arange(1, n + 1) <= np.asarray(max_count)[..., None]
    total = np.where(allowed, np.cumsum(gain, axis=-1), -np.inf)
    at = np.argmax(total, axis=-1)
    best = np.take_along_axis(total, at[..., None], axis=-1)[..., 0]
    return np.where(np.isfinite(best) & (best > 0), at + 1, 0)
