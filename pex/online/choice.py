"""Which measured arm is best so far: the online loop's version of the recommendation's rule.

Each round is its own randomized test on fresh units (units served in an earlier round are left out of its
measurement, :mod:`pex.services.online`), so the newest completed round's arms are judged on that round alone:
its candidates and the champion (the previous round's pick, served again; in a round 1 started from the offline
candidates, the offline pick). The rounds before only say which arm is the standing pick and which round certified
it. Every figure of a round is judged at the round's level: its share ``alpha_r`` of the loop's error budget
(:mod:`pex.online.spending`), Bonferroni-adjusted over the round's ``F`` measured arms.

1. An arm is **certified** when every guardrail's one-sided upper bound at level ``1 - alpha_r / F`` is within its
   limit (the guardrail rule, :mod:`pex.experiment.guardrail`). The chance that any certified arm of the round
   truly breaks a guardrail stays within ``alpha_r``, and over the whole loop within ``alpha``.
2. An arm **beats control** when the lower bound of its goal-signed primary gain (same level) is above 0.
3. A **champion** stays the pick unless a challenger that is certified and beats control is **significantly
   better than it**: the lower bound of the challenger's gain minus the champion's, both measured in this round on
   their own units (independent samples; the shared control cancels), is above 0 at the same level. Among several
   such challengers the one with the largest lower bound of that difference replaces it. A lead within the noise
   never replaces a champion.
4. A champion that was the loop's pick keeps the certification of the round that picked it, even when this round
   alone does not certify it again: that certification is one of the events the budget already pays for, so
   keeping it adds no error, and re-certifying at a strict level every round would drop good champions to noise.
   It loses it when this round **refutes** it: a guardrail's one-sided 95% lower bound beyond its limit, or a
   primary gain whose 95% upper bound is below 0. Round 1's offline pick was never certified live, so it must
   certify and beat control in round 1 to stay.
5. Without a champion that holds, the pick is the certified arm that beats control with the largest lower bound of
   its gain: the largest of several noisy estimates is the likeliest to be inflated by its noise. Without one,
   control stays.

Measurements are not pooled across rounds: a champion is kept *because* its last round looked good, so pooling
that round into the next would carry the selection along and the round's error would no longer be its own.

What the rule says is a code with parameters (:data:`REASONS`); :func:`reason_text` renders the one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pex.experiment.guardrail import ALPHA, Harm, judge

CANDIDATES = ("candidate", "champion")
REASONS = ("no_round", "none_certified", "none_beat_control", "picked", "kept_champion", "replaced_champion")


def judge_round(r: Any, goals: dict[str, float], primary: str, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Every measured candidate arm of completed round ``r`` judged at level ``1 - alpha / F`` (``alpha``: the round's
    share of the loop's budget; ``F``: its measured arms): its gains (``goals``: metric -> +1 when it should rise, -1
    when it should fall), guardrail verdicts, whether it is certified, and for a challenger its comparison with the
    round's champion (``versus_champion``)."""
    if r.status != "complete" or not r.results:
        return []
    measured = [(a, r.results["arms"][a["route"]]) for a in r.arms
                if a["role"] in CANDIDATES and r.results["arms"].get(a["route"], {}).get("measured")]
    level = alpha / max(len(measured), 1)
    rows = []
    for arm, got in measured:
        harms = {m: Harm.from_dict(h).at(level) for m, h in got["harms"].items()}
        lift = got["metrics"][primary]["lift"]
        gain, gain_se = goals[primary] * lift["estimate"], lift["se"]
        low, _high, _ = judge(gain, gain_se, 0.0, level)
        # evidence at the plain one-sided 95% level that the arm breaks a guardrail or does worse than control: what
        # unseats a champion kept on an earlier certification (dropping a pick never adds a false certification)
        refuted = (any(Harm.from_dict(h).at(ALPHA).verdict == "fail" for h in got["harms"].values())
                   or judge(gain, gain_se, 0.0, ALPHA)[1] < 0)
        rows.append({"round": r.round, "route": arm["route"], "role": arm["role"], "policy": arm["policy"],
                     "version": arm["version"], "gain": gain, "gain_se": gain_se, "gain_lower": low,
                     "objectives": {m: sign * got["metrics"][m]["lift"]["estimate"] for m, sign in goals.items()},
                     "certified": all(h.passed for h in harms.values()), "level": 1 - level, "family": len(measured),
                     "round_alpha": alpha, "versus_champion": None, "refuted": refuted,
                     "harms": {m: {"estimate": h.estimate, "upper": h.upper, "limit": h.limit, "verdict": h.verdict}
                               for m, h in harms.items()}})
    champion = next((i for i, (a, _g) in enumerate(measured) if a["role"] == "champion"), None)
    if champion is not None:
        base = measured[champion][1]["metrics"][primary]["value"]
        for i, (_arm, got) in enumerate(measured):
            if i != champion:
                rows[i]["versus_champion"] = _difference(got["metrics"][primary]["value"], base, goals[primary], level)
    return rows


