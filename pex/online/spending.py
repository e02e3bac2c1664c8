"""The online loop's error budget: one ``alpha`` spent over a number of rounds fixed when the loop starts.

Every completed round certifies its arms at its own one-sided level, Bonferroni-adjusted over the round's
measured arms (:mod:`pex.online.choice`). A round's false certifications are then within its share
``alpha_r``; over the loop, by the union bound, the chance that *any* arm of *any* round is falsely certified
(so any pick that can be promoted, and any arm of the certified front) stays within ``sum alpha_r = alpha``.
Without a plan each round spends the whole ``alpha`` again: with six rounds of four arms, every arm truly at its
guardrail limit, 23% of loops (200 simulated) promoted a falsely certified pick; with the plan, 4.4% of 500
(``tests/online/test_loop_error_control.py``).

The budget is split equally over the planned rounds. Why a plan fixed at ``start`` and not a fresh confirmation
round: the loop's rounds already measure every arm, the champion included, on fresh units, so a separate
confirmation would spend traffic on a measurement each round already makes; and a plan written into the loop
before any data is seen cannot be stretched afterwards to make a late arm pass. The loop does not open a round
beyond its plan (:func:`pex.services.online.complete_round`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pex.errors import DataError
from pex.experiment.guardrail import ALPHA

DEFAULT_ROUNDS = 6
MAX_ROUNDS = 50


@dataclass(frozen=True)
class AlphaSpending:
    """``alpha`` split equally over ``rounds`` planned rounds."""

    rounds: int = DEFAULT_ROUNDS
    alpha: float = ALPHA

    def check(self) -> None:
        """DataError on a plan out of range."""
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise DataError(f"--rounds must be from 1 to {MAX_ROUNDS}, got {self.rounds}",
                            "the loop's 5% error budget is split over its planned rounds: e.g. --rounds 6")
        if not 0.0 < self.alpha < 1.0:
            raise DataError(f"alpha must be in (0, 1), got {self.alpha}", "e.g. 0.05: one-sided 95% bounds over the loop")

    def round_alpha(self, number: int) -> float:
        """Round ``number``'s share of the budget (1-based); 0 past the plan, where nothing can be certified."""
        return self.alpha / self.rounds if 1 <= number <= self.rounds else 0.0

    def spent(self, completed: int) -> float:
        """The budget spent by ``completed`` rounds."""
        return sum(self.round_alpha(r) for r in range(1, completed + 1))

    def to_dict(self, completed: int = 0) -> dict[str, Any]:
        """The plan and what ``completed`` rounds spent of it, as JSON."""
        return {"alpha": self.alpha, "rounds": self.rounds, "per_round": self.alpha / self.rounds,
                "completed": completed, "spent": self.spent(completed), "rule": "equal shares, Bonferroni over each round's arms"}

    @classmethod
    def of(cls, settings: dict[str, Any]) -> AlphaSpending:
        """The plan a loop's settings record; a loop started before plans existed has the default plan."""
        return cls(rounds=int(settings.get("rounds", DEFAULT_ROUNDS)), alpha=float(settings.get("alpha", ALPHA)))
