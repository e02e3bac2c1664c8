"""Which policy to ship: the rule behind ``recommended_policy``.

1. **Eligible** policies keep every guardrail: the held-out doubly-robust harm
   is within ``max_harm`` and its verdict is not "fail". (An "inconclusive"
   verdict is eligible but named in the reasons: at experiment sizes the harm
   of a rare guardrail event often cannot be certified either way.) Uniform
   random is a baseline, never a recommendation.
2. The **best** eligible policy has the largest primary value (goal-signed
   doubly-robust value of the primary metric; with several primary metrics,
   the owner's objective).
3. Among eligible policies **not significantly worse** than the best (the
   paired 95% interval of "best minus this one" reaches 0), the simplest one
   wins: one arm for everyone, then shallower trees, then the value model.
4. If that is a personalized policy whose paired lift over the best eligible
   single arm does not exclude 0, **the single arm is recommended** instead,
   and the verdict says that personalization did not beat it.
5. A single arm other than control is only recommended when its paired lift
   over all-control excludes 0 (the plain A/B decision); otherwise control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pex import ope
from pex.policy import Policy
from pex.policy_eval import EvaluationData, action_distribution
from pex.spec import ExperimentSpec

UNIFORM_EXPLORATION = 1.0


def complexity(policy: Policy) -> int:
    """How much there is to understand and serve: one arm 0, a tree its depth, a value model 10."""
    if policy.kind == "constant":
        return 0
    if policy.kind == "tree":
        return int(policy.lineage.get("distilled_depth") or _depth(policy.tree))
    return 10


def _depth(node: dict | None) -> int:
    if not node or "arm" in node:
        return 0
    return 1 + max(_depth(node.get("left")), _depth(node.get("right")))


def _harm(guardrail: dict) -> float:
    """A comparison row's guardrail harm: relative to the control mean, or absolute when that mean is 0."""
    return guardrail.get("relative_harm", guardrail.get("absolute_harm", 0.0))


@dataclass
class Recommendation:
    policy: str
    kind: str
    verdict: str  # personalize | ship_arm | keep_control
    headline: str
    reasons: list[str]
    primary: str
    eligible: list[str]

    def to_dict(self) -> dict:
        return {"policy": self.policy, "kind": self.kind, "verdict": self.verdict, "headline": self.headline,
                "reasons": self.reasons, "primary": self.primary, "eligible": self.eligible}


