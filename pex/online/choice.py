"""Which measured arm is best so far: the online loop's version of the recommendation's rule.

Each round is its own randomized test, so the rule reads the newest completed round alone: its candidate arms,
among them the champion (the previous round's pick, served again to fresh units; in a round 1 started from the
offline candidates, the offline pick). A pick thus always rests on units it was not chosen on before, and the
evidence of one round is never re-used to confirm itself. A champion served as champion in several rounds in a
row is judged on those measurements pooled (inverse variance): each was taken on fresh units after it had been
chosen, so together they are its confirmation. Since the best is *chosen* among the round's ``F`` arms, every
bound is Bonferroni-adjusted over them:

1. an arm is **certified** when every guardrail's one-sided upper bound at level ``1 - alpha / F`` is within its
   limit (the guardrail rule, :mod:`pex.experiment.guardrail`), so the chance that any certified arm of the round
   truly breaks a guardrail stays within ``alpha``;
2. the **best** certified arm has the largest lower bound (same level) of its goal-signed primary lift: the
   largest of several noisy estimates is the likeliest to be inflated by its noise, and a champion confirmed
   over several rounds, measured more precisely, needs a challenger to be better by more than its noise, as a
   more complex policy has to be in the recommendation;
3. it is the pick only if that lower bound is above 0 (it beats control); otherwise control stays, and the
   answer says which arm came closest.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from pex.experiment.guardrail import ALPHA, Harm, judge

CANDIDATES = ("candidate", "champion")


def judge_round(r: Any, goals: dict[str, float], primary: str, alpha: float = ALPHA,
                earlier: list[Any] | None = None) -> list[dict[str, Any]]:
    """Every measured candidate arm of completed round ``r`` judged at the round's Bonferroni level: its gains
    (``goals``: metric -> +1 when it should rise, -1 when it should fall), guardrail verdicts, and whether it is
    certified. A champion's figures pool (inverse-variance) its measurements as champion in the rounds of
    ``earlier`` just before ``r``: each was taken on fresh units after it had been chosen."""
    if r.status != "complete" or not r.results:
        return []
    measured = [(a, r.results["arms"][a["route"]]) for a in r.arms
                if a["role"] in CANDIDATES and r.results["arms"].get(a["route"], {}).get("measured")]
    level = alpha / max(len(measured), 1)
    rows = []
    for arm, got in measured:
        runs = [got] + (_champion_history(arm, earlier or []) if arm["role"] == "champion" else [])
        harms = {m: _pooled_harm([Harm.from_dict(g["harms"][m]) for g in runs]).at(level) for m in got["harms"]}
        lifts = {m: _pooled([(g["metrics"][m]["lift"]["estimate"], g["metrics"][m]["lift"]["se"]) for g in runs])
                 for m in goals}
        gain, gain_se = goals[primary] * lifts[primary][0], lifts[primary][1]
        low, _high, _ = judge(gain, gain_se, 0.0, level)
        rows.append({"round": r.round, "route": arm["route"], "role": arm["role"], "policy": arm["policy"],
                     "version": arm["version"], "gain": gain, "gain_se": gain_se, "gain_lower": low,
                     "rounds_pooled": len(runs),
                     "objectives": {m: sign * lifts[m][0] for m, sign in goals.items()},
                     "certified": all(h.passed for h in harms.values()), "level": 1 - level, "family": len(measured),
                     "harms": {m: {"estimate": h.estimate, "upper": h.upper, "limit": h.limit, "verdict": h.verdict}
                               for m, h in harms.items()}})
    return rows


def _champion_history(arm: dict[str, Any], earlier: list[Any]) -> list[dict[str, Any]]:
    """The same policy's measurements as champion in the completed rounds right before, newest first."""
    out = []
    for r in reversed(earlier):
        mine = next((a for a in r.arms if a["policy"] == arm["policy"] and a["version"] == arm["version"]), None)
        got = r.results["arms"].get(mine["route"]) if mine is not None and r.results else None
        if mine is None or mine["role"] != "champion" or not (got and got.get("measured")):
            break
        out.append(got)
    return out


def _pooled(figures: list[tuple[float, float]]) -> tuple[float, float]:
    """Inverse-variance mean of independent (estimate, se) pairs, and its standard error."""
    if len(figures) == 1 or not all(se > 0 for _e, se in figures):
        return figures[0]
    w = [1.0 / se**2 for _e, se in figures]
    return sum(wi * e for wi, (e, _se) in zip(w, figures)) / sum(w), 1.0 / math.sqrt(sum(w))


def _pooled_harm(harms: list[Harm]) -> Harm:
    estimate, se = _pooled([(h.estimate, h.se) for h in harms])
    return replace(harms[0], estimate=estimate, se=se, n=sum(h.n for h in harms))


def choose_best(rounds: list[Any], goals: dict[str, float], primary: str, alpha: float = ALPHA) -> dict[str, Any]:
    """The rule of the module docstring over the newest completed round of ``rounds``."""
    done = [r for r in rounds if r.status == "complete" and r.results]
    rows = judge_round(done[-1], goals, primary, alpha, earlier=done[:-1]) if done else []
    family = max(len(rows), 1)
    level = alpha / family
    certified = [r for r in rows if r["certified"]]
    # by the lower bound, not the estimate: the largest of several noisy estimates is the likeliest to be inflated
    # by its noise, and a champion confirmed over several rounds is measured more precisely than a challenger
    best = max(certified, key=lambda r: r["gain_lower"]) if certified else None
    chosen = best if best is not None and best["gain_lower"] > 0 else None
    if chosen is not None:
        pooled = f", {chosen['rounds_pooled']} rounds pooled" if chosen["rounds_pooled"] > 1 else ""
        why = (f"{chosen['route']} (round {chosen['round']}{pooled}): every guardrail certified and a primary gain of "
               f"{chosen['gain']:+.4g} (lower bound {chosen['gain_lower']:+.4g}) over control, at the one-sided "
               f"{1 - level:.4g} level that holds over the round's {family} arms")
    elif best is not None:
        why = (f"control: the best certified arm of round {best['round']}, {best['route']}, gains {best['gain']:+.4g} "
               f"but its lower bound ({best['gain_lower']:+.4g}) does not exclude 0 at the {1 - level:.4g} level")
    elif rows:
        closest = max(rows, key=lambda r: r["gain"])
        why = (f"control: no arm of round {closest['round']} has every guardrail certified at the {1 - level:.4g} level "
               f"over its {family} arms (the best primary gain, {closest['route']}, is {closest['gain']:+.4g})")
    else:
        why = "control: no round has been completed with measured arms yet"
    return {"chosen": chosen, "best_certified": best, "arms": rows, "family": family, "level": 1 - level, "why": why}
