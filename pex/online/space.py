"""The online loop's Ax experiment: what a candidate is (a weight vector and a cap) and what Ax is told about it.

A candidate is a point of the same search space as the offline weight search (:mod:`pex.search.tuning`): one
coordinate per metric (the weights, normalised onto the simplex) and one for the treated-share cap. Its
measured outcomes are, per goal metric, the live lift over all-control in the metric's units (signed so that
larger is better: the objectives) and, per guardrail with a ``max_harm``, the live harm (the outcome constraints
``harm <= limit``, the guardrail rule's limit: ``max_harm`` when harm is relative to the control mean, 0 when it is
absolute because the control mean is 0; :mod:`pex.experiment.guardrail`). Each is told with its standard error, so Ax models
the measurement noise instead of treating a noisy lift as exact.

Only live measurements are told to Ax. Offline estimates (the Pareto candidates of ``pex run``) choose the
first round's points (``attach``), and stay in the round's record labelled as offline evidence; they are never
entered as data of the same metrics, since an in-sample offline estimate and a live lift are not the same
measurement. Ax 1.3.1's ``Client`` has no trial types, which a multi-task model of the two (Letham & Bakshy,
arXiv 1904.01049) would need: ``ax.core.multi_type_experiment.MultiTypeExperiment`` and the multi-task GP of
``ax.adapter.registry`` live in Ax's lower-level API, outside the ``Client`` and the JSON snapshots this loop's
state relies on (docs/online.md).

The state is Ax's own JSON snapshot (``Client.save_to_json_file``), kept in the store by the caller after
every ask and tell.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pex.errors import PexError
from pex.experiment.guardrail import GuardrailRule
from pex.search.ax_adapter import outcome_constraints, quiet_ax


@dataclass(frozen=True)
class Measurement:
    """One candidate's live figures: per goal metric its signed lift, per guardrail its harm, each (mean, se)."""

    objectives: dict[str, tuple[float, float]]
    harms: dict[str, tuple[float, float]]


class OnlineSpace:
    """An Ax ``Client`` over weights (one per metric) and the cap, with the goal metrics as objectives and the
    guardrails as outcome constraints. Parameter and Ax metric names are positional (``w0``.., ``cap``, ``lift0``..,
    ``harm0``..) because Ax expressions need identifiers and metric names may hold ``-``."""

    def __init__(self, client: Any, metrics: Sequence[str], objectives: Sequence[str],
                 guardrails: Mapping[str, GuardrailRule]) -> None:
        self.client = client
        self.metrics = list(metrics)
        self.objectives = list(objectives)
        self.guardrails = dict(guardrails)

    @property
    def parameters(self) -> list[str]:
        """The Ax parameter names: a weight per metric, then the cap."""
        return [f"w{i}" for i in range(len(self.metrics))] + ["cap"]

    @classmethod
    def new(cls, name: str, metrics: Sequence[str], objectives: Sequence[str], guardrails: Mapping[str, GuardrailRule], *,
            seed: int, initialization: int, method: str = "fast") -> OnlineSpace:
        """A fresh experiment; the first ``initialization`` asked points are quasi-random (Sobol), the rest Ax's
        Bayesian optimization (``method="fast"``), or every point quasi-random (``"random_search"``, the baseline)."""
        space = cls(None, metrics, objectives, guardrails)
        with quiet_ax():  # importing Ax warns about its own moved modules
            from ax import Client, RangeParameterConfig

            client = Client(random_seed=seed)
            client.configure_experiment(
                parameters=[RangeParameterConfig(name=p, parameter_type="float", bounds=(0.0, 1.0)) for p in space.parameters],
                name=f"{name}-online")
            lifts = [f"lift{i}" for i in range(len(space.objectives))]
            constraints = outcome_constraints({f"harm{j}": rule for j, rule in enumerate(space.guardrails.values())}, lifts)
            client.configure_optimization(objective=", ".join(lifts), outcome_constraints=constraints or None)
            client.configure_generation_strategy(method=method, initialization_budget=initialization,
                                                 initialization_random_seed=seed)
        space.client = client
        return space

    @classmethod
    def restore(cls, state: Mapping[str, Any], metrics: Sequence[str], objectives: Sequence[str],
                guardrails: Mapping[str, GuardrailRule]) -> OnlineSpace:
        """The experiment as saved by :meth:`state`."""
        with tempfile.TemporaryDirectory() as folder, quiet_ax():
            from ax import Client

            path = os.path.join(folder, "ax.json")
            with open(path, "w") as fh:
                json.dump(state, fh)
            client = Client.load_from_json_file(path)
        return cls(client, metrics, objectives, guardrails)

    def state(self) -> dict[str, Any]:
        """Ax's JSON snapshot of the experiment and its generation strategy (the public file API, read back)."""
        with tempfile.TemporaryDirectory() as folder, quiet_ax():
            path = os.path.join(folder, "ax.json")
            self.client.save_to_json_file(path)
            with open(path) as fh:
                return json.load(fh)

    def point(self, parameters: Mapping[str, float]) -> list[float]:
        """A trial's parameters as the search-space draw ``u`` (weights then cap)."""
        return [float(parameters[p]) for p in self.parameters]

    def ask(self, k: int) -> list[tuple[int, list[float]]]:
        """``k`` new trials: (trial index, point). Ax may return a batch short; asking again fills it."""
        out: list[tuple[int, list[float]]] = []
        with quiet_ax():
            from ax.exceptions.core import DataRequiredError

            for _attempt in range(3 * k):
                if len(out) >= k:
                    break
                try:
                    proposed = self.client.get_next_trials(max_trials=k - len(out))
                except DataRequiredError:
                    raise PexError("Ax has no live measurement to model yet: every arm so far was abandoned",
                                   "serve the open round longer so that its arms get outcomes, then complete it") from None
                out += [(int(t), self.point(p)) for t, p in proposed.items()]
        return out

    def attach(self, point: Sequence[float]) -> int:
        """A trial at a chosen point (an offline candidate); returns its index."""
        with quiet_ax():
            return int(self.client.attach_trial(parameters=dict(zip(self.parameters, map(float, point)))))

    def tell(self, trial: int, measured: Measurement) -> None:
        """Complete a trial with its live figures (mean, standard error)."""
        data: dict[str, tuple[float, float]] = {}
        for i, m in enumerate(self.objectives):
            data[f"lift{i}"] = measured.objectives[m]
        for j, m in enumerate(self.guardrails):
            data[f"harm{j}"] = measured.harms[m]
        with quiet_ax():
            self.client.complete_trial(trial_index=trial, raw_data={k: (float(a), float(b)) for k, (a, b) in data.items()})

    def abandon(self, trial: int) -> None:
        """A trial whose arm got no usable traffic: Ax will not model it (and may propose near it again)."""
        with quiet_ax():
            self.client.mark_trial_abandoned(trial_index=trial)
