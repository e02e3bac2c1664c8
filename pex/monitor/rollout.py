"""The rollout's step rule: what a watcher does with a canary's sequential guardrail verdicts.

Rollback comes first and needs no minimum: the always-valid lower bound (:mod:`pex.monitor.sequential`) holds
at every number of units, so a guardrail significantly beyond ``max_harm`` is acted on at the first look that
shows it. Advancing needs more: every guardrail certified (its always-valid upper bound within the limit) *and*
at least ``min_outcomes`` outcomes, because the bound is asymptotic (a normal approximation with an estimated
variance) and a few early outcomes can certify by luck of a small variance estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from pex.monitor.sequential import SequentialHarm

ACTIONS = ("advance", "complete", "rollback", "hold")
# what each code means, for readers of a release row or an alert
CODES = {
    "guardrail_beyond_limit": "a guardrail's always-valid lower bound is beyond its limit: roll back",
    "certified": "every guardrail's always-valid upper bound is within its limit, with enough outcomes",
    "no_guardrails": "no guardrail has a limit to hold; enough outcomes were measured",
    "few_outcomes": "fewer outcomes than the step needs before it may advance",
    "not_yet_certified": "some guardrail's always-valid bounds straddle its limit: wait for more outcomes",
}


@dataclass(frozen=True)
class Action:
    """What to do at this check: ``action`` (advance | complete | rollback | hold), why in words, and a ``code``
    (:data:`CODES`) that screens and alerts build on."""

    action: str
    reason: str
    code: str

    def to_dict(self) -> dict:
        """The action as JSON."""
        return asdict(self)


def _figures(h: SequentialHarm) -> str:
    return (f"{h.metric} harm {h.estimate:+.4g} (always-valid bounds [{h.lower:+.4g}, {h.upper:+.4g}], "
            f"limit {h.limit:+.4g}, {h.n:,} units)")


def next_action(harms: Mapping[str, SequentialHarm], *, outcomes: int, min_outcomes: int, at_last_step: bool) -> Action:
    """The step rule (module docstring) over the canary's guardrails ``harms`` (by metric), with ``outcomes``
    measured so far; ``at_last_step``: advancing completes the rollout."""
    failed = [h for h in harms.values() if h.verdict == "fail"]
    if failed:
        return Action("rollback", "; ".join(_figures(h) for h in failed) + ": significantly beyond max_harm",
                      "guardrail_beyond_limit")
    if outcomes < min_outcomes:
        return Action("hold", f"{outcomes:,} outcomes of the {min_outcomes:,} needed before the step may advance",
                      "few_outcomes")
    pending = [h for h in harms.values() if h.verdict != "pass"]
    if pending:
        return Action("hold", "; ".join(_figures(h) for h in pending) + ": not yet certified", "not_yet_certified")
    verb = "complete" if at_last_step else "advance"
    if not harms:
        return Action(verb, f"no guardrail with a limit; {outcomes:,} outcomes measured", "no_guardrails")
    return Action(verb, "every guardrail certified: " + "; ".join(_figures(h) for h in harms.values()), "certified")
