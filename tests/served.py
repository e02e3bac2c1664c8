"""Helpers for tests of logged feedback: an ingested experiment, a served policy and the decision-log rows it makes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pex.cli.main import main
from pex.experiment.simulate import SimulatedExperiment, simulate
from pex.policy.base import Policy
from pex.policy.constant import ConstantPolicy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TREE = ROOT / "policies" / "notification_cadence-tree-example.json"
NAME = "exp"


def ingest(directory: Path, home: Path, n: int = 2_000, seed: int = 1) -> None:
    """Simulate an experiment (notification cadence) and ingest it as ``exp`` into the workspace ``home``."""
    simulate(n, seed=seed).write(directory, name=NAME)
    assert main(["--home", str(home), "ingest", str(directory / f"{NAME}.toml")]) == 0


def served_tree(exploration: float = 0.2) -> Policy:
    """The example tree policy, as served for ``exp`` with ``exploration``."""
    doc = json.loads(EXAMPLE_TREE.read_text(encoding="utf-8"))
    return Policy.from_document(doc).replace(exploration=exploration, experiment=NAME)


def constant(arm: str, arms: list[str], name: str | None = None) -> Policy:
    """All units get ``arm``."""
    return ConstantPolicy(name=name or f"all-{arm}", arms=list(arms), default_arm=arm, experiment=NAME)


def live_units(n: int, seed: int) -> SimulatedExperiment:
    """Fresh simulated units (as if arriving at the server), ids prefixed ``live-``."""
    sim = simulate(n, seed=seed)
    sim.data["user_id"] = "live-" + sim.data["user_id"]
    return sim


def decision_rows(policy: Policy, frame: pd.DataFrame, features: list[str], unit: str = "user_id",
                  at: datetime | None = None) -> list[dict]:
    """The rows the server's decision log would append for deciding ``frame`` with ``policy`` (real propensities)."""
    arms, propensity = policy.decide(frame, frame[unit])
    sent = frame[features].astype(object).where(frame[features].notna(), None).to_dict("records")
    at = at or datetime(2026, 12, 1, tzinfo=UTC)
    return [{"decision_id": uuid.uuid4().hex, "decided_at": at + timedelta(seconds=i), "experiment": NAME,
             "policy": policy.name, "version": policy.version, "unit": str(u), "arm": str(a), "propensity": float(p),
             "features": f}
            for i, (u, a, p, f) in enumerate(zip(frame[unit], arms, propensity, sent, strict=True))]


def realised(sim: SimulatedExperiment, arms: np.ndarray) -> pd.DataFrame:
    """Per unit, the outcome of the arm it was served (its realised potential outcome), one column per metric."""
    out = pd.DataFrame({"user_id": sim.data["user_id"]})
    index = np.asarray([sim.arms.index(a) for a in arms])
    for m in sim.metrics:
        table = np.column_stack([sim.truth.outcomes[m][a] for a in sim.arms])
        out[m] = table[np.arange(len(index)), index]
    return out
