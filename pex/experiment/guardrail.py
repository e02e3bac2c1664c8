"""The guardrail rule, in one place.

A guardrail metric has a ``max_harm``: the largest tolerated change in its
harmful direction, relative to the control mean, or a ``max_harm_abs``: the
largest tolerated change in the metric's own units (for metrics whose control
mean can be 0). With only ``max_harm`` and a control mean of exactly 0 a
relative change is undefined: harm is then absolute against a limit of 0,
which a policy that raises the metric at all cannot meet
(:attr:`GuardrailRule.zero_control`). A policy or an arm **keeps** a guardrail
when the one-sided upper bound of its harm, at level :data:`LEVEL`, is within
the limit:

* ``pass``: upper bound <= limit (certified);
* ``fail``: lower bound > limit (harm beyond the limit is established);
* ``inconclusive``: neither.

Every stage uses this module: ``pex analyze`` (average effects), the value
policy's calibration, the trees, the weight search, the off-policy
comparison, the recommendation, the report and the CLI text. Harm comes from
paired per-unit contributions (the policy's and all-control's doubly-robust
contributions on the same units, or per-unit effect signals).

When the control mean is itself estimated on those units, the test is
Fieller's: harm ``sign * d / c`` is within limit ``L`` exactly when the mean of
``U_i = sign * change_i - L * control_i`` is at most 0, a linear statistic
with no division by a noisy ``c``, whose variance is taken under the null
(its uncentred second moment, since ``E[U] = 0`` at the boundary). The harm's
``se`` is ``se(U) / |c|``, so ``estimate + z * se <= limit`` is that test at
every ``z``. The delta method on ``d / c`` (the earlier rule) let rare events
through: with the true harm at the limit it passed 6.2% of binary guardrails
at about 240 control events and 10.3% at 10, against the 5% stated; this test
passes 4.7-5.1% at each (``tests/experiment/test_guardrail_rare.py``).

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
# below about this many events of a count or binary guardrail in control, its normal-approximation bound is rough
FEW_EVENTS = 100


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
    """One guardrail's harm for one policy or arm, with its verdict at ``level`` (one-sided).

    ``se`` is the standard error the verdict uses: with an estimated control mean it is taken at the limit
    (Fieller's test, see the module), so ``upper <= limit`` is the test itself. ``control_events`` is the sum of
    a count or binary metric over the control units the harm was measured on (None for other metrics): with few
    events (:data:`FEW_EVENTS`) the bound rests on a normal approximation that is rough.
    """

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
    max_harm_abs: float | None = None
    control_events: float | None = None

    @property
    def passed(self) -> bool:
        """True when the upper bound is within the limit (the guardrail is kept)."""
        return self.verdict == "pass"

    @property
    def few_events(self) -> bool:
        """True when the harm of a count or binary metric rests on fewer than :data:`FEW_EVENTS` control events."""
        return self.control_events is not None and self.control_events < FEW_EVENTS

    def units_to_certify(self, power: float = POWER) -> int | None:
        """Roughly how many evaluation units would make the upper bound (at this harm's own level) pass with
        probability ``power``, if the harm and the per-unit spread stayed as estimated:
        ``n * ((z_level + z_power) * se / (limit - estimate))^2``. None when the estimate itself is at or over the
        limit (more units would not certify it) or there is no spread to scale."""
        if not (math.isfinite(self.se) and self.se > 0 and self.n > 0):
            return None
        slack = self.limit - self.estimate
        if not slack > 0:
            return None
        z_level = (self.upper - self.estimate) / self.se
        return math.ceil(self.n * ((z_level + float(stats.norm.ppf(power))) * self.se / slack) ** 2)

    def at(self, alpha: float) -> Harm:
        """The same estimate judged at another one-sided level (e.g. Bonferroni-adjusted over candidates)."""
        lower, upper, verdict = judge(self.estimate, self.se, self.limit, alpha)
        return replace(self, lower=lower, upper=upper, level=1.0 - alpha, verdict=verdict)

    def to_dict(self) -> dict:
        """The harm as JSON, with the units to certify it at :data:`POWER` (``power``)."""
        return {**asdict(self), "units_to_certify": self.units_to_certify(), "power": POWER}

    @classmethod
    def from_dict(cls, d: dict) -> Harm:
        """Rebuild a harm from :meth:`to_dict` output (fields added since it was written take their defaults)."""
        return cls(**{f: d[f] for f in cls.__dataclass_fields__ if f in d})


@dataclass(frozen=True)
class GuardrailRule:
    """The rule for one guardrail metric: direction, limit and the control mean it is relative to.

    ``max_harm`` is a limit relative to the control mean, ``max_harm_abs`` one in the metric's own units (the spec
    allows one of them); ``limit``, ``basis`` and ``relative`` follow from whichever is set.
    """

    metric: str
    goal: str  # the metric's goal: "increase" (harm = a fall) or "decrease" (harm = a rise)
    max_harm: float | None
    control_mean: float
    max_harm_abs: float | None = None

    @property
    def has_limit(self) -> bool:
        """True when the guardrail has a limit to hold harm to (``max_harm`` or ``max_harm_abs``)."""
        return self.max_harm is not None or self.max_harm_abs is not None

    @property
    def relative(self) -> bool:
        """True when harm is relative to the control mean (False: absolute, by ``max_harm_abs`` or a control mean
        of 0)."""
        return self.max_harm_abs is None and self.control_mean != 0.0

    @property
    def zero_control(self) -> bool:
        """True when only a relative ``max_harm`` is set and the control mean is exactly 0: a relative change is
        undefined, harm falls back to absolute against a limit of 0, and a policy that raises the harm at all cannot
        be certified (``max_harm_abs`` is the way to state a tolerance)."""
        return self.max_harm_abs is None and self.max_harm is not None and self.control_mean == 0.0

    @property
    def basis(self) -> str:
        """``relative`` or ``absolute``: what the harm is measured against."""
        return "relative" if self.relative else "absolute"

    @property
    def limit(self) -> float:
        """The bound harm must stay within: ``max_harm_abs``; else ``max_harm`` relative, or 0 absolute at a zero
        control mean; infinite without either."""
        if self.max_harm_abs is not None:
            return float(self.max_harm_abs)
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
        return {**asdict(self), "limit": self.limit if self.has_limit else None, "basis": self.basis}

    @classmethod
    def from_dict(cls, d: dict) -> GuardrailRule:
        """Rebuild a rule from :meth:`to_dict` output (the derived fields are derived again, never read)."""
        return cls(metric=d["metric"], goal=d["goal"], max_harm=d["max_harm"], control_mean=float(d["control_mean"]),
                   max_harm_abs=d.get("max_harm_abs"))

    def at_control_mean(self, control_mean: float) -> GuardrailRule:
        """The same guardrail measured against another control mean (e.g. a live round's holdout)."""
        return replace(self, control_mean=float(control_mean))

    def verdict(self, estimate: float, se: float, n: int = 0, alpha: float = ALPHA,
                control_events: float | None = None) -> Harm:
        """The verdict on a harm estimate with its standard error (one-sided level ``1 - alpha``)."""
        lower, upper, verdict = judge(estimate, se, self.limit, alpha)
        return Harm(metric=self.metric, estimate=float(estimate), se=float(se), lower=lower, upper=upper,
                    limit=self.limit, max_harm=self.max_harm, basis=self.basis, level=1.0 - alpha, verdict=verdict, n=int(n),
                    max_harm_abs=self.max_harm_abs, control_events=None if control_events is None else float(control_events))

    def harm(self, change: float | np.ndarray) -> float | np.ndarray:
        """The harm of a change against a known control mean (``self.control_mean``): true means, or one unit's."""
        return self.sign * change / self.scale

    def harm_and_se(self, change: np.ndarray, control: np.ndarray | None = None) -> tuple[float, float]:
        """Harm and the standard error its verdict uses, from per-unit changes against control (paired contributions).

        ``change[i]`` is unit i's contribution to the policy's value minus its contribution to all-control's
        (doubly-robust contributions, or a per-unit effect signal); ``control[i]`` its contribution to the
        control mean. With ``control`` the control mean is estimated on the same units and the standard error is
        Fieller's at the limit (see the module): ``estimate + z * se <= limit`` is the test of the linear statistic
        ``sign * change - limit * control``. Without it the control mean is taken as known (``self.control_mean``)
        and the standard error is the plain one of the mean change. Arrays of shape ``(..., n)`` give one harm per
        row (arrays back); 1-d inputs give floats.
        """
        change = np.asarray(change, dtype=float)
        n = change.shape[-1]
        if n < 2:
            estimate = float(self.harm(change.mean())) if n else float("nan")
            return estimate, float("nan")
        if control is None:
            estimate, statistic, scale = self.harm(change.mean(axis=-1)), self.sign * change, self.scale
            se = statistic.std(axis=-1, ddof=1) / math.sqrt(n) / scale
        else:
            estimate, statistic, scale = self._at_limit(change, np.asarray(control, dtype=float))
            # the variance under the null (E[U] = 0 at the boundary): the uncentred second moment
            with np.errstate(invalid="ignore", divide="ignore"):
                se = np.sqrt((statistic**2).sum(axis=-1) / (n - 1) / n) / scale
        if change.ndim == 1:
            return float(estimate), float(se)
        return np.asarray(estimate, dtype=float), np.asarray(se, dtype=float)

    def _at_limit(self, change: np.ndarray, control: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Harm, Fieller's statistic ``U_i`` at the limit (mean <= 0 exactly when harm <= limit) and what divides
        ``U``'s mean to put it on the harm's scale, along the last axis."""
        d = np.asarray(change.mean(axis=-1))
        if not self.relative:
            # absolute harm: U = sign * change - limit (a limit of 0 at a zero control mean)
            at = self.limit if math.isfinite(self.limit) else self.sign * d[..., None]  # no limit: the plain spread
            return self.sign * d, self.sign * change - at, np.ones_like(d)
        c = np.asarray(control.mean(axis=-1))
        size = np.abs(c)
        with np.errstate(invalid="ignore", divide="ignore"):
            estimate = np.where(size > 0, self.sign * d / np.where(size > 0, size, 1.0), np.nan)
        # without a limit there is no boundary: the statistic at the estimate (the delta method's spread)
        at = self.limit if math.isfinite(self.limit) else estimate[..., None]
        statistic = self.sign * change - at * np.sign(c)[..., None] * control
        return estimate, statistic, np.where(size > 0, size, np.nan)

    def assess_means(self, change: float, change_se: float, control_se: float, covariance: float, n: int = 0,
                     alpha: float = ALPHA) -> Harm:
        """The verdict on a change of means against the estimated control mean ``self.control_mean``, from the two
        estimates' standard errors and covariance (a regression's intercept and effect, or two independent means:
        covariance ``-control_se**2`` between ``arm - control`` and ``control``).

        Fieller's test at the limit as :meth:`harm_and_se` makes it, on the means: harm ``sign * change / |c|`` is
        within the limit ``L`` when ``sign * change - L * sign(c) * c`` is at most 0, whose variance is
        ``var(change) + L^2 var(c) - 2 L sign * sign(c) cov``; the harm's ``se`` is its square root over ``|c|``.
        """
        if not self.relative or not math.isfinite(self.limit):
            estimate, se = self.sign * change, change_se
        else:
            c, lim = self.control_mean, self.limit
            var = change_se**2 + lim**2 * control_se**2 - 2.0 * lim * self.sign * math.copysign(1.0, c) * covariance
            estimate, se = self.sign * change / abs(c), math.sqrt(max(var, 0.0)) / abs(c) if math.isfinite(var) else math.nan
        return self.verdict(estimate, se, n=n, alpha=alpha)

    def harm_influence(self, change: np.ndarray, control: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Harm and per-unit influence values from the inputs of :meth:`harm_and_se`: their sample standard deviation
        over ``sqrt(n)`` is its standard error, and their correlation across policies on the same units is how alike
        those policies' harm tests err (what simultaneous bounds need)."""
        change = np.asarray(change, dtype=float)
        n = len(change)
        if n == 0:
            return float("nan"), np.zeros(0)
        estimate, se = self.harm_and_se(change, control)
        if control is None:
            return estimate, self.sign * change / self.scale
        _, statistic, _ = self._at_limit(change, np.asarray(control, dtype=float))
        centred = statistic - statistic.mean()
        spread = float(centred.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
        if not (math.isfinite(se) and spread > 0):
            return estimate, np.full(n, np.nan if not math.isfinite(se) else estimate)
        # U's own centred deviations, scaled so that their spread is the null standard error the verdict uses
        return estimate, estimate + centred * (se / spread)

    def assess(self, change: np.ndarray, control: np.ndarray | None = None, alpha: float = ALPHA,
               control_events: float | None = None) -> Harm:
        """:meth:`harm_and_se` followed by :meth:`verdict`."""
        estimate, se = self.harm_and_se(change, control)
        return self.verdict(estimate, se, n=len(change), alpha=alpha, control_events=control_events)

    def certifiable(self, estimate: float, se: float, n: int, n_eval: int, margin: float | None = None) -> float:
        """The bound a held-out test of ``n_eval`` units is expected to need, from an estimate on ``n`` other
        units: ``estimate + margin * se * sqrt(n / n_eval)`` (the standard error grows as the units shrink)."""
        margin = certify_margin() if margin is None else margin
        return float(estimate + margin * se * math.sqrt(n / max(n_eval, 1)))


def rules_for(spec: ExperimentSpec, control_means: dict[str, float]) -> dict[str, GuardrailRule]:
    """One rule per guardrail metric of ``spec`` (with its ``max_harm`` or ``max_harm_abs``), given each metric's
    control mean."""
    return {name: GuardrailRule(metric=name, goal=m.goal, max_harm=m.max_harm, control_mean=float(control_means[name]),
                                max_harm_abs=m.max_harm_abs)
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
        if not rule.has_limit:
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
