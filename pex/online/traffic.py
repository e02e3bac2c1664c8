"""Simulated users against a running server: decisions asked over HTTP, outcomes drawn from the simulator's truth.

Users arrive over ``days`` simulated days. Each day's users ask the policy for a decision (``decide-batch``)
with their observed features; each user's outcomes are that user's potential outcomes under the decided arm
(:func:`pex.experiment.simulate.simulate` draws them for every arm, with the truth behind them), and are posted
back (``/outcomes``) one day later, as outcomes come in after the decision, except for a ``missing`` share of
users whose outcomes never arrive. The last day's outcomes are posted at the end.

This is the loop's test bench and a load generator, not a product path: it knows the truth, which no real
caller does.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pex.errors import PexError
from pex.experiment.simulate import SimulatedExperiment, drifted, simulate

BATCH = 1_000  # units per decide-batch request
OUTCOME_BATCH = 20_000  # records per outcomes request
Say = Callable[[str], None]


class TrafficError(PexError):
    """The server refused a request, or cannot be reached."""


@dataclass
class TrafficResult:
    """What a simulation sent and got back."""

    units: int = 0
    decisions: int = 0
    outcomes_posted: int = 0
    units_without_outcomes: int = 0
    arms: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    acknowledged: list[tuple[str, float]] = field(default_factory=list)  # (decision_id, time it was answered)

    def to_dict(self) -> dict[str, Any]:
        """The counts, as JSON."""
        return {"units": self.units, "decisions": self.decisions, "outcomes_posted": self.outcomes_posted,
                "units_without_outcomes": self.units_without_outcomes, "arms": dict(self.arms),
                "versions": dict(self.versions), "seconds": round(self.seconds, 2)}


class Client:
    """JSON over HTTP with a bearer token; errors become :class:`TrafficError` with the server's own message."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path``; the parsed answer."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())
            except ValueError:
                error = {"error": f"HTTP {exc.code}", "hint": ""}
            raise TrafficError(f"{path}: {error.get('error', exc.code)}", error.get("hint") or "") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrafficError(f"cannot reach {self.url}: {reason}", "start the server with `pex serve` and pass its --url") from None


def population(experiment: str, units: int, scenario: str, seed: int, *, shift: dict[str, float] | None = None,
               missing_features: dict[str, float] | None = None) -> SimulatedExperiment:
    """``units`` fresh simulated users of ``scenario``, ids ``<experiment>-s<seed>-<i>`` (new ids per seed); with
    ``shift`` or ``missing_features``, their features as sent drift (:func:`pex.experiment.simulate.drifted`)."""
    sim = simulate(units, scenario=scenario, seed=seed)
    sim.data["user_id"] = [f"{experiment}-s{seed}-{i}" for i in range(units)]
    if shift or missing_features:
        try:
            sim = drifted(sim, shift=shift, missing=missing_features, seed=seed)
        except ValueError as exc:
            raise TrafficError(str(exc), f"name features of the {scenario} scenario: {', '.join(sim.truth.feature_names)}") from None
    return sim


def play(client: Client, experiment: str, policy: str, sim: SimulatedExperiment, *, unit_column: str, days: int = 1,
         missing: float = 0.1, seed: int = 0, pace: float = 0.0, say: Say | None = None) -> TrafficResult:
    """Play ``sim``'s users against ``policy`` (module docstring); ``pace`` seconds pass between simulated days."""
    say = say or (lambda m: None)
    started = time.perf_counter()
    result = TrafficResult(units=len(sim.data))
    metrics = list(sim.metrics)
    data = sim.data
    features = [c for c in data.columns if c not in (unit_column, "user_id", "arm", *metrics)]
    sent = data[features].astype(object).where(data[features].notna(), None).to_dict("records")
    ids = data["user_id"].astype(str).tolist()
    lost = np.random.default_rng(seed).uniform(size=len(data)) < missing
    result.units_without_outcomes = int(lost.sum())
    pending: list[dict[str, Any]] = []
    for day, rows in enumerate(np.array_split(np.arange(len(data)), max(days, 1)), start=1):
        if day > 1 and pace > 0:
            time.sleep(pace)
        todays: list[dict[str, Any]] = []
        for start in range(0, len(rows), BATCH):
            chunk = rows[start:start + BATCH]
            answer = client.post(f"/api/v1/policies/{policy}/decide-batch",
                                 {"units": [{"unit": ids[i], "features": sent[i]} for i in chunk]})
            now = time.time()
            for i, d in zip(chunk, answer["decisions"]):
                result.decisions += 1
                result.arms[d["arm"]] = result.arms.get(d["arm"], 0) + 1
                key = f"{d['policy']} v{d['version']}"
                result.versions[key] = result.versions.get(key, 0) + 1
                result.acknowledged.append((d["decision_id"], now))
                if not lost[i]:
                    todays += [{"unit": ids[i], "metric": m, "value": float(sim.truth.outcomes[m][d["arm"]][i])} for m in metrics]
        result.outcomes_posted += _post_outcomes(client, experiment, pending)  # yesterday's outcomes come in today
        pending = todays
        say(f"day {day}/{days}: {result.decisions:,} decisions, {result.outcomes_posted:,} outcomes posted")
    result.outcomes_posted += _post_outcomes(client, experiment, pending)
    result.seconds = time.perf_counter() - started
    return result


def _post_outcomes(client: Client, experiment: str, records: list[dict[str, Any]]) -> int:
    posted = 0
    for start in range(0, len(records), OUTCOME_BATCH):
        part = records[start:start + OUTCOME_BATCH]
        posted += int(client.post("/api/v1/outcomes", {"experiment": experiment, "records": part})["recorded"])
    return posted
