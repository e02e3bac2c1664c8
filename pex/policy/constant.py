"""The constant kind: one arm for everyone; with ``exploration = 1`` the uniform random policy.

The baselines every comparison includes (:func:`constant_policy`, :func:`uniform_policy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pex.policy.base import Policy


@dataclass(frozen=True, kw_only=True)
class ConstantPolicy(Policy):
    """One arm for everyone (``default_arm``); with ``exploration = 1`` the uniform random policy."""

    kind: ClassVar[str] = "constant"

    @property
    def single_arm(self) -> str | None:
        """The arm everyone gets before exploration."""
        return self.default_arm

    @property
    def complexity(self) -> int:
        """Nothing to understand: 0."""
        return 0

    @property
    def description(self) -> str:
        """Who gets what."""
        return "every arm at random" if self.exploration >= 1.0 else f"{self.default_arm!r} for everyone"

    def summary_fields(self) -> dict[str, Any]:
        """The arm everyone gets (None for uniform random)."""
        return {"arm": None if self.exploration >= 1.0 else self.default_arm}

    def greedy_arms(self, frame: pd.DataFrame, effects: dict[tuple[str, str], np.ndarray] | None = None) -> np.ndarray:
        """``default_arm`` for every unit."""
        return np.full(len(frame), self.arms.index(self.default_arm), dtype=np.int64)

    def greedy_arms_of_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``default_arm`` for every record."""
        return np.full(len(records), self.arms.index(self.default_arm), dtype=np.int64)


def constant_policy(arms: list[str], arm: str, exploration: float = 0.0, name: str | None = None) -> ConstantPolicy:
    """Everyone gets ``arm`` (a baseline every comparison includes)."""
    return ConstantPolicy(name=name or f"all-{arm}", arms=list(arms), default_arm=arm, exploration=exploration)


def uniform_policy(arms: list[str], name: str = "uniform-random") -> ConstantPolicy:
    """Every arm with equal probability: exploration 1."""
    return ConstantPolicy(name=name, arms=list(arms), default_arm=arms[0], exploration=1.0)
