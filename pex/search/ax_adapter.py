"""The Ax adapter: Ax's ``Client`` driven for pex, offline (the weight search) and online (the loop's space).

Ax is optional at run time: it is imported only inside these functions, so a process that never asks for
Bayesian optimization does not load it (or torch behind it). Ax's names for parameters and metrics are
positional (``w0``.., ``objective0``.., ``harm0``..) because Ax expressions need identifiers and metric names
may hold ``-``. A guardrail's outcome constraint is its :class:`pex.experiment.guardrail.GuardrailRule`'s
limit, the same bound every other stage holds the guardrail to.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from pex.experiment.guardrail import GuardrailRule
from pex.search.pareto import Front

if TYPE_CHECKING:
    from pex.search.tuning import TuningProblem

Say = Callable[[str], None]


def ax_search(problem: TuningProblem, trials: int = 30, batch: int = 3, seed: int = 0, say: Say | None = None,
              max_seconds: float | None = None) -> Front:
    """Multi-objective Bayesian optimization of the weights with Ax's ``Client`` (guardrails as outcome constraints).

    Proposing a batch means optimizing an acquisition function whose cost depends on the data (seconds to
    minutes per batch on two cores), so ``max_seconds`` stops asking for new batches once it is spent; the
    front then says how many of the ``trials`` were run.
    """
    say = say or (lambda message: None)
    started = time.perf_counter()
    with quiet_ax():
        return _ax_search(problem, trials, batch, seed, say, started, max_seconds)


@contextmanager
def quiet_ax() -> Iterator[None]:
    """Ax logs every trial (on its own handlers, with warnings when a batch comes back short) and BoTorch warns
    about numerics it then handles itself; neither tells an experiment owner anything, so both are quiet here."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def outcome_constraints(harms: Mapping[str, GuardrailRule], objectives: Sequence[str]) -> list[str]:
    """Ax's outcome constraints: each guardrail's harm (``harms``: Ax metric name -> its rule) within the rule's
    limit (``max_harm``, or 0 when the harm is absolute at a zero control mean), and with several objectives
    (``objectives``: Ax metric names) each at least all-control's lift of 0, Ax's objective thresholds (the
    hypervolume reference)."""
    constraints = [f"{name} <= {rule.limit!r}" for name, rule in harms.items() if rule.has_limit]
    if len(objectives) > 1:
        constraints += [f"{n} >= 0.0" for n in objectives]
    return constraints


def _ax_search(problem: TuningProblem, trials: int, batch: int, seed: int, say: Say, started: float,
               max_seconds: float | None = None) -> Front:
    from ax import Client, RangeParameterConfig

    client = Client(random_seed=seed)
    names = [f"w{i}" for i in range(problem.dimension)]  # Ax expressions want identifiers; metric names may hold '-'
    client.configure_experiment(parameters=[RangeParameterConfig(name=n, parameter_type="float", bounds=(0.0, 1.0)) for n in names],
                                name=f"{problem.experiment}-weights")
    objective_names = [f"objective{i}" for i in range(len(problem.objectives))]
    harm_names = [f"harm{i}" for i in range(len(problem.rules))]
    constraints = outcome_constraints(dict(zip(harm_names, problem.rules.values())), objective_names)
    client.configure_optimization(objective=", ".join(objective_names), outcome_constraints=constraints or None)
    client.configure_generation_strategy(method="fast", initialization_budget=min(max(2 * problem.dimension + 2, batch), trials),
                                         initialization_random_seed=seed)
    draws, rows = [], []
    done = 0
    while done < trials:
        if max_seconds is not None and done and time.perf_counter() - started > max_seconds:
            say(f"Ax: time budget of {max_seconds:g}s spent after {done} of {trials} weight vectors")
            break
        proposed = client.get_next_trials(max_trials=min(batch, trials - done))
        if not proposed:
            break
        u = np.array([[params[n] for n in names] for params in proposed.values()], dtype=float)
        out = problem.evaluate(u)
        for i, trial in enumerate(proposed):
            data = {n: float(out["objectives"][i, j]) for j, n in enumerate(objective_names)}
            data.update({n: float(out["bounds"][i, j]) for j, n in enumerate(harm_names)})  # certifiable, not point
            client.complete_trial(trial_index=trial, raw_data=data)
        draws.append(u)
        rows.append(out)
        done += len(u)
        say(f"Ax: {done}/{trials} weight vectors evaluated")
    u = np.vstack(draws)
    return Front("ax", u, np.vstack([r["objectives"] for r in rows]), np.vstack([r["harms"] for r in rows]),
                 np.concatenate([r["feasible"] for r in rows]), np.concatenate([r["treated_share"] for r in rows]),
                 time.perf_counter() - started, requested=trials, bounds=np.vstack([r["bounds"] for r in rows]))
