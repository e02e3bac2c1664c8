"""Batch decisions: the arm and its propensity for every unit of a file, from a stored policy or a policy file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pex.errors import NotFoundError, PexError
from pex.policy.base import Policy
from pex.services.models import load_policy
from pex.services.tables import read_units
from pex.store.workspace import Workspace


@dataclass(frozen=True)
class Decisions:
    """Who gets what: ``frame`` has the unit column, ``arm`` and ``propensity`` (of the chosen arm)."""

    policy: Policy
    unit: str
    frame: pd.DataFrame

    def shares(self) -> dict[str, float]:
        """Share of units per arm of the policy, in the policy's arm order."""
        counts = self.frame["arm"].value_counts(normalize=True)
        return {a: float(counts.get(a, 0.0)) for a in self.policy.arms}


def unit_column(workspace: Callable[[], Workspace], policy: Policy) -> str:
    """The column naming the units: that of the policy's experiment, when the workspace has it."""
    if policy.experiment:
        try:
            ws = workspace()
            return ws.load_dataset_spec(ws.dataset_version(policy.experiment).id).unit
        except NotFoundError:  # no workspace here, or not this experiment
            pass
    raise PexError(f"which column identifies the units? policy {policy.name!r} belongs to no experiment in this workspace",
                   "pass --unit COLUMN")


def decide_file(workspace: Callable[[], Workspace], policy_ref: str, data_path: str | Path, *,
                unit: str | None = None, seed: int | None = None) -> Decisions:
    """Decide for every row of a CSV or Parquet file; every feature the policy reads must be a column of it.

    ``workspace`` opens the store only when needed: a policy file with ``unit`` given needs none. Decisions
    are reproducible: a unit's arm depends on the policy's name and version, the unit id and ``seed`` only.
    """
    policy, _record = load_policy(workspace, policy_ref)
    unit = unit or unit_column(workspace, policy)
    frame = read_units(data_path, unit, tuple(policy.categorical_features()), "decide for",
                       "add it, or name the id column with --unit")
    policy.check_frame(frame, source=Path(data_path).name)
    arms, propensity = policy.decide(frame, frame[unit], salt=seed)
    return Decisions(policy, unit, pd.DataFrame({unit: frame[unit].to_numpy(), "arm": arms, "propensity": propensity}))
