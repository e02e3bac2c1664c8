"""Which policy to ship: the rule behind ``recommended_policy``.

A recommendation must hold on units it was not chosen on, by its confidence
bound, not its point estimate (:mod:`pex.experiment.guardrail`). The rule:

1. **Candidates** are every policy but uniform random (a baseline) and
   all-control (the fallback, which harms nothing by definition), and among
   distilled trees only the depth the distillation chose.
2. **Screen on the building units.** With a single hold-out, a candidate
   whose guardrail harm, measured on the fit's training units with
   out-of-fold doubly-robust pseudo-outcomes, could not pass on the held-out
   units even if that estimate were exact (its certifiable bound is over the
   limit) is dropped before the held-out units are looked at; the screen uses
   no held-out unit, so it costs the test nothing. Under cross-fitting (the
   default) there are no such units: a half-policy's training half is the
   other half's test data, so a screen there would pick the family and its
   order by the very noise the test then measures. It is shown, but drops
   nothing.
3. **Certify on the held-out units.** The candidates are ordered before the
   test: those whose building-units screen is unbiased first (the value
   policy and its ladder, which choose arms by out-of-fold predictions with
   no search over the pseudo-outcomes the screen measures them with), then,
   with a single hold-out, the safest on the building units; cross-fitted,
   by recipe alone (the ladder's safest planned step first). By default
   (``graphical``) the first gets half of the one-sided 5% and the others the
   other half, tested together by step-down max-t; a pass hands its share on
   (:mod:`pex.evaluation.multiple_testing`), so a first candidate that
   narrowly misses no longer stops every other test, and the chance that any
   certified policy truly breaks a guardrail stays within 5%. ``gated``
   (the first alone at the full level, the rest only once it passed),
   ``fixed-sequence`` and ``step-down`` are the alternatives. A candidate is
   **certified** when every guardrail passes. A failed sample-ratio check
   blocks certification unless the owner records why it is harmless.
4. The **best** certified policy (control included) has the largest primary
   value (goal-signed doubly-robust value of the primary metric; with several
   primary metrics, the owner's objective). Among certified policies not
   significantly worse (the bound of "best minus this one" reaches 0), the
   simplest wins: one arm for everyone, then shallower trees, then value models.
   Claims about the chosen policy (its lift over an arm or control) use bounds
   that hold simultaneously over every certified candidate against every
   certified single arm, since it was chosen among them (one critical value
   from their joint normal law, :func:`pex.evaluation.estimators.simultaneous_z`).
5. A personalized policy must beat the best certified single arm (control
   included) by its lower bound; a single arm other than control must beat
   control by its lower bound. Otherwise the simpler option is recommended.
6. When control is kept, the reasons say why in codes and numbers: which
   candidate was tested first and by how much its bound missed, which were
   certified but not significantly better, which were screened out or never
   tested, and, for the gatekeeper and the best candidate whose estimate is
   inside its limit, how many units would certify it at 80% power if the
   harm is as estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pex.evaluation import estimators as ope
from pex.evaluation.comparison import EvaluationData, action_distribution, harm_estimates
from pex.evaluation.multiple_testing import Claim, Tested, certify
from pex.evaluation.procedures import CERTIFICATION, CERTIFICATIONS, PROCEDURE, certified_text
from pex.experiment.guardrail import ALPHA, POWER, Harm, tail_level
from pex.experiment.spec import ExperimentSpec
from pex.policy.base import Policy
from pex.policy.constant import constant_policy
from pex.policy.constrained import Screen

UNIFORM_EXPLORATION = 1.0


def complexity(policy: Policy) -> int:
    """How much there is to understand and serve: one arm 0, a tree its depth, a value model 10."""
    return policy.complexity


def is_candidate(policy: Policy, control: str) -> bool:
    """Whether the recommendation considers ``policy``: not uniform random, not all-control (the fallback), and
    for distilled trees only the depth their distillation chose."""
    if policy.single_arm is not None:
        return policy.exploration < UNIFORM_EXPLORATION and policy.single_arm != control
    return bool(policy.lineage.get("candidate", True))


# What a reason says, as a code; its sentence is rendered from the code and its parameters by reason_text alone,
# so a reader (the report, the terminal, the web UI) matches codes and parameters, never prose.
CONSTANT_EQUIVALENT = "constant_equivalent"  # a personalized candidate that gives every unit one arm
SIMPLER_NOT_WORSE = "simpler_not_worse"  # the best certified policy lost to a simpler one not significantly worse
ARM_NOT_CERTIFIED = "arm_not_certified"  # one arm for everyone would do better but breaks a guardrail
NO_LIFT_OVER_BEST_ARM = "no_lift_over_best_arm"  # a personalized policy that does not beat the best arm by its bound
BEATS_BEST_ARM = "beats_best_arm"  # a personalized policy that beats the best arm by its bound
ARM_NO_LIFT_OVER_CONTROL = "arm_no_lift_over_control"  # one arm for everyone that does not beat control by its bound
SCREENED_OUT = "screened_out"  # dropped on the building units before the held-out test
CANNOT_CERTIFY = "cannot_certify"  # a tested candidate not certified (role gatekeeper, best_inside or best): its miss and units
CERTIFIED_NOT_BETTER = "certified_not_better"  # certified candidates that did not beat control by their lower bound
NOT_TESTED = "not_tested"  # candidates the procedure never tested (it stopped at a failure)
SRM_FAILED = "srm_failed"  # the sample-ratio check failed: nothing is certified
SRM_ACCEPTED = "srm_accepted"  # the sample-ratio check failed, and the owner recorded why certifying anyway is sound
REASON_CODES = (CONSTANT_EQUIVALENT, SIMPLER_NOT_WORSE, ARM_NOT_CERTIFIED, NO_LIFT_OVER_BEST_ARM, BEATS_BEST_ARM,
                ARM_NO_LIFT_OVER_CONTROL, SCREENED_OUT, CANNOT_CERTIFY, CERTIFIED_NOT_BETTER, NOT_TESTED, SRM_FAILED,
                SRM_ACCEPTED)


@dataclass(frozen=True)
class Reason:
    """One reason behind a recommendation: a code from :data:`REASON_CODES` and its parameters (JSON values)."""

    code: str
    params: dict[str, Any]

    @property
    def text(self) -> str:
        """The sentence (:func:`reason_text`)."""
        return reason_text(self.code, self.params)

    def to_dict(self) -> dict[str, Any]:
        """The reason as JSON: code, parameters and its sentence."""
        return {"code": self.code, "params": self.params, "text": self.text}


def reason_text(code: str, p: dict[str, Any]) -> str:
    """The sentence of a reason: the one place where each code's words are written."""
    if code == CONSTANT_EQUIVALENT:
        return f"{p['policy']} gives every held-out unit {p['arm']!r}, so it is not a personalized option"
    if code == SIMPLER_NOT_WORSE:
        return (f"{p['best']} has the highest {p['label']} value, but {p['policy']} is simpler and not significantly worse "
                f"(difference {p['gap']:+.4g}, bounds {p['low']:+.4g} to {p['high']:+.4g})")
    if code == ARM_NOT_CERTIFIED:
        return (f"giving everyone {p['arm']!r} would do better on {p['label']} ({p['score']:+.4g} vs {p['best_score']:+.4g}) "
                f"but {_not_certified([Harm.from_dict(h) for h in p['harms'].values()])}, so it is not an option")
    if code == NO_LIFT_OVER_BEST_ARM:
        return (f"{p['policy']} does not beat giving everyone {p['arm']!r} on {p['label']} by its lower bound: "
                f"lift {p['gain']:+.4g}, bounds {p['low']:+.4g} to {p['high']:+.4g}")
    if code == BEATS_BEST_ARM:
        return (f"{p['policy']} beats giving everyone {p['arm']!r} on {p['label']} by {p['gain']:+.4g} "
                f"per unit (bounds {p['low']:+.4g} to {p['high']:+.4g})")
    if code == ARM_NO_LIFT_OVER_CONTROL:
        return (f"giving everyone {p['arm']!r} does not beat {p['control']!r} on {p['label']} by its lower "
                f"bound (lift {p['gain']:+.4g}, bounds {p['low']:+.4g} to {p['high']:+.4g})")
    if code == SCREENED_OUT:
        return (f"{p['policy']} was dropped before the held-out test: on the building units its {', '.join(p['failing'])} "
                "harm could not be certified even if the estimate were exact")
    if code == CANNOT_CERTIFY:
        return _cannot_certify_text(p)
    if code == CERTIFIED_NOT_BETTER:
        each = "; ".join(f"{q['policy']} {q['gain']:+.4g} (bounds {q['low']:+.4g} to {q['high']:+.4g})" for q in p["policies"])
        return (f"certified to keep the guardrails but not significantly better than {p['control']!r} on {p['label']} "
                f"(estimated lift per unit, simultaneous bounds): {each}")
    if code == NOT_TESTED:
        return (f"not tested, so neither certified nor rejected: {', '.join(p['policies'])} (the {p['method']} procedure "
                f"stops once {p['stopped_at']} is not certified)")
    if code == SRM_FAILED:
        counts = ", ".join(f"{a} {n:,}" for a, n in p["counts"].items())
        shares = ", ".join(f"{a} {x:.1%}" for a, x in p["expected_shares"].items())
        return (f"the sample-ratio check failed (p = {p['p_value']:.2g}; arm counts {counts} against expected shares "
                f"{shares}), so the randomization cannot be trusted and nothing was certified: find why units went "
                "missing or were misassigned, or, if the mismatch is known to be harmless, run again with "
                "--accept-srm REASON")
    if code == SRM_ACCEPTED:
        return (f"the sample-ratio check failed (p = {p['p_value']:.2g}), but certification went ahead because the "
                f"owner recorded: {p['reason']!r}")
    raise ValueError(f"unknown reason code {code!r}")