def recommend(policies: list[Policy], rows: list[dict], data: EvaluationData, spec: ExperimentSpec,
              coefficients: dict[str, float]) -> Recommendation:
    """Apply the module's rule to policies valued by :func:`pex.policy_eval.compare` (``rows``, same order)."""
    primaries = [m for m, meta in spec.metrics.items() if meta.role == "primary"] or \
                [m for m, meta in spec.metrics.items() if meta.role != "guardrail"]
    single = len(primaries) == 1
    primary = primaries[0] if single else "objective"
    sign = (1.0 if spec.metrics[primary].goal == "increase" else -1.0) if single else 1.0
    dr = ope.DoublyRobust()

    def contributions(policy: Policy) -> ope.Estimate:
        dist = action_distribution(policy, data)
        if single:
            return dr.estimate(data.rewards[primary], data.action, data.pscore, dist, data.reward_hat[primary])
        total = sum(coefficients.get(m, 0.0) * dr.estimate(data.rewards[m], data.action, data.pscore, dist, data.reward_hat[m]).contributions
                    for m in data.rewards)
        return ope.Estimate.from_contributions("dr", np.asarray(total, dtype=float))

    reasons: list[str] = []
    by_name = {p.name: (p, r) for p, r in zip(policies, rows)}
    candidates = [p for p in policies if not (p.kind == "constant" and p.exploration >= UNIFORM_EXPLORATION)]
    eligible = []
    for p in candidates:
        rails = by_name[p.name][1].get("guardrails", {})
        if all(g["verdict"] != "fail" and (g["max_harm"] is None or _harm(g) <= g["max_harm"])
               for g in rails.values()):
            eligible.append(p)
    if not eligible:  # all-control harms nothing, so this only happens without a control baseline
        eligible = [p for p in candidates if p.kind == "constant" and p.default_arm == spec.control] or candidates
        reasons.append("no policy kept every guardrail; falling back to control")
    estimates = {p.name: contributions(p) for p in eligible}
    score = {name: sign * e.value for name, e in estimates.items()}
    best = max(eligible, key=lambda p: score[p.name])

    def lift(a: Policy, b: Policy) -> tuple[float, float, float]:
        """How much better ``a`` is than ``b`` on the primary (goal-signed), with its paired 95% interval."""
        d = ope.difference(estimates[a.name], estimates[b.name])
        lo, hi = sorted((sign * d.ci_low, sign * d.ci_high))
        return sign * d.value, lo, hi

    near = [p for p in eligible if p is best or lift(best, p)[1] <= 0]
    choice = min(near, key=lambda p: (complexity(p), -score[p.name]))
    label = primary if single else "the objective"
    if choice is not best:
        gap, lo, hi = lift(best, choice)
        reasons.append(f"{best.name} has the highest {label} value, but {choice.name} is simpler and not significantly worse "
                       f"(difference {gap:+.4g}, 95% CI {lo:+.4g} to {hi:+.4g})")
    constants = [p for p in eligible if p.kind == "constant"]
    best_arm = max(constants, key=lambda p: score[p.name]) if constants else None
    every_arm = [p for p in candidates if p.kind == "constant"]
    for p in every_arm:
        if p not in eligible and best_arm is not None:
            value = sign * contributions(p).value
            if value > score[best_arm.name]:
                broken = [m for m, g in by_name[p.name][1].get("guardrails", {}).items()
                          if g["verdict"] == "fail" or _harm(g) > (g["max_harm"] or 0.0)]
                reasons.append(f"giving everyone {p.default_arm!r} would do better on {label} ({value:+.4g} vs {score[best_arm.name]:+.4g}) "
                               f"but breaks the {', '.join(broken)} guardrail, so it is not an option")
    if choice.kind != "constant" and best_arm is not None:
        gain, lo, hi = lift(choice, best_arm)
        if lo <= 0:
            reasons.append(f"{choice.name} does not beat giving everyone {best_arm.default_arm!r} on {label}: "
                           f"lift {gain:+.4g}, 95% CI {lo:+.4g} to {hi:+.4g} (includes 0)")
            choice = best_arm
        else:
            reasons.append(f"{choice.name} beats giving everyone {best_arm.default_arm!r} on {label} by {gain:+.4g} "
                           f"per unit (95% CI {lo:+.4g} to {hi:+.4g})")
    control = next((p for p in eligible if p.kind == "constant" and p.default_arm == spec.control), None)
    if choice.kind == "constant" and control is not None and choice is not control:
        # shipping an arm to everyone is the plain A/B decision: only when it beats control
        gain, lo, hi = lift(choice, control)
        if lo <= 0:
            reasons.append(f"giving everyone {choice.default_arm!r} does not significantly beat {spec.control!r} on {label} "
                           f"(lift {gain:+.4g}, 95% CI {lo:+.4g} to {hi:+.4g})")
            choice = control
    for metric, g in by_name[choice.name][1].get("guardrails", {}).items():
        if g["verdict"] == "inconclusive":
            reasons.append(f"guardrail {metric}: harm {_harm(g):+.1%} is within "
                           f"the {g['max_harm']:.0%} limit, but its 95% interval ({g['ci_low']:+.1%} to {g['ci_high']:+.1%}) "
                           "cannot rule out more: watch it after launch")
    if choice.kind == "constant":
        verdict = "keep_control" if choice.default_arm == spec.control else "ship_arm"
        headline = (f"Keep {spec.control!r} for everyone: no arm and no personalized policy did better on {label} "
                    "while keeping the guardrails." if verdict == "keep_control" else
                    f"Ship {choice.default_arm!r} to everyone: no personalized policy did significantly better on {label}.")
    else:
        verdict = "personalize"
        kind = "a decision tree of depth " + str(complexity(choice)) if choice.kind == "tree" else "the value-model policy"
        headline = f"Personalize with {choice.name} ({kind}): it beats the best single arm on {label} and keeps the guardrails."
    return Recommendation(policy=choice.name, kind=choice.kind, verdict=verdict, headline=headline, reasons=reasons,
                          primary=primary, eligible=[p.name for p in eligible])
