"""Which measured arm is best so far: the online loop's version of the recommendation's rule.

Each round is its own randomized test, so the rule reads the newest completed round alone: its candidate arms,
among them the champion (the previous round's pick, served again to fresh units; in a round 1 started from the
offline candidates, the offline pick). A pick thus always rests on
units it was not chosen on before, and the evidence of one round is never re-used to confirm itself. Since the
best is *chosen* among that round's ``F`` arms, every bound is Bonferroni-adjusted over them:

1. an arm is **certified** when every guardrail's one-sided upper bound at level ``1 - alpha / F`` is within its
   limit (the guardrail rule, :mod:`pex.experiment.guardrail`), so the chance that any certified arm of the round
   truly breaks a guardrail stays within ``alpha``;
2. the **best** certified arm has the largest goal-signed lift of the primary metric;
3. the **champion** stays the pick when it is certified and the best is not significantly better (the lower
   bound of "best minus champion" on the primary metric, at the same level, does not exceed 0): a challenger
   measured once, and chosen as the largest of several noisy estimates, has to beat the incumbent by more than
   the noise, as a more complex policy has to in the recommendation;
4. the pick must beat control: its primary lift's lower bound at the same level is above 0; otherwise control
   stays, and the answer says which arm came closest.
"""

from __future__ import annotations

import math
from typing import Any

from pex.experiment.guardrail import ALPHA, Harm, judge

CANDIDATES = ("candidate", "champion")


def judge_round(r: Any, goals: dict[str, float], primary: str, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Every measured candidate arm of completed round ``r`` judged at the round's Bonferroni level: its gains
    (``goals``: metric -> +1 when it should rise, -1 when it should fall), guardrail verdicts, and whether it is
    certified."""
    if r.status != "complete" or not r.results:
        return []
    measured = [(a, r.results["arms"][a["route"]]) for a in r.arms
                if a["role"] in CANDIDATES and r.results["arms"].get(a["route"], {}).get("measured")]
    level = alpha / max(len(measured), 1)
    rows = []
    for arm, got in measured:
        harms = {m: Harm.from_dict(h).at(level) for m, h in got["harms"].items()}
        lift = got["metrics"][primary]["lift"]
        low, _high, _ = judge(goals[primary] * lift["estimate"], lift["se"], 0.0, level)
        value = got["metrics"][primary]["value"]
        rows.append({"round": r.round, "route": arm["route"], "role": arm["role"], "policy": arm["policy"],
                     "version": arm["version"], "gain": goals[primary] * lift["estimate"], "gain_lower": low,
                     "value": goals[primary] * value["value"], "value_se": value["se"],
                     "objectives": {m: sign * got["metrics"][m]["lift"]["estimate"] for m, sign in goals.items()},
                     "certified": all(h.passed for h in harms.values()), "level": 1 - level, "family": len(measured),
                     "harms": {m: {"estimate": h.estimate, "upper": h.upper, "limit": h.limit, "verdict": h.verdict}
                               for m, h in harms.items()}})
    return rows


def choose_best(rounds: list[Any], goals: dict[str, float], primary: str, alpha: float = ALPHA) -> dict[str, Any]:
    """The rule of the module docstring over the newest completed round of ``rounds``."""
    done = [r for r in rounds if r.status == "complete" and r.results]
    rows = judge_round(done[-1], goals, primary, alpha) if done else []
    family = max(len(rows), 1)
    level = alpha / family
    certified = [r for r in rows if r["certified"]]
    best = max(certified, key=lambda r: r["gain"]) if certified else None
    champion = next((r for r in certified if r["role"] == "champion"), None)
    kept = ""
    if best is not None and champion is not None and best is not champion:
        low, _high, _ = judge(best["value"] - champion["value"], math.hypot(best["value_se"], champion["value_se"]), 0.0, level)
        if low <= 0:
            kept = f" (the champion stays: {best['route']}'s {best['gain']:+.4g} is not significantly more)"
            best = champion
    chosen = best if best is not None and best["gain_lower"] > 0 else None
    if chosen is not None:
        why = (f"{chosen['route']} (round {chosen['round']}){kept}: every guardrail certified and a primary gain of "
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