def headline_text(verdict: str, cannot_certify: bool, p: dict[str, Any]) -> str:
    """The recommendation's one-line verdict in words, from its code (``verdict``) and parameters."""
    if verdict == "keep_control" and p.get("srm_failed"):
        return (f"Keep {p['control']!r} for everyone: the sample-ratio check failed, so no policy can be certified on "
                "this data.")
    if verdict == "keep_control" and cannot_certify and p.get("certified_not_better"):
        return (f"Keep {p['control']!r} for everyone: what did better on {p['label']} could not be certified to keep "
                "the guardrails, and the certified alternatives did not do significantly better.")
    if verdict == "keep_control" and cannot_certify:
        return (f"Keep {p['control']!r} for everyone: what did better on {p['label']} could not be certified to keep "
                "the guardrails on units it was not chosen on.")
    if verdict == "keep_control" and p.get("certified_not_better"):
        return (f"Keep {p['control']!r} for everyone: certified alternatives kept the guardrails but did not do "
                f"significantly better on {p['label']}.")
    if verdict == "keep_control":
        return f"Keep {p['control']!r} for everyone: no certified arm or personalized policy did better on {p['label']}."
    if verdict == "ship_arm":
        return (f"Ship {p['arm']!r} to everyone: it beats {p['control']!r} on {p['label']} and is certified to "
                "keep the guardrails; no personalized policy did significantly better.")
    return (f"Personalize with {p['policy']} ({p['description']}): it beats the best single arm on {p['label']} and is "
            "certified to keep the guardrails.")


