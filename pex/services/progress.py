"""Structured progress of a long service call (a pipeline run): which stage, how far overall, and a way to stop it.

:func:`pex.services.run.run` prints ``[i/6] ...`` lines through its ``say`` callback for people; beside them it
hands a :class:`Progress` event to an optional ``on_progress`` callback for programs (the background worker writes
them to the job's row, which the UI's job page polls). The stages are the CLI's six plus a final ``report``
(writing the outputs and recording the run). ``fraction`` is the share of the whole run done, from the stages'
typical shares of its wall time (:data:`WEIGHTS`); the fit's model-by-model progress moves it within the fit.

A callback may raise :class:`Cancelled` to stop the run at that point. Nothing is half-written then: every store
write is one transaction, and a run is recorded only at its very end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# the pipeline's stages in order, with their rough share of a run's wall time (measured on the 2,000- and
# 50,000-unit simulated experiments: the fit dominates, then the weight search and off-policy comparison)
WEIGHTS = {"ingest": 0.04, "effects": 0.04, "fit": 0.52, "policies": 0.1, "optimize": 0.24, "recommend": 0.02,
           "report": 0.04}
STAGES = tuple(WEIGHTS)


class Cancelled(Exception):
    """Raised by a progress callback to stop the run it reports on (a cancelled job)."""


@dataclass(frozen=True)
class Progress:
    """One progress event: stage ``stage`` (number ``index`` of ``total``, from 1), what it does, and the share
    of the whole run done (0..1)."""

    stage: str
    index: int
    total: int
    message: str
    fraction: float

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON."""
        return asdict(self)


OnProgress = Callable[[Progress], None]


def stage_start(stage: str) -> float:
    """The share of a run done when ``stage`` starts."""
    done = 0.0
    for name, weight in WEIGHTS.items():
        if name == stage:
            return round(done, 4)
        done += weight
    raise ValueError(f"unknown stage {stage!r}")


def within(stage: str, share: float) -> float:
    """The share of a run done when ``share`` (0..1) of ``stage`` is done."""
    return round(stage_start(stage) + WEIGHTS[stage] * min(1.0, max(0.0, share)), 4)


def event(stage: str, message: str, share: float = 0.0) -> Progress:
    """The event for ``share`` of ``stage`` done."""
    return Progress(stage, STAGES.index(stage) + 1, len(STAGES), message, within(stage, share))
