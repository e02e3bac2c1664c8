"""The guardrail rule checked sequentially: an always-valid bound for a canary watched after every batch.

A canary's guardrail harm is measured again each time outcomes arrive. The fixed one-sided bound
(:func:`pex.experiment.guardrail.judge`, ``estimate - 1.645 se``) holds at one look decided in advance; checked
after every batch it fires on a harmless version far more often than 5% (the chance that *some* look strays,
which grows with the number of looks: ``tests/monitor/test_sequential_rates.py`` measures it). The rollback must
not inflate like that, so the bound here is a **confidence sequence**: it holds at every number of units at once.

It is the two-sided normal-mixture boundary (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", the normal mixture of their section 3.2),
applied to the harm's estimate with its estimated standard error, which makes it an *asymptotic* confidence
sequence (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas 2023, "Time-uniform central limit theory and asymptotic
confidence sequences"). With ``x = rho / V`` (the mixture's precision over the information so far) the half-width
is::

    se * sqrt((1 + x) * log((1 + x) / (x * a**2)))

at total level ``a = 2 * alpha``, so that each side (the rollback's lower bound, the certification's upper
bound) holds at about ``alpha``. The mixture precision is chosen once, before any data, so that the bound is
tightest at the canary's ``planned_n`` units: ``x = X0 * planned_n / n`` with ``X0`` the minimiser of the
multiplier (:func:`tightest_x`). Its price is a multiplier above the fixed ``z_alpha`` at every ``n``
(:func:`multiplier`), growing like ``sqrt(log n)`` far beyond ``planned_n``.

The harm, its standard error and the limit are the guardrail rule's own (as :func:`pex.online.lifts.harm_of`
measures an arm: Fieller's test at the limit, :meth:`GuardrailRule.assess_means`): only the multiplier changes,
so ``lower > limit`` is the rule's test of harm beyond ``max_harm``, now valid however often it is looked at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache

from scipy import optimize

from pex.errors import DataError
from pex.evaluation.estimators import Estimate
from pex.experiment.guardrail import ALPHA, GuardrailRule

METHOD = "normal-mixture confidence sequence (Howard et al. 2021), asymptotic (Waudby-Smith et al. 2023)"


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise DataError(f"alpha must be strictly between 0 and 0.5, got {alpha}",
                        "alpha is the one-sided error of each bound, e.g. 0.05")


def _root(x: float, alpha: float) -> float:
    a = 2.0 * alpha
    return math.sqrt((1.0 + x) * math.log((1.0 + x) / (x * a * a)))


@cache
def tightest_x(alpha: float = ALPHA) -> float:
    """The ``x = rho / V`` at which the normal-mixture multiplier is smallest (found numerically once per level)."""
    _check_alpha(alpha)
    # the multiplier is unimodal in log x: large as x -> 0 (log 1/x) and as x -> inf (sqrt x)
    found = optimize.minimize_scalar(lambda t: _root(math.exp(t), alpha), bounds=(-20.0, 10.0), method="bounded",
                                     options={"xatol": 1e-10})
    return float(math.exp(found.x))


def multiplier(n: int, planned_n: int, alpha: float = ALPHA) -> float:
    """Standard errors between the harm's estimate and either always-valid bound after ``n`` units, for a mixture
    tuned to ``planned_n`` units (one-sided level ``alpha`` per side)."""
    _check_alpha(alpha)
    if planned_n < 1:
        raise DataError(f"planned_n must be a positive number of units, got {planned_n}",
                        "the units the canary is planned to reach; the bound is tightest there")
    if n < 1:
        return math.inf
    return _root(tightest_x(alpha) * planned_n / n, alpha)


@dataclass(frozen=True)
class SequentialHarm:
    """One guardrail's harm with always-valid bounds and its verdict.

    ``pass``: ``upper <= limit`` (kept, certified on the units so far); ``fail``: ``lower > limit`` (harm
    significantly beyond ``max_harm``: roll back); else ``inconclusive``. ``z`` is the rule's test statistic
    ``(estimate - limit) / se``; ``multiplier`` the boundary it is compared with.
    """

    metric: str
    estimate: float
    se: float
    lower: float
    upper: float
    limit: float
    n: int
    verdict: str  # pass | fail | inconclusive
    alpha: float
    method: str
    planned_n: int
    multiplier: float
    z: float | None

    @property
    def passed(self) -> bool:
        """True when the always-valid upper bound is within the limit."""
        return self.verdict == "pass"

    @property
    def failed(self) -> bool:
        """True when the always-valid lower bound is beyond the limit."""
        return self.verdict == "fail"

    def to_dict(self) -> dict:
        """The harm as JSON (non-finite figures as None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def sequential_harm(rule: GuardrailRule, value: Estimate, control: Estimate, *, alpha: float = ALPHA,
                    planned_n: int) -> SequentialHarm:
    """``rule``'s harm of ``value`` (the canary's arm) against all-control's ``control`` with always-valid bounds.

    Valid when checked after every batch of outcomes on the cumulative data (the module docstring: which bound, and
    why). ``planned_n`` is the canary's planned units, where the bound is tightest; ``n`` is ``value.n``.
    """
    # pex.online.lifts.harm_of's call (a sibling layer this one may not import): the rule's Fieller test at the
    # limit, for two independent samples (the change covaries with control by -var(control))
    harm = rule.at_control_mean(control.value).assess_means(
        value.value - control.value, math.hypot(value.se, control.se), control.se, -control.se**2, n=value.n, alpha=alpha)
    n = int(harm.n)
    m = multiplier(n, planned_n, alpha)
    est, se, limit = float(harm.estimate), float(harm.se), float(harm.limit)
    if math.isfinite(se) and se > 0 and math.isfinite(m) and math.isfinite(est):
        lower, upper = est - m * se, est + m * se
        z = (est - limit) / se if math.isfinite(limit) else None
        verdict = "pass" if upper <= limit else "fail" if lower > limit else "inconclusive"
    else:  # no units, or no spread to measure: no evidence either way
        lower, upper, z, verdict = -math.inf, math.inf, None, "inconclusive"
    return SequentialHarm(metric=rule.metric, estimate=est, se=se, lower=lower, upper=upper, limit=limit, n=n,
                          verdict=verdict, alpha=float(alpha), method=METHOD, planned_n=int(planned_n), multiplier=m, z=z)
