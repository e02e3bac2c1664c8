"""The rollout step rule (pex.monitor.rollout.next_action): one test per code."""

from __future__ import annotations

from pex.monitor.rollout import CODES, next_action
from pex.monitor.sequential import SequentialHarm


def _harm(metric: str, verdict: str, estimate: float = 0.01) -> SequentialHarm:
    bounds = {"pass": (-0.05, 0.08), "fail": (0.12, 0.3), "inconclusive": (-0.02, 0.2)}[verdict]
    return SequentialHarm(metric=metric, estimate=estimate, se=0.02, lower=bounds[0], upper=bounds[1], limit=0.1,
                          n=4_000, verdict=verdict, alpha=0.05, method="m", planned_n=5_000, multiplier=2.8, z=-4.5)


def test_a_failed_guardrail_rolls_back_at_once_even_with_few_outcomes():
    a = next_action({"churn": _harm("churn", "pass"), "unsubscribes": _harm("unsubscribes", "fail", 0.21)},
                    outcomes=10, min_outcomes=1_000, at_last_step=False)
    assert (a.action, a.code) == ("rollback", "guardrail_beyond_limit")
    assert "unsubscribes" in a.reason and "churn" not in a.reason and "+0.21" in a.reason and "+0.1" in a.reason


def test_few_outcomes_hold_even_when_every_guardrail_passes():
    a = next_action({"churn": _harm("churn", "pass")}, outcomes=999, min_outcomes=1_000, at_last_step=False)
    assert (a.action, a.code) == ("hold", "few_outcomes")
    assert "999" in a.reason and "1,000" in a.reason


def test_an_inconclusive_guardrail_holds():
    a = next_action({"churn": _harm("churn", "pass"), "unsubscribes": _harm("unsubscribes", "inconclusive")},
                    outcomes=5_000, min_outcomes=1_000, at_last_step=True)
    assert (a.action, a.code) == ("hold", "not_yet_certified")
    assert "unsubscribes" in a.reason and "churn" not in a.reason


def test_every_guardrail_certified_advances_or_completes_at_the_last_step():
    harms = {"churn": _harm("churn", "pass"), "unsubscribes": _harm("unsubscribes", "pass")}
    assert next_action(harms, outcomes=1_000, min_outcomes=1_000, at_last_step=False).action == "advance"
    done = next_action(harms, outcomes=1_000, min_outcomes=1_000, at_last_step=True)
    assert (done.action, done.code) == ("complete", "certified")
    assert "churn" in done.reason and "unsubscribes" in done.reason


def test_without_guardrails_enough_outcomes_advance_and_every_code_is_documented():
    a = next_action({}, outcomes=1_000, min_outcomes=500, at_last_step=False)
    assert (a.action, a.code) == ("advance", "no_guardrails")
    assert next_action({}, outcomes=10, min_outcomes=500, at_last_step=False).code == "few_outcomes"
    assert a.to_dict() == {"action": "advance", "reason": a.reason, "code": "no_guardrails"}
    assert set(CODES) == {"guardrail_beyond_limit", "certified", "no_guardrails", "few_outcomes", "not_yet_certified"}