@dataclass
class Recommendation:
    """The recommended policy, why, and how far the claims behind it were certified."""

    policy: str
    kind: str
    verdict: str  # personalize | ship_arm | keep_control
    headline: str  # headline_text of the verdict
    reasons: list[Reason]
    primary: str
    eligible: list[str]  # the certified candidates
    cannot_certify: bool = False
    certification: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The recommendation as JSON (what summary.json holds)."""
        return {"policy": self.policy, "kind": self.kind, "verdict": self.verdict, "headline": self.headline,
                "reasons": [r.to_dict() for r in self.reasons], "primary": self.primary, "eligible": self.eligible,
                "cannot_certify": self.cannot_certify, "certification": self.certification}


def recommend(policies: list[Policy], rows: list[dict], data: EvaluationData, spec: ExperimentSpec,
              coefficients: dict[str, float], screen: dict[str, dict[str, Screen]] | None = None,
              holdout_share: float | None = None, certification: str = CERTIFICATION, srm: dict | None = None,
              accept_srm: str | None = None) -> Recommendation:
    """Apply the module's rule to policies valued by :func:`pex.evaluation.comparison.compare` (``rows``, same order).

    ``screen`` maps a policy name to its guardrails' building-unit check (``{metric: Screen}``, each held to its
    guardrail rule's limit); a name without an entry is not screened out. Under cross-fitting the screen drops nothing
    and orders nothing (its units are other candidates' test units), see step 2. ``holdout_share`` turns held-out unit
    counts into experiment sizes in the explanations. ``certification`` is the multiple-testing procedure of step 3
    (:mod:`pex.evaluation.multiple_testing`). ``srm`` is the sample-ratio check
    (:meth:`pex.experiment.effects.SRMResult.to_dict`): when it failed, nothing is certified unless ``accept_srm``
    records why the mismatch is harmless.
    """
    if certification not in CERTIFICATIONS:
        raise ValueError(f"certification must be one of {', '.join(CERTIFICATIONS)}, got {certification!r}")
    primaries = [m for m, meta in spec.metrics.items() if meta.role == "primary"] or \
                [m for m, meta in spec.metrics.items() if meta.role != "guardrail"]
    single = len(primaries) == 1
    primary = primaries[0] if single else "objective"
    label = primary if single else "the objective"
    sign = (1.0 if spec.metrics[primary].goal == "increase" else -1.0) if single else 1.0
    dr = ope.DoublyRobust()
    by_name = {p.name: (p, r) for p, r in zip(policies, rows)}
    control = next((p for p in policies if p.single_arm == spec.control and p.exploration < UNIFORM_EXPLORATION), None)
    if control is None:
        raise ValueError("the recommendation needs the all-control baseline among the policies")
    screen = screen or {}
    crossfitted = data.cross_fitted

    def contributions(policy: Policy) -> ope.Estimate:
        dist = action_distribution(policy, data)
        if single:
            return dr.estimate(data.rewards[primary], data.action, data.pscore, dist, data.reward_hat[primary])
        total = sum(coefficients.get(m, 0.0)
                    * dr.estimate(data.rewards[m], data.action, data.pscore, dist, data.reward_hat[m]).contributions
                    for m in data.rewards)
        return ope.Estimate.from_contributions("dr", np.asarray(total, dtype=float))

    reasons: list[Reason] = []
    candidates = []
    for p in policies:
        if not is_candidate(p, spec.control):
            continue
        same = _constant_equivalent(p, data)
        if same is not None:  # e.g. a guardrail left nobody to treat: it is that arm for everyone, not a personalization
            reasons.append(Reason(CONSTANT_EQUIVALENT, {"policy": p.name, "arm": same}))
            continue
        candidates.append(p)
    # a single hold-out's screen measures harm on the fit's training units, which the test never sees: dropping a
    # candidate there costs the test nothing. Under cross-fitting every unit is some half's test unit (a half-policy's
    # training half is the other half's test data), so a screen there would choose the test's family and order by
    # the very noise the test then measures: it is shown, but drops and orders nothing
    screened_out = [] if crossfitted else [p for p in candidates if not all(c.passed for c in screen.get(p.name, {}).values())]
    family = sorted((p for p in candidates if p not in screened_out), key=lambda p: _order(p, screen, crossfitted))
    blocked = srm is not None and not srm.get("ok", True) and not accept_srm
    if blocked:
        tested = Tested(untested=[p.name for p in family])
        reasons.append(Reason(SRM_FAILED, {"p_value": float(srm["p_value"]), "counts": srm["counts"],
                                           "expected_shares": srm["expected_shares"]}))
    else:
        if srm is not None and not srm.get("ok", True):
            reasons.append(Reason(SRM_ACCEPTED, {"p_value": float(srm["p_value"]), "reason": accept_srm}))
        tested = _certify(certification, family, data, spec)
    judged = {name: {m: Harm.from_dict(g).at(alpha) for m, g in by_name[name][1].get("guardrails", {}).items()}
              for name, alpha in tested.alphas.items()}
    certified = [p for p in family if p.name in tested.certified]
    untested = [p for p in family if p.name in tested.untested]
    estimates = {p.name: contributions(p) for p in [control, *candidates]}
    score = {name: sign * e.value for name, e in estimates.items()}

    served: dict[tuple[str, float], ope.Estimate] = {}

    def baseline(b: Policy, exploration: float) -> ope.Estimate:
        """``b`` as it would be served with ``exploration``: a personalized policy is compared with one arm for
        everyone mixed with the same exploration, so exploration's own effect is not counted as its gain."""
        if b.single_arm is None or b.exploration == exploration:
            return estimates[b.name]
        key = (b.default_arm, exploration)
        if key not in served:
            served[key] = contributions(constant_policy(b.arms, b.default_arm, exploration=exploration, name=b.name))
        return served[key]

    # claims about the policy then chosen among the certified (its lift over an arm, over control) hold
    # simultaneously over that choice: one critical value for every certified candidate against every
    # certified single arm, from their joint law (max-t; alike candidates make it far tighter than Bonferroni)
    arms_certified = [control, *(p for p in certified if p.single_arm is not None)]
    z = ope.simultaneous_z([ope.difference(estimates[p.name], baseline(b, p.exploration))
                            for p in certified for b in arms_certified if b is not p], ALPHA)
    alpha = tail_level(z)  # the level each claim is held to on its own

    def lift(a: Policy, b: Policy) -> tuple[float, float, float]:
        """How much better ``a`` is than ``b`` on the primary (goal-signed), with bounds adjusted over the certified set."""
        d = ope.difference(estimates[a.name], baseline(b, a.exploration))
        gap = sign * d.value
        return gap, gap - z * d.se, gap + z * d.se

    pool = [control, *certified]
    best = max(pool, key=lambda p: score[p.name])
    near = [p for p in pool if p is best or lift(best, p)[1] <= 0]
    choice = min(near, key=lambda p: (complexity(p), -score[p.name]))
    if choice is not best:
        gap, lo, hi = lift(best, choice)
        reasons.append(Reason(SIMPLER_NOT_WORSE, {"best": best.name, "policy": choice.name, "label": label, "gap": float(gap),
                                                  "low": float(lo), "high": float(hi)}))
    arms_pool = [p for p in pool if p.single_arm is not None]
    best_arm = max(arms_pool, key=lambda p: score[p.name])
    for p in family:
        if p.single_arm is not None and p.name in judged and p not in certified and score[p.name] > score[best_arm.name]:
            reasons.append(Reason(ARM_NOT_CERTIFIED, {"policy": p.name, "arm": p.default_arm, "label": label,
                                                      "score": float(score[p.name]), "best_score": float(score[best_arm.name]),
                                                      "harms": {m: h.to_dict() for m, h in judged[p.name].items()}}))
    if choice.single_arm is None:
        gain, lo, hi = lift(choice, best_arm)
        if lo <= 0:
            reasons.append(Reason(NO_LIFT_OVER_BEST_ARM, {"policy": choice.name, "arm": best_arm.default_arm, "label": label,
                                                          "gain": float(gain), "low": float(lo), "high": float(hi)}))
            choice = best_arm
        else:
            reasons.append(Reason(BEATS_BEST_ARM, {"policy": choice.name, "arm": best_arm.default_arm, "label": label,
                                                   "gain": float(gain), "low": float(lo), "high": float(hi)}))
    if choice.single_arm is not None and choice is not control:
        gain, lo, hi = lift(choice, control)
        if lo <= 0:
            reasons.append(Reason(ARM_NO_LIFT_OVER_CONTROL, {"policy": choice.name, "arm": choice.default_arm,
                                                             "control": spec.control, "label": label, "gain": float(gain),
                                                             "low": float(lo), "high": float(hi)}))
            choice = control
    for p in screened_out:
        failing = [m for m, c in screen[p.name].items() if not c.passed]
        reasons.append(Reason(SCREENED_OUT, {"policy": p.name, "failing": failing}))
    if untested and not blocked:
        reasons.append(Reason(NOT_TESTED, {"policies": [p.name for p in untested], "stopped_at": tested.first
                                           if certification != "fixed-sequence" else next(
                                               (p.name for p in family if p.name in judged and p not in certified), None),
                                           "method": certification}))

    # why control, when it is kept: what was certified but not significantly better, and what did better but could
    # not be certified (tested and failed; never a candidate that was screened out or not tested)
    keep = choice is control
    better_certified = [p for p in certified if p is not choice and score[p.name] > score[control.name]]
    if keep and better_certified:
        reasons.append(Reason(CERTIFIED_NOT_BETTER, {
            "label": label, "control": spec.control,
            "policies": [{"policy": p.name, "gain": g, "low": lo, "high": hi}
                         for p in better_certified for g, lo, hi in [map(float, lift(p, control))]]}))
    failed = [p for p in family if p.name in judged and p not in certified]
    cannot = keep and any(score[p.name] > score[control.name] for p in failed)
    explained: list[Reason] = []

    def cannot_reason(p: Policy, role: str) -> Reason:
        return Reason(CANNOT_CERTIFY, {"policy": p.name, "role": role, "gain": float(score[p.name] - score[control.name]),
                                       "label": label, "holdout_share": holdout_share, "power": POWER,
                                       "personalized": p.single_arm is None,
                                       "harms": {m: h.to_dict() for m, h in judged[p.name].items()},
                                       "rest": len(family) - 1, "rest_level": None if tested.rest_alpha is None
                                       else 1.0 - tested.rest_alpha, "method": certification})

    gate = next((p for p in failed if p.name == tested.first), None)
    if gate is not None and tested.first_alpha is not None and judged[gate.name]:
        explained.append(cannot_reason(gate, "gatekeeper"))
    if cannot:
        better = [p for p in failed if score[p.name] > score[control.name] and p is not gate]
        inside = [p for p in better if all(h.estimate <= h.limit for h in judged[p.name].values())]
        if inside:  # the nearest miss: more units could certify it if its harm is as estimated
            explained.append(cannot_reason(max(inside, key=lambda p: score[p.name]), "best_inside"))
        closest = max(better, key=lambda p: score[p.name], default=None)
        if closest is not None and all(r.params["policy"] != closest.name for r in explained):
            explained.append(cannot_reason(closest, "best"))
    reasons[:0] = explained
    if choice.single_arm is not None:
        verdict = "keep_control" if choice is control else "ship_arm"
    else:
        verdict = "personalize"
    headline = headline_text(verdict, cannot, {"control": spec.control, "label": label, "arm": choice.default_arm,
                                               "policy": choice.name, "description": choice.description,
                                               "certified_not_better": len(better_certified) if keep else 0,
                                               "srm_failed": blocked})
    certification = {
        "method": certification, "level": 1.0 - ALPHA, "family": [p.name for p in family], "k": len(family),
        "order": [p.name for p in family], "tested": list(judged), "untested": [p.name for p in untested],
        "first": tested.first, "first_level": None if tested.first_alpha is None else 1.0 - tested.first_alpha,
        "rest_level": None if tested.rest_alpha is None else 1.0 - tested.rest_alpha,
        "order_basis": ("recipes (the value policy's ladder from the safest planned step; cross-fitting leaves no "
                        "building-only units to screen on)" if crossfitted else
                        "the building units' screen (the most room between its bound and the limit first)"),
        "srm_blocked": blocked, "accept_srm": accept_srm,
        "lift_level": 1.0 - alpha, "lift_method": "max-t over the certified candidates and single arms",
        "screened_out": [p.name for p in screened_out], "certified": [p.name for p in certified],
        "rows": (f"all {data.n:,} units, cross-fitted (each under the half-policy whose fit, reward models included, "
                 "never saw it)" if crossfitted else "held-out units (no model, reward model or policy-building step used them)"),
        "text": certified_text(certification, crossfitted), "procedure": PROCEDURE[certification],
        "harms": {name: {m: h.to_dict() for m, h in rails.items()} for name, rails in judged.items()},
        "value": _bounds(estimates[choice.name], z),
        "lift_vs_control": _bounds(ope.difference(estimates[choice.name], baseline(control, choice.exploration)), z),
        "lift_vs_control_note": "against control served with the recommended policy's own exploration",
    }
    return Recommendation(policy=choice.name, kind=choice.kind, verdict=verdict, headline=headline, reasons=reasons,
                          primary=primary, eligible=[control.name, *[p.name for p in certified]], cannot_certify=cannot,
                          certification=certification)


def _certify(method: str, family: list[Policy], data: EvaluationData, spec: ExperimentSpec) -> Tested:
    """The procedure ``method`` on the family's guardrail harms on the held-out units, in the family's order."""
    if not family:
        return Tested()
    rules, harms = harm_estimates(family, data, spec)
    claims = [(p.name, [Claim(m, harms[(p.name, m)], rules[m].limit) for m in rules]) for p in family]
    return certify(method, claims, ALPHA)


def _order(policy: Policy, screen: dict[str, dict[str, Screen]], crossfitted: bool) -> tuple:
    """Where a candidate stands in the test order, fixed before the test. Candidates whose screen is unbiased
    (the value policy and its ladder choose arms by out-of-fold predictions, with no search over the pseudo-outcomes
    they are screened with) come first. Then, with a single hold-out, the safest on the building units (the most
    room between the screen's bound and the limit, so a test is rarely spent on a long shot early); cross-fitted, by
    recipe alone: the ladder's safest planned step first (the order the policies were built in breaks ties)."""
    honest = not policy.lineage.get("unsearched", False)
    if crossfitted:
        return (honest, -float(policy.lineage.get("planned_power", POWER)))
    return (honest, -_room(screen.get(policy.name, {})))


def _room(screen: dict[str, Screen]) -> float:
    """How far the building-units bound stays below the limit on the tightest guardrail (:attr:`Screen.room`);
    larger is safer."""
    return min((c.room for c in screen.values()), default=float("inf"))


def _constant_equivalent(policy: Policy, data: EvaluationData) -> str | None:
    """The arm a non-constant policy gives every held-out unit, if it gives them all the same one."""
    if policy.single_arm is not None:
        return None
    greedy = np.argmax(action_distribution(policy, data), axis=1)
    return data.arms[int(greedy[0])] if len(greedy) and (greedy == greedy[0]).all() else None


def _bounds(e: ope.Estimate, z: float) -> dict:
    return {"estimate": e.value, "se": e.se, "low": e.value - z * e.se, "high": e.value + z * e.se}


def _not_certified(harms: list[Harm]) -> str:
    bad = [h for h in harms if not h.passed]
    return "it cannot be certified to keep " + ", ".join(
        f"{h.metric} (upper bound {_fmt(h, h.upper)} vs limit {_fmt(h, h.limit)})" for h in bad)


def _fmt(h: Harm, value: float) -> str:
    return f"{value:+.1%}" if h.basis == "relative" else f"{value:+.4g}"


def _cannot_certify_text(p: dict[str, Any]) -> str:
    """A tested candidate that was not certified: estimates phrased as estimates, each failing guardrail's miss, and the
    units that would certify it at the planned power and the level it was tested at, if the harm is as estimated."""
    harms = [Harm.from_dict(h) for h in p["harms"].values()]
    parts = []
    for h in harms:
        if h.passed:
            continue
        pct = h.basis == "relative"
        se = f"{abs(h.se):.1%}" if pct else f"{h.se:.4g}"
        miss = h.upper - h.limit
        text = (f"{h.metric} harm estimated at {_fmt(h, h.estimate)} (standard error {se}); its {h.level:.1%} upper bound "
                f"{_fmt(h, h.upper)} is {f'{miss * 100:.1f} points' if pct else f'{miss:.4g}'} over the limit {_fmt(h, h.limit)}")
        need = h.units_to_certify()
        if need:
            share = p.get("holdout_share")
            size = (f"about {need:,} held-out units (an experiment of about {math.ceil(need / share):,})" if share and share < 1
                    else f"an experiment of about {need:,} units")
            text += (f"; at {p.get('power', POWER):.0%} power and that level, {size} would certify it if the harm is as "
                     "estimated")
        else:
            text += "; the estimate itself is at or over the limit, so more units would certify it only if the true harm is lower"
        parts.append(text)
    if p["role"] == "gatekeeper":
        rest, level = p.get("rest") or 0, p.get("rest_level")
        if not rest:
            after = ""
        elif level:
            after = f" The other {rest} candidate{'s were' if rest > 1 else ' was'} then tested at the {level:.1%} level."
        else:
            after = f" The {p['method']} procedure then tests none of the other {rest}."
        who = f"{p['policy']}, tested first (the safest before the test; {p['gain']:+.4g} on {p['label']} per unit), was not certified:"
        return f"{who} " + "; ".join(parts) + "." + after
    who = ("The best candidate whose estimates are inside the limits" if p["role"] == "best_inside"
           else "The best-scoring candidate")
    kind = "personalized policy" if p.get("personalized") else "arm for everyone"
    return f"{who}, {p['policy']} ({kind}, {p['gain']:+.4g} on {p['label']} per unit), was not certified: " + "; ".join(parts) + "."
