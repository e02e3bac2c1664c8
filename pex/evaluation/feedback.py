"""Logged feedback: per unit, its context, the arm a logging policy chose, that choice's probability and the rewards.

This is the record off-policy estimators read (Open Bandit Pipeline calls it ``bandit_feedback``). The held-out
units of a randomized experiment are one, with the assignment probabilities as propensities; the decision log
of a served policy joined with the outcomes that came back will be another, with the served propensities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pex.errors import DataError


@dataclass(frozen=True)
class LoggedFeedback:
    """Logged feedback of ``n`` units; ``action[i]`` indexes ``arms``, ``pscore[i]`` is its logging probability."""

    context: pd.DataFrame
    arms: tuple[str, ...]
    action: np.ndarray
    pscore: np.ndarray
    rewards: Mapping[str, np.ndarray]
    source: str = ""  # where the feedback comes from, in words

    def __post_init__(self) -> None:
        n = len(self.context)
        for name, values in (("action", self.action), ("pscore", self.pscore), *self.rewards.items()):
            if len(values) != n:
                raise DataError(f"logged feedback has {n} units but {len(values)} values of {name}",
                                "every column of logged feedback needs one value per unit")
        if n and (self.action.min() < 0 or self.action.max() >= len(self.arms)):
            raise DataError(f"a logged action is outside the {len(self.arms)} arms", "actions index the arm list")
        bad = ~(np.isfinite(self.pscore) & (self.pscore > 0) & (self.pscore <= 1))
        if bad.any():
            raise DataError(f"{int(bad.sum())} logged propensities are not probabilities in (0, 1] "
                            f"(e.g. {self.pscore[bad][0]!r})",
                            "a propensity is the probability the logging policy gave the logged arm; it cannot be 0")

    @property
    def n(self) -> int:
        """Number of units."""
        return len(self.context)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, arms: list[str] | tuple[str, ...], arm_column: str, propensity_column: str,
                   reward_columns: Mapping[str, str], source: str = "") -> LoggedFeedback:
        """Feedback from a table with one row per unit: the logged arm's label, its propensity and a column per reward."""
        missing = [c for c in (arm_column, propensity_column, *reward_columns.values()) if c not in frame.columns]
        if missing:
            raise DataError(f"logged feedback needs column {missing[0]!r}", f"columns found: {', '.join(map(str, frame.columns))}")
        index = {a: i for i, a in enumerate(arms)}
        labels = frame[arm_column].astype(str)
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"logged arm {unknown[0]!r} is not one of the arms {', '.join(arms)}",
                            "log only the arms of the policy or experiment being evaluated")
        return cls(context=frame, arms=tuple(arms), action=labels.map(index).to_numpy(dtype=np.int64),
                   pscore=frame[propensity_column].to_numpy(dtype=float),
                   rewards={name: frame[column].to_numpy(dtype=float) for name, column in reward_columns.items()},
                   source=source)
