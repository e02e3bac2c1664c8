"""Which policy to ship: the rule behind ``recommended_policy``.

A recommendation must hold on units it was not chosen on, by its confidence
bound, not its point estimate (:mod:`pex.experiment.guardrail`). The rule:

1. **Candidates** are every policy but uniform random (a baseline) and
   all-control (the fallback, which harms nothing by definition), and among
   distilled trees only the depth the distillation chose.
2. **Screen on the building units.** A candidate whose guardrail harm,
   measured on the fit's training units with out-of-fold doubly-robust
   pseudo-outcomes, could not pass on the held-out units even if that
   estimate were exact (its certifiable bound is over the limit) is dropped
   before the held-out units are looked at. The screen uses no held-out unit,
   so it costs the held-out test nothing.
3. **Certify on the held-out units.** The candidates left are ordered on the
   building units alone, safest first (the most room between their
   building-units bound and the limit), those whose building-units screen is
   unbiased first (the value policy and its ladder, which choose arms by
   out-of-fold predictions with no search over the pseudo-outcomes the screen
   measures them with; searched trees look safer there than they are). By default (``gated``) the safest is
   tested alone at the full one-sided 95% level; only if it passes are the
   others tested, all together, by step-down max-t (each guardrail's bound at
   a level raised so that it holds for all of them at once, lowered for the
   rest as candidates pass; :func:`pex.evaluation.estimators.step_down_upper`). This is serial
   gatekeeping: the chance that any certified policy truly breaks a guardrail
   stays within 5%. ``fixed-sequence`` instead tests them one at a time, each
   at the full level, stopping at the first that does not pass; ``step-down``
   tests all of them together from the start. A candidate is **certified**
   when every guardrail passes.
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
6. When control is recommended although a candidate did better on the
   held-out units but could not be certified ("cannot certify"), it says so
   plainly: the best such candidate, its harm and standard error, and roughly
   how many units would certify it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pex.evaluation import estimators as ope
from pex.evaluation.comparison import EvaluationData, action_distribution, harm_estimates
from pex.evaluation.procedures import CERTIFICATION, CERTIFICATIONS, PROCEDURE, certified_text
from pex.experiment.guardrail import ALPHA, Harm, tail_level
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
CANNOT_CERTIFY = "cannot_certify"  # the best uncertified candidate: its harm and the units that would certify it
REASON_CODES = (CONSTANT_EQUIVALENT, SIMPLER_NOT_WORSE, ARM_NOT_CERTIFIED, NO_LIFT_OVER_BEST_ARM, BEATS_BEST_ARM,
                ARM_NO_LIFT_OVER_CONTROL, SCREENED_OUT, CANNOT_CERTIFY)


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
        return _cannot_certify_text(p["policy"], [Harm.from_dict(h) for h in p["harms"].values()], p["holdout_share"],
                                    p["gain"], p["label"], p["personalized"])
    raise ValueError(f"unknown reason code {code!r}")


def headline_text(verdict: str, cannot_certify: bool, p: dict[str, Any]) -> str:
    """The recommendation's one-line verdict in words, from its code (``verdict``) and parameters."""
    if verdict == "keep_control" and cannot_certify:
        return (f"Keep {p['control']!r} for everyone: what did better on {p['label']} could not be certified to keep "
                "the guardrails on units it was not chosen on.")
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
              holdout_share: float | None = None, certification: str = CERTIFICATION) -> Recommendation:
    """Apply the module's rule to policies valued by :func:`pex.evaluation.comparison.compare` (``rows``, same order).

    ``screen`` maps a policy name to its guardrails' building-unit check (``{metric: Screen}``, each held to its
    guardrail rule's limit); a name without an entry is not screened out. ``holdout_share`` turns held-out unit counts into
    experiment sizes in the "cannot certify" message. ``certification`` is the multiple-testing procedure
    of step 3: ``fixed-sequence`` (safest first, stop at the first failure), ``step-down`` (max-t over every
    candidate and guardrail at once, :func:`pex.evaluation.estimators.step_down_upper`) or ``gated`` (the safest candidate alone
    at the full level, then, if it passed, step-down over the rest).
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
    screened_out = [p for p in candidates if not all(c.passed for c in screen.get(p.name, {}).values())]
    # the order of the held-out tests is fixed on the building units alone: safest first (the largest room
    # between the building-units bound and the limit), so a test is rarely spent on a long shot early. Candidates
    # whose screen is unbiased come first: a tree whose leaf arms were searched on the very pseudo-outcomes it is
    # screened with looks safer there than it is (in a notification_cadence run: building-units harm -14.5%,
    # held-out -2.4% +- 5.2%), and a gatekeeper that fails on that optimism stops every other test
    family = sorted((p for p in candidates if p not in screened_out),
                    key=lambda p: (not p.lineage.get("unsearched", False), -_room(screen.get(p.name, {}))))
    if certification == "fixed-sequence":
        judged, certified = _fixed_sequence(family, by_name)
    elif certification == "step-down":
        judged, certified = _step_down(family, by_name, data, spec)
    else:  # serial gatekeeping: the rest is tested only once the safest passed, so each stage has the whole level
        judged, certified = _fixed_sequence(family[:1], by_name)
        if certified:
            rest_judged, rest_certified = _step_down(family[1:], by_name, data, spec)
            judged.update(rest_judged)
            certified += rest_certified
    untested = [p for p in family if p.name not in judged]
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

    # "cannot certify": control is recommended although a candidate looked better on the held-out units, because
    # it could not be shown to keep the guardrails (not because it was simply no better)
    uncertified = [p for p in candidates if p not in certified and score[p.name] > score[control.name]]
    cannot = choice is control and bool(uncertified)
    if cannot:
        def cannot_reason(p: Policy, personalized: bool) -> Reason:
            rails = judged.get(p.name) or {m: Harm.from_dict(g).at(ALPHA) for m, g in by_name[p.name][1].get("guardrails", {}).items()}
            return Reason(CANNOT_CERTIFY, {"policy": p.name, "gain": float(score[p.name] - score[control.name]), "label": label,
                                           "holdout_share": holdout_share, "personalized": personalized,
                                           "harms": {m: h.to_dict() for m, h in rails.items()}})

        closest = max(uncertified, key=lambda p: score[p.name])
        personal = [p for p in uncertified if p.single_arm is None]
        if closest.single_arm is not None and personal:  # also the personalized option that did best: often the nearer miss
            reasons.insert(0, cannot_reason(max(personal, key=lambda p: score[p.name]), True))
        reasons.insert(0, cannot_reason(closest, False))
    if choice.single_arm is not None:
        verdict = "keep_control" if choice is control else "ship_arm"
    else:
        verdict = "personalize"
    headline = headline_text(verdict, cannot, {"control": spec.control, "label": label, "arm": choice.default_arm,
                                               "policy": choice.name, "description": choice.description})
    certification = {
        "method": certification, "level": 1.0 - ALPHA, "family": [p.name for p in family], "k": len(family),
        "order": [p.name for p in family], "tested": list(judged), "untested": [p.name for p in untested],
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


def _fixed_sequence(family: list[Policy], by_name: dict) -> tuple[dict[str, dict[str, Harm]], list[Policy]]:
    """Fixed-sequence testing: each candidate at the full level in the given order, stopping at the first that
    does not pass. Returns the guardrail verdicts of those tested and the certified candidates."""
    judged: dict[str, dict[str, Harm]] = {}
    certified: list[Policy] = []
    for p in family:
        judged[p.name] = {m: Harm.from_dict(g).at(ALPHA) for m, g in by_name[p.name][1].get("guardrails", {}).items()}
        if not all(h.passed for h in judged[p.name].values()):
            break
        certified.append(p)
    return judged, certified


def _step_down(family: list[Policy], by_name: dict, data: EvaluationData,
               spec: ExperimentSpec) -> tuple[dict[str, dict[str, Harm]], list[Policy]]:
    """Step-down max-t over every (candidate, guardrail) harm on the held-out units at once
    (:func:`pex.evaluation.estimators.step_down_upper`): a candidate is certified when each of its guardrails' claims is made.
    Each verdict is reported at the level its claim was made at (the last critical value for the others)."""
    if not family:
        return {}, []
    rules, harms = harm_estimates(family, data, spec)
    claims = list(harms)
    estimates = [harms[c] for c in claims]
    limits = [rules[m].limit for _name, m in claims]
    made = ope.step_down_upper(estimates, limits, ALPHA)
    last = max((z for z in made if z is not None), default=None)
    final = ope.simultaneous_z([e for e, z in zip(estimates, made) if z is None], ALPHA) if None in made else last
    judged: dict[str, dict[str, Harm]] = {}
    certified: list[Policy] = []
    for p in family:
        mine = [(m, z) for (name, m), z in zip(claims, made) if name == p.name]
        ok = all(z is not None for _m, z in mine)
        level_z = max(z for _m, z in mine) if ok and mine else final
        alpha = tail_level(level_z) if level_z is not None else ALPHA
        judged[p.name] = {m: Harm.from_dict(g).at(alpha) for m, g in by_name[p.name][1].get("guardrails", {}).items()}
        if ok:
            certified.append(p)
    return judged, certified


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


def _cannot_certify_text(policy: str, harms: list[Harm], holdout_share: float | None, gain: float, label: str,
                         personalized: bool = False) -> str:
    parts = []
    for h in harms:
        if h.passed:
            continue
        need = h.units_to_certify()
        size = (f"about {need:,} held-out units" + (f" (an experiment of about {math.ceil(need / holdout_share):,} units)"
                                                     if holdout_share else "")) if need else None
        parts.append(f"{h.metric} harm {_fmt(h, h.estimate)} (standard error {abs(h.se):.1%}" if h.basis == "relative" else
                     f"{h.metric} harm {_fmt(h, h.estimate)} (standard error {h.se:.4g}")
        parts[-1] += (f", upper bound {_fmt(h, h.upper)} vs limit {_fmt(h, h.limit)}); "
                      + (f"certifying it would take {size} if the harm stayed as estimated" if size else
                         "its estimate itself is at or over the limit, so more units would not certify it"))
    who = "The best personalized candidate" if personalized else "Nothing that beats control could be certified. The best candidate"
    return f"{who}, {policy} ({gain:+.4g} on {label} per unit), has " + "; ".join(parts)