def _difference(challenger: dict[str, Any], champion: dict[str, Any], sign: float, level: float) -> dict[str, float]:
    """The challenger's goal-signed primary value minus the champion's, from independent units of one round, with its
    one-sided lower bound at ``1 - level`` and the z statistic."""
    d, se = sign * (challenger["value"] - champion["value"]), math.hypot(challenger["se"], champion["se"])
    low, _high, _ = judge(d, se, 0.0, level)
    return {"difference": d, "se": se, "lower": low, "z": d / se if se > 0 else math.copysign(math.inf, d)}


def choose_best(rounds: list[Any], goals: dict[str, float], primary: str,
                alpha: float | Callable[[int], float] = ALPHA) -> dict[str, Any]:
    """The rule of the module docstring after the newest completed round of ``rounds``. ``alpha`` is each round's
    share of the loop's budget: a number, or a function of the round number
    (:meth:`pex.online.spending.AlphaSpending.round_alpha`). The rounds are replayed in order, since a champion
    keeps the certification of the round that picked it."""
    share = alpha if callable(alpha) else (lambda _number: alpha)
    done = [r for r in rounds if r.status == "complete" and r.results]
    standing: dict[str, Any] | None = None  # the pick so far: its policy, version and the round that certified it
    result = _pick([], None, share(0), None)
    for r in done:
        result = _pick(judge_round(r, goals, primary, share(r.round)), r.round, share(r.round), standing)
        chosen = result["chosen"]
        standing = None if chosen is None else {
            "policy": chosen["policy"], "version": chosen["version"],
            "certified_round": result["params"].get("certified_round", chosen["round"])}
    return result


