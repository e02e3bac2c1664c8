"""Offline search for value-model weights: the Pareto set of policies.

A value-model policy (:mod:`pex.policy.value`) is fixed by one weight per
metric; different weights trade the goal metrics against each other and
against the guardrails. This module searches that trade-off offline:

* **Objectives** are the goal metrics (primary and secondary): the policy's
  lift over all-control, in the metric's units, signed so that larger is
  better. **Constraints** are the guardrails: relative harm (or, at a zero
  control mean, absolute harm) at most ``max_harm``.
* A weight vector is scored with the fit's **out-of-fold** predicted effects
  (what the policy decides on) and its out-of-fold **doubly-robust
  pseudo-outcomes** (what the decision is worth): the lift of metric ``m`` is
  the mean over training units of ``pseudo_m[unit, chosen arm]`` (control 0).
  The search runs on the training units rather than on the held-out units on
  purpose: a policy chosen as the best of thousands on the held-out units
  would have its held-out value inflated by the choice itself, and the
  held-out units are what the comparison and the recommendation rely on.
* **Ax** (``ax.Client``, multi-objective Bayesian optimization with the
  guardrails as outcome constraints) proposes weights in batches, and a
  **dense quasi-random sweep** (scrambled Sobol) evaluates thousands of weight
  vectors at once with array operations. Both fronts are reported with their
  hypervolume and time; the kept front is the non-dominated feasible set of
  the union, so it is never worse than either.

Weights live on the simplex: the search draws ``u`` in ``[0, 1]^M`` and uses
``u / sum(u)``, because the policy's argmax does not change when every weight
is multiplied by the same number. One more coordinate caps the share of units
treated (the top-scoring ones): when every arm harms a guardrail, only a cap
keeps a policy feasible. Ax searches weights and cap together; the dense sweep
values each weight vector at a grid of caps and at the exact best feasible cap
per goal metric, which costs one sort and one cumulative sum per vector.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import qmc

from pex.errors import PexError
from pex.experiment.guardrail import GuardrailRule, best_certifiable_prefix, prefix_bounds
from pex.policy.value import best_treated, budget_bar, choose_arms, objective

Say = Callable[[str], None]
CHUNK = 256  # weight vectors scored at once: (n_units x arms x CHUNK) floats stay in the tens of MB
CURVE_CHUNK = 32  # weight vectors per cumulative-sum block: (CURVE_CHUNK x n_units x metrics) floats
CAP_LEVELS = 32  # treated-share caps valued per weight vector by the dense sweep
SAMPLE = 400  # evaluated points per search method kept in the summary (columns: objectives, guardrails)


class TuningError(PexError):
    """The weight search cannot run on this fit."""


@dataclass
class TuningProblem:
    """Everything needed to value a weight vector, as arrays over the fit's training units."""

    experiment: str
    arms: list[str]
    control: str
    metrics: list[str]  # weight order
    objectives: list[str]  # goal metrics (maximised, goal-signed lift)
    guardrails: dict[str, dict]  # metric -> {max_harm, base, basis}
    goal_sign: np.ndarray  # (M,)
    scale: np.ndarray  # (M,)
    effects: np.ndarray  # (n, A, M) out-of-fold predicted effects, control 0
    signal: np.ndarray  # (n, A, M) out-of-fold DR pseudo-outcomes, control 0
    budget: float = 1.0  # largest share of units the greedy part of a policy may treat (exploration taken off)
    rules: dict[str, GuardrailRule] = field(default_factory=dict)  # the guardrails' rule (pex.experiment.guardrail)
    exploration: float = 0.0  # served policies mix this much uniform exploration in
    n_eval: int = 0  # held-out units the chosen policies will be certified on (0: as many as here)

    @property
    def n(self) -> int:
        """Number of building units."""
        return self.effects.shape[0]

    @property
    def dimension(self) -> int:
        """Dimension of the search space: one weight per metric plus the treated-share cap."""
        return len(self.metrics) + 1  # the weights and the treated-share cap

    @classmethod
    def from_fit(cls, ctx: Any, budget: float | None = None, exploration: float = 0.0) -> TuningProblem:
        """The problem on a stored fit (:class:`pex.services.policies.FitContext`); ``budget`` is the owner's largest
        served treated share, exploration included."""
        spec, model = ctx.dataset.spec, ctx.model
        if budget is not None and not 0.0 <= budget <= 1.0:
            raise TuningError(f"budget must be a share from 0 to 1, got {budget}", "e.g. --budget 0.3: at most 30% of units treated")
        goals = [m for m, meta in spec.metrics.items() if meta.role != "guardrail"]
        if not goals:
            raise TuningError(f"{spec.name} has only guardrail metrics, so there is nothing to optimise",
                              "give the spec a primary metric (role = \"primary\")")
        # scales and control means exactly as the value policy computes them
        metas, _rails = objective(spec, ctx.training_frame(), {m: 1.0 for m in spec.metrics}, "penalty")
        metrics = list(spec.metrics)
        oof, pseudo = ctx.oof_effects(), ctx.pseudo_outcomes()
        n = len(ctx.training)
        effects = np.zeros((n, len(model.arms), len(metrics)))
        signal = np.zeros_like(effects)
        for j, arm in enumerate(model.arms):
            if arm == model.control:
                continue
            for k, m in enumerate(metrics):
                effects[:, j, k] = oof[(m, arm)]
                signal[:, j, k] = pseudo[(m, arm)]
        rules = {c.rule.metric: c.rule for c in ctx.guardrail_constraints()}
        guardrails = {m: {"max_harm": r.limit if r.max_harm is not None else None, "base": r.scale, "basis": r.basis}
                      for m, r in rules.items()}
        k = len(model.arms)
        greedy_budget = 1.0
        if budget is not None:  # the served treated share includes exploration's (k-1)/k of explored units
            greedy_budget = min(max((budget - exploration * (k - 1) / k) / (1.0 - exploration), 0.0), 1.0) if exploration < 1 else 0.0
        return cls(experiment=spec.name, arms=list(model.arms), control=model.control, metrics=metrics, objectives=goals,
                   guardrails=guardrails, goal_sign=np.array([1.0 if metas[m]["goal"] == "increase" else -1.0 for m in metrics]),
                   scale=np.array([metas[m]["scale"] for m in metrics]), effects=effects, signal=signal,
                   budget=greedy_budget, rules=rules, exploration=float(exploration), n_eval=ctx.n_eval())

    def served_share(self, greedy_share: np.ndarray | float) -> np.ndarray:
        """The treated share once served: the greedy part's, plus exploration's (k-1)/k of the explored units."""
        k = len(self.arms)
        return (1.0 - self.exploration) * np.asarray(greedy_share) + self.exploration * (k - 1) / k

    def uniform_signal(self) -> np.ndarray:
        """Per unit and metric, the average pseudo-outcome over all arms (control's 0 included): what exploration does."""
        return self.signal.mean(axis=1)  # (n, M)

    # -- parameters -------------------------------------------------------------------------------------------------
    def weights(self, u: np.ndarray) -> np.ndarray:
        """Simplex weights (K, M) from raw draws (K, dimension); an all-zero draw stays all-zero (treat nobody)."""
        raw = np.asarray(u, dtype=float)[:, : len(self.metrics)]
        total = raw.sum(axis=1, keepdims=True)
        return np.divide(raw, total, out=np.zeros_like(raw), where=total > 0)

    def budgets(self, u: np.ndarray) -> np.ndarray:
        """Largest treated share per draw: the last coordinate scales the owner's budget (default: everyone)."""
        return np.asarray(u, dtype=float)[:, len(self.metrics)] * self.budget

    def weight_dict(self, w: np.ndarray) -> dict[str, float]:
        """A weight vector as {metric: weight}."""
        return {m: float(x) for m, x in zip(self.metrics, w)}

    # -- scoring ----------------------------------------------------------------------------------------------------
    def choices(self, u: np.ndarray) -> np.ndarray:
        """The arm index each policy (row) gives each training unit (column), shape (K, n)."""
        w = self.weights(u)
        coef = w * (self.goal_sign / self.scale)[None, :]  # (K, M)
        A = self.effects.shape[1]
        ctrl = self.arms.index(self.control)
        # policies in rows, units in columns: every per-policy operation below reads contiguous memory
        scores = [None if j == ctrl else coef @ self.effects[:, j, :].T for j in range(A)]
        # the value policy's own rule (pex.policy.value): over budget, control's score rises to the quantile
        # that treats that share; then each unit's best arm, ties to the first
        bar = budget_bar(best_treated(scores), self.budgets(u))
        return choose_arms(scores, ctrl, bar[:, None])

    def evaluate(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """Objectives (K, O), guardrail harms (K, G), feasibility (K,) and treated share (K,) of K draws."""
        u = np.atleast_2d(np.asarray(u, dtype=float))
        ctrl = self.arms.index(self.control)
        index = {m: k for k, m in enumerate(self.metrics)}
        lifts, treated = np.zeros((len(u), len(self.metrics))), np.zeros(len(u))
        bounds = np.zeros((len(u), len(self.rules)))
        uniform = self.uniform_signal()
        eps = self.exploration
        for start in range(0, len(u), CHUNK):
            chosen = self.choices(u[start:start + CHUNK])  # (k, n)
            change = np.zeros((len(chosen), self.n, len(self.metrics)))
            for j in range(len(self.arms)):
                if j != ctrl:  # control's pseudo-outcome is 0
                    change += (chosen == j)[:, :, None] * self.signal[None, :, j, :]
            change = (1.0 - eps) * change + eps * uniform[None, :, :]
            lifts[start:start + CHUNK] = change.mean(axis=1)
            for g, rule in enumerate(self.rules.values()):
                c = change[:, :, index[rule.metric]]
                harm = rule.sign * c.mean(axis=1) / rule.scale
                se = c.std(axis=1, ddof=1) / np.sqrt(self.n) / rule.scale
                bounds[start:start + CHUNK, g] = [rule.certifiable(h, e, self.n, self.n_eval or self.n) for h, e in zip(harm, se)]
            treated[start:start + CHUNK] = self.served_share((chosen != ctrl).mean(axis=1))
        return self._outcomes(lifts, treated, bounds)


    def evaluate_caps(self, u: np.ndarray, levels: int = CAP_LEVELS) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Every weight vector of ``u`` at ``levels`` treated-share caps at once; returns (draws, outcomes).

        For fixed weights, a cap treats the units with the highest best-arm scores, so the policy at every
        cap is a prefix of one ordering: sorting once and summing the chosen arms' pseudo-outcomes
        cumulatively values all caps for the price of one sort. The last coordinate of ``u`` is ignored;
        the returned draws carry each point's cap (``levels`` grid caps plus, per goal metric, the cap best
        for it within the guardrails: ``K * (levels + goals)`` rows, in ``u``'s order).
        """
        u = np.atleast_2d(np.asarray(u, dtype=float))
        M, ctrl = len(self.metrics), self.arms.index(self.control)
        index = {m: k for k, m in enumerate(self.metrics)}
        shares = np.arange(1, levels + 1) / levels  # of the owner's budget
        eps, n_eval = self.exploration, self.n_eval or self.n
        uniform = self.uniform_signal()  # (n, M)
        base_lift = eps * uniform.mean(axis=0)  # what exploration alone changes
        # nobody treated by the greedy part: exploration's own harm, the same for every weight vector
        bound0 = np.array([rule.certifiable(*rule.harm_and_se(eps * uniform[:, index[m]]), self.n, n_eval)
                           for m, rule in self.rules.items()])
        draws, lifts, treated, bounds = [], [], [], []
        for start in range(0, len(u), CURVE_CHUNK):
            chunk = u[start:start + CURVE_CHUNK].copy()
            chunk[:, M] = 1.0  # no cap: every unit whose best arm scores above control's 0
            chosen = self.choices(chunk)  # (k, n)
            w = self.weights(chunk)
            coef = w * (self.goal_sign / self.scale)[None, :]
            best = np.full(chosen.shape, -np.inf)
            value = np.zeros((len(chunk), self.n, M))
            for j in range(len(self.arms)):
                if j == ctrl:
                    continue
                here = chosen == j
                best = np.where(here, coef @ self.effects[:, j, :].T, best)
                value += here[:, :, None] * self.signal[None, :, j, :]
            order = np.argsort(-best, axis=1, kind="stable")  # treated units first, highest score first
            ranked = (1.0 - eps) * np.take_along_axis(value, order[:, :, None], axis=1)
            explored = eps * uniform[order]  # (k, n, M), in each vector's ranking
            total = np.cumsum(ranked, axis=1) / self.n + base_lift  # (k, n, M): lifts when the first L units are treated
            prefix = {m: prefix_bounds(rule, ranked[:, :, index[m]], explored[:, :, index[m]], n_eval=n_eval)
                      for m, rule in self.rules.items()}
            allowed = None
            for m, rule in self.rules.items():
                ok = prefix[m] <= rule.limit
                allowed = ok if allowed is None else allowed & ok
            positive = (chosen != ctrl).sum(axis=1)  # units treated without a cap
            cap = np.minimum(positive, int(np.floor(self.budget * self.n)))
            best_prefixes = np.column_stack([
                best_certifiable_prefix(self.goal_sign[index[m]] * ranked[:, :, index[m]], [], max_count=cap, allowed=allowed)
                for m in self.objectives])
            for i in range(len(chunk)):
                count = np.minimum(np.round(shares * self.budget * self.n).astype(int), positive[i])
                count = np.concatenate([count, best_prefixes[i]])
                at = np.maximum(count - 1, 0)
                lift = np.where(count[:, None] > 0, total[i, at], base_lift[None, :])
                bound = np.column_stack([np.where(count > 0, prefix[m][i, at], bound0[g]) for g, m in enumerate(self.rules)]) \
                    if self.rules else np.zeros((len(count), 0))
                d = np.repeat(chunk[i : i + 1], len(count), axis=0)
                d[:, M] = count / self.n / self.budget if self.budget > 0 else 0.0
                draws.append(d)
                lifts.append(lift)
                bounds.append(bound)
                treated.append(self.served_share(count / self.n))
        return np.vstack(draws), self._outcomes(np.vstack(lifts), np.concatenate(treated), np.vstack(bounds))

    def _outcomes(self, lifts: np.ndarray, treated: np.ndarray, bounds: np.ndarray) -> dict[str, np.ndarray]:
        """Objectives, guardrail harms (point estimates), certifiable bounds and feasibility (every bound within its limit)."""
        index = {m: k for k, m in enumerate(self.metrics)}
        objectives = np.column_stack([self.goal_sign[index[m]] * lifts[:, index[m]] for m in self.objectives])
        harms = np.column_stack([rule.sign * lifts[:, index[m]] / rule.scale for m, rule in self.rules.items()]) \
            if self.rules else np.zeros((len(lifts), 0))
        limits = np.array([rule.limit for rule in self.rules.values()])
        feasible = (bounds <= limits[None, :]).all(axis=1) if self.rules else np.ones(len(lifts), dtype=bool)
        return {"objectives": objectives, "harms": harms, "bounds": bounds, "feasible": feasible, "treated_share": treated}


@dataclass
class Front:
    """Every weight vector one method evaluated, and which of them are Pareto-optimal and feasible."""

    method: str
    draws: np.ndarray  # (K, dimension)
    objectives: np.ndarray  # (K, O)
    harms: np.ndarray  # (K, G)
    feasible: np.ndarray  # (K,)
    treated_share: np.ndarray  # (K,)
    seconds: float
    pareto: np.ndarray = field(default=None)  # indices into the K draws
    hypervolume: float = float("nan")
    requested: int | None = None  # points asked for, when a budget may have stopped the method early
    bounds: np.ndarray | None = None  # (K, G) certifiable harm bounds (what feasibility is judged by)
    weight_vectors: int | None = None  # distinct weight vectors behind the points (the dense sweep values each at many caps)

    def __post_init__(self) -> None:
        if self.pareto is None:
            self.pareto = pareto_indices(self.objectives, self.feasible)

    @property
    def front(self) -> np.ndarray:
        """The objectives of the Pareto-optimal points."""
        return self.objectives[self.pareto]

    @classmethod
    def merge(cls, method: str, fronts: list[Front]) -> Front:
        """One front from several methods' points, its Pareto set recomputed."""
        return cls(method=method, draws=np.vstack([f.draws for f in fronts]), objectives=np.vstack([f.objectives for f in fronts]),
                   harms=np.vstack([f.harms for f in fronts]), feasible=np.concatenate([f.feasible for f in fronts]),
                   treated_share=np.concatenate([f.treated_share for f in fronts]), seconds=sum(f.seconds for f in fronts),
                   bounds=np.vstack([f.bounds if f.bounds is not None else np.full_like(f.harms, np.nan) for f in fronts]))


def pareto_indices(objectives: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """Indices of the feasible points no other feasible point dominates (all objectives maximised), best first."""
    idx = np.flatnonzero(feasible)
    if len(idx) == 0:
        return idx
    Y = objectives[idx]
    order = np.lexsort(tuple(-Y[:, j] for j in reversed(range(Y.shape[1]))))  # by first objective, then the next, desc
    kept: list[int] = []
    for i in order:
        y = Y[i]
        if kept:
            K = Y[kept]
            if ((K >= y).all(axis=1) & (K > y).any(axis=1)).any() or (K == y).all(axis=1).any():
                continue
        kept.append(i)
    return idx[np.array(kept, dtype=int)]


def hypervolume(front: np.ndarray, reference: np.ndarray) -> float:
    """Volume the front dominates above ``reference`` (all objectives maximised), via BoTorch's exact algorithm."""
    if len(front) == 0:
        return 0.0
    above = front[(front > reference).all(axis=1)]
    if len(above) == 0:
        return 0.0
    if front.shape[1] == 1:
        return float(above.max() - reference[0])
    with warnings.catch_warnings():  # importing BoTorch trips torch's own deprecation warnings, not ours to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch
        from botorch.utils.multi_objective.hypervolume import Hypervolume

    return float(Hypervolume(ref_point=torch.as_tensor(reference, dtype=torch.double)).compute(
        torch.as_tensor(above, dtype=torch.double)))


def reference_point(fronts: list[Front]) -> np.ndarray:
    """All-control: a lift of 0 on every objective, so the hypervolume measures gains over doing nothing and
    does not move with the fronts compared. Only when no Pareto point of any front gains on every objective
    at once (every volume would be 0) is it lowered to the worst Pareto point."""
    points = [f.front for f in fronts if len(f.pareto)]
    if not points:
        return np.zeros(0)
    stacked = np.vstack(points)
    if (stacked > 0).all(axis=1).any():
        return np.zeros(stacked.shape[1])
    return np.minimum(0.0, stacked.min(axis=0))


def dense_sweep(problem: TuningProblem, points: int = 2048, seed: int = 0, levels: int = CAP_LEVELS) -> Front:
    """``points`` scrambled-Sobol weight vectors, each valued at ``levels`` treated-share caps
    (:meth:`TuningProblem.evaluate_caps`), in blocks of array operations."""
    started = time.perf_counter()
    # draw the next power of two and keep a prefix: Sobol's balance properties hold for prefixes of 2^m
    m = int(np.ceil(np.log2(max(points, 2))))
    weights = qmc.Sobol(d=problem.dimension, scramble=True, seed=seed).random_base2(m)[:points]
    draws, out = problem.evaluate_caps(weights, levels)
    return Front("dense", draws, out["objectives"], out["harms"], out["feasible"], out["treated_share"], time.perf_counter() - started,
                 weight_vectors=points, bounds=out["bounds"])


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


def _ax_search(problem: TuningProblem, trials: int, batch: int, seed: int, say: Say, started: float,
               max_seconds: float | None = None) -> Front:
    from ax import Client, RangeParameterConfig

    client = Client(random_seed=seed)
    names = [f"w{i}" for i in range(problem.dimension)]  # Ax expressions want identifiers; metric names may hold '-'
    client.configure_experiment(parameters=[RangeParameterConfig(name=n, parameter_type="float", bounds=(0.0, 1.0)) for n in names],
                                name=f"{problem.experiment}-weights")
    objective_names = [f"objective{i}" for i in range(len(problem.objectives))]
    harm_names = [f"harm{i}" for i in range(len(problem.guardrails))]
    constraints = [f"{h} <= {g['max_harm']!r}" for h, g in zip(harm_names, problem.guardrails.values()) if g["max_harm"] is not None]
    if len(objective_names) > 1:
        # bounds on objectives are Ax's objective thresholds (the hypervolume reference): all-control's lift of 0
        constraints += [f"{n} >= 0.0" for n in objective_names]
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


@dataclass
class TuningResult:
    """The weight search's outcome: its problem, the fronts per method and the hypervolume reference point."""
    problem: TuningProblem
    fronts: dict[str, Front]  # "ax", "dense", "kept"
    reference: np.ndarray
    candidates: list[int]  # indices into the kept front's draws

    def candidate_settings(self) -> list[dict]:
        """Weights (and budget) of each chosen Pareto point, as build_value_policy takes them."""
        kept, p = self.fronts["kept"], self.problem
        out = []
        for i in self.candidates:
            draw = kept.draws[i : i + 1]
            out.append({"weights": p.weight_dict(p.weights(draw)[0]), "budget": float(p.served_share(p.budgets(draw)[0])),
                        "objectives": {m: float(v) for m, v in zip(p.objectives, kept.objectives[i])},
                        "guardrail_harm": {m: float(v) for m, v in zip(p.guardrails, kept.harms[i])},
                        "guardrail_bound": {m: float(v) for m, v in zip(p.guardrails, kept.bounds[i])},
                        "treated_share": float(kept.treated_share[i]), "in_sample": True})
        return out

    def to_dict(self) -> dict:
        """The search as JSON (what summary.json's ``pareto`` holds)."""
        p = self.problem

        def sample(f: Front) -> dict:
            """Up to SAMPLE evaluated points (an even stride, so reproducible): what the search saw, for plots."""
            idx = np.unique(np.linspace(0, len(f.draws) - 1, min(SAMPLE, len(f.draws))).round().astype(int))
            return {"objectives": f.objectives[idx].tolist(), "guardrail_harm": f.harms[idx].tolist(),
                    "feasible": f.feasible[idx].tolist()}

        def front_dict(f: Front) -> dict:
            return {"method": f.method, "evaluated": len(f.draws), **({"requested": f.requested} if f.requested is not None else {}),
                    **({"weight_vectors": f.weight_vectors} if f.weight_vectors is not None else {}),
                    "feasible": int(f.feasible.sum()), "seconds": round(f.seconds, 3),
                    "hypervolume": f.hypervolume, **({"sample": sample(f)} if f.method != "kept" else {}), "pareto": [
                        {"weights": p.weight_dict(p.weights(f.draws[i : i + 1])[0]),
                         "budget": float(p.served_share(p.budgets(f.draws[i : i + 1])[0])),
                         "objectives": {m: float(v) for m, v in zip(p.objectives, f.objectives[i])},
                         "guardrail_harm": {m: float(v) for m, v in zip(p.guardrails, f.harms[i])},
                         **({"guardrail_bound": {m: float(v) for m, v in zip(p.guardrails, f.bounds[i])}}
                            if f.bounds is not None else {}),
                         "treated_share": float(f.treated_share[i])} for i in f.pareto]}

        return {"objectives": p.objectives,
                "guardrails": {m: {"max_harm": g["max_harm"], "basis": g["basis"]} for m, g in p.guardrails.items()},
                "metrics": p.metrics, "budget": p.budget, "n_units": p.n,
                "rows": "training units: out-of-fold predicted effects decide, out-of-fold doubly-robust pseudo-outcomes value",
                "in_sample": "search values are in-sample: the best of many points on the same training units, so optimistic; "
                             "each candidate's held-out value is in its policy row",
                "feasible_means": "every guardrail's certifiable bound (harm plus the margin a held-out test will need, "
                                  "exploration included) within its limit",
                "exploration": p.exploration, "n_eval": p.n_eval,
                "reference_point": {m: float(v) for m, v in zip(p.objectives, self.reference)},
                "fronts": {name: front_dict(f) for name, f in self.fronts.items()},
                "candidates": self.candidate_settings()}


def optimize(problem: TuningProblem, trials: int = 30, batch: int = 3, dense: int = 2048, candidates: int = 4, seed: int = 0,
             use_ax: bool = True, say: Say | None = None, ax_seconds: float | None = None) -> TuningResult:
    """The dense sweep on ``problem``, then (``use_ax``) Ax refining it within ``ax_seconds``; the kept front is the
    Pareto set of both; ``candidates`` spread points of it.

    The dense sweep is the default searcher because it gives the larger hypervolume in a fixed time on these
    problems (``bench/optimize.py``: about 97% of the reference hypervolume in ~20 s against Ax's 25% in 40-120 s);
    Ax is the engine of the online loop, where each evaluation is a live experiment and cannot be swept.
    """
    say = say or (lambda message: None)
    fronts: dict[str, Front] = {}
    fronts["dense"] = dense_sweep(problem, points=dense, seed=seed)
    say(f"dense sweep: {len(fronts['dense'].pareto)} Pareto points from {dense:,} weight vectors in {fronts['dense'].seconds:.1f}s")
    if use_ax and trials > 0:
        fronts["ax"] = ax_search(problem, trials=trials, batch=batch, seed=seed, say=say, max_seconds=ax_seconds)
        say(f"Ax: {len(fronts['ax'].pareto)} Pareto points from {len(fronts['ax'].draws)} weight vectors in {fronts['ax'].seconds:.1f}s")
    fronts["kept"] = Front.merge("kept", list(fronts.values()))
    reference = reference_point(list(fronts.values()))
    for f in fronts.values():
        f.hypervolume = hypervolume(f.front, reference)
    return TuningResult(problem, fronts, reference, spread(fronts["kept"], candidates))


def spread(front: Front, k: int) -> list[int]:
    """Up to ``k`` Pareto points far apart: the best on the first objective, then farthest-point picks (scaled objectives)."""
    idx = list(front.pareto)
    if not idx or k <= 0:
        return []
    Y = front.objectives[idx]
    span = np.ptp(Y, axis=0)
    Z = (Y - Y.min(axis=0)) / np.where(span > 0, span, 1.0)
    chosen = [0]  # pareto_indices lists the best first objective first
    while len(chosen) < min(k, len(idx)):
        d = np.min(np.linalg.norm(Z[:, None, :] - Z[None, chosen, :], axis=2), axis=1)
        nxt = int(np.argmax(d))
        if d[nxt] <= 0:
            break
        chosen.append(nxt)
    return [idx[c] for c in chosen]