def _pick(rows: list[dict[str, Any]], number: int | None, alpha: float, standing: dict[str, Any] | None) -> dict[str, Any]:
    """One round's pick from its judged ``rows``, given the ``standing`` pick of the rounds before."""
    family = max(len(rows), 1)
    level = alpha / family
    certified = [r for r in rows if r["certified"]]
    beating = [r for r in certified if r["gain_lower"] > 0]
    params: dict[str, Any] = {"level": 1 - level, "family": family, "round": number, "round_alpha": alpha}
    champion = next((r for r in rows if r["role"] == "champion"), None)
    carried = (champion is not None and standing is not None and not champion["refuted"]
               and (champion["policy"], champion["version"]) == (standing["policy"], standing["version"]))
    holds = champion is not None and (champion in beating or carried)
    chosen = None
    if holds:
        if champion not in beating:  # kept on the certification of the round that picked it
            params["certified_round"] = standing["certified_round"]
        better = [r for r in beating if r is not champion and r["versus_champion"]["lower"] > 0]
        params["champion"] = _brief(champion)
        if better:
            chosen = max(better, key=lambda r: r["versus_champion"]["lower"])
            code = "replaced_champion"
            params.pop("certified_round", None)
        else:
            chosen, code = champion, "kept_champion"
            rivals = [r for r in beating if r is not champion]
            if rivals:  # the closest challenger, to say by how much it fell short
                params["closest"] = _brief(max(rivals, key=lambda r: r["versus_champion"]["lower"]))
    elif beating:
        chosen, code = max(beating, key=lambda r: r["gain_lower"]), "picked"
        if champion is not None:  # measured again, and refuted, or never certified live (round 1's offline pick)
            params["lost_champion"] = _brief(champion)
    elif certified:
        code = "none_beat_control"
        params["closest"] = _brief(max(certified, key=lambda r: r["gain_lower"]))
    elif rows:
        code = "none_certified"
        params["closest"] = _brief(max(rows, key=lambda r: r["gain"]))
    else:
        code = "no_round"
    if chosen is not None:
        params["chosen"] = _brief(chosen)
    best = max(certified, key=lambda r: r["gain_lower"]) if certified else None
    return {"chosen": chosen, "best_certified": best, "arms": rows, "family": family, "level": 1 - level,
            "round_alpha": alpha, "code": code, "params": params, "why": reason_text(code, params)}


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("route", "round", "gain", "gain_lower", "certified", "refuted", "versus_champion")
    return {k: row[k] for k in keys}


def reason_text(code: str, p: dict[str, Any]) -> str:
    """The sentence for a pick's code and parameters (:func:`choose_best`)."""
    if code == "no_round":
        return "control: no round has been completed with measured arms yet"
    at = f"at the one-sided {p['level']:.4g} level (the round's {p['round_alpha']:.4g} of the loop's budget over its {p['family']} arms)"
    if code == "none_certified":
        c = p["closest"]
        spent = " (the loop's budget was spent before this round)" if p["round_alpha"] <= 0 else ""
        return (f"control: no arm of round {p['round']} has every guardrail certified {at}{spent}; the best primary "
                f"gain, {c['route']}, is {c['gain']:+.4g}")
    if code == "none_beat_control":
        c = p["closest"]
        return (f"control: the best certified arm of round {p['round']}, {c['route']}, gains {c['gain']:+.4g} but its "
                f"lower bound ({c['gain_lower']:+.4g}) does not exclude 0 {at}")
    c = p["chosen"]
    if code == "kept_champion" and "certified_round" in p:
        head = (f"{c['route']} (round {c['round']}): kept as champion on its certification in round "
                f"{p['certified_round']}; this round, not enough alone to certify it {at}, measures a primary gain of "
                f"{c['gain']:+.4g} and refutes neither it nor its guardrails at the one-sided 95% level")
    else:
        head = (f"{c['route']} (round {c['round']}): every guardrail certified and a primary gain of {c['gain']:+.4g} "
                f"(lower bound {c['gain_lower']:+.4g}) over control {at}")
    if code == "picked":
        lost = p.get("lost_champion")
        if lost is None:
            return head
        if lost["refuted"]:
            why = ("is refuted on this round's units (a guardrail beyond its limit, or a gain below control, at the "
                   "one-sided 95% level)")
        else:
            why = ("has no live certification to keep and " + ("is not certified" if not lost["certified"] else
                                                                 "does not beat control") + " on this round's units")
        return f"{head}; the champion, {lost['route']}, {why}"
    if code == "kept_champion":
        rival = p.get("closest")
        if rival is None:
            return f"{head}; no certified challenger beats control"
        v = rival["versus_champion"]
        return (f"{head}; the closest challenger, {rival['route']}, differs from it by {v['difference']:+.4g} "
                f"(z = {v['z']:.2f}, lower bound {v['lower']:+.4g}): not significantly better")
    v = c["versus_champion"]
    return (f"{head}; it replaces the champion, {p['champion']['route']}: {v['difference']:+.4g} better "
            f"(z = {v['z']:.2f}, lower bound {v['lower']:+.4g} above 0)")
