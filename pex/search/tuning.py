"""Offline search for value-model weights: the Pareto set of policies.

A value-model policy (:mod:`pex.policy.value`) is fixed by one weight per
metric; different weights trade the goal metrics against each other and
against the guardrails. This module searches that trade-off offline:

* **Objectives** are the goal metrics (primary and secondary): the policy's
  lift over all-control, in the metric's units, signed so that larger is
  better. **Constraints** are the guardrails: each one's certifiable harm
  bound within its rule's limit (:class:`pex.experiment.guardrail.GuardrailRule`:
  ``max_harm`` relative, or 0 absolute at a zero control mean).
* A weight vector is scored with the fit's **out-of-fold** predicted effects
  (what the policy decides on) and its out-of-fold **doubly-robust
  pseudo-outcomes** (what the decision is worth): the lift of metric ``m`` is
  the mean over training units of ``pseudo_m[unit, chosen arm]`` (control 0).
  The search runs on the training units rather than on the held-out units on
  purpose: a policy chosen as the best of thousands on the held-out units
  would have its held-out value inflated by the choice itself, and the
  held-out units are what the comparison and the recommendation rely on.
* A **dense quasi-random sweep** (scrambled Sobol) evaluates thousands of
  weight vectors at once with array operations; with ``use_ax``, **Ax**
  (:mod:`pex.search.ax_adapter`: multi-objective Bayesian optimization with
  the guardrails as outcome constraints) then proposes weights in batches.
  Each front is reported with its hypervolume and time
  (:mod:`pex.search.pareto`); the kept front is the non-dominated feasible set
  of the union, so it is never worse than either.

Weights live on the simplex: the search draws ``u`` in ``[0, 1]^M`` and uses
``u / sum(u)``, because the policy's argmax does not change when every weight
is multiplied by the same number. One more coordinate caps the share of units
treated (the top-scoring ones): when every arm harms a guardrail, only a cap
keeps a policy feasible. Ax searches weights and cap together; the dense sweep
values each weight vector at a grid of caps and at the exact best feasible cap
per goal metric, which costs one sort and one cumulative sum per vector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
from scipy.stats import qmc

from pex.errors import PexError
from pex.experiment.data import Dataset
from pex.experiment.guardrail import GuardrailRule, best_certifiable_prefix, prefix_bounds
from pex.hte.model import EffectModel
from pex.policy.constrained import Constraint
from pex.policy.value import best_treated, budget_bar, choose_arms, greedy_budget, objective, served_share
from pex.search.ax_adapter import ax_search
from pex.search.pareto import Front, hypervolume, reference_point, spread

Say = Callable[[str], None]
CHUNK = 256  # weight vectors scored at once: (n_units x arms x CHUNK) floats stay in the tens of MB
CURVE_CHUNK = 32  # weight vectors per cumulative-sum block: (CURVE_CHUNK x n_units x metrics) floats
CAP_LEVELS = 32  # treated-share caps valued per weight vector by the dense sweep
SAMPLE = 400  # evaluated points per search method kept in the summary (columns: objectives, guardrails)


class TuningError(PexError):
    """The weight search cannot run on this fit."""


class FitData(Protocol):
    """What the search reads of a stored fit (:class:`pex.services.policies.FitContext` is one): its dataset and
    effect model, its training units with their out-of-fold effects and pseudo-outcomes, the guardrails' rules and
    how many units the chosen policies will be certified on."""

    dataset: Dataset
    model: EffectModel
    training: pd.DataFrame

    def training_frame(self) -> pd.DataFrame:
        """The fit's training units, in the fit's order."""
        ...

    def oof_effects(self) -> dict[tuple[str, str], np.ndarray]:
        """Out-of-fold predicted effects per (metric, arm) on the training units."""
        ...

    def pseudo_outcomes(self) -> dict[tuple[str, str], np.ndarray]:
        """Out-of-fold doubly-robust pseudo-outcomes per (metric, arm) on the training units."""
        ...

    def guardrail_constraints(self) -> list[Constraint]:
        """Each guardrail's rule with its per-unit change signals."""
        ...

    def n_eval(self) -> int:
        """How many units the chosen policies will be certified on."""
        ...


@dataclass
class TuningProblem:
    """Everything needed to value a weight vector, as arrays over the fit's training units."""

    experiment: str
    arms: list[str]
    control: str
    metrics: list[str]  # weight order
    objectives: list[str]  # goal metrics (maximised, goal-signed lift)
    goal_sign: np.ndarray  # (M,)
    scale: np.ndarray  # (M,)
    effects: np.ndarray  # (n, A, M) out-of-fold predicted effects, control 0
    signal: np.ndarray  # (n, A, M) out-of-fold DR pseudo-outcomes, control 0
    budget: float = 1.0  # largest share of units the greedy part of a policy may treat (exploration taken off)
    rules: dict[str, GuardrailRule] = field(default_factory=dict)  # metric -> the guardrail's rule (pex.experiment.guardrail)
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
    def from_fit(cls, ctx: FitData, budget: float | None = None, exploration: float = 0.0) -> TuningProblem:
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
        # the served treated share includes exploration's (k-1)/k of explored units
        greedy = greedy_budget(budget, exploration, len(model.arms)) if budget is not None else 1.0
        return cls(experiment=spec.name, arms=list(model.arms), control=model.control, metrics=metrics, objectives=goals,
                   goal_sign=np.array([float(spec.metrics[m].sign) for m in metrics]),
                   scale=np.array([metas[m]["scale"] for m in metrics]), effects=effects, signal=signal,
                   budget=greedy, rules=rules, exploration=float(exploration), n_eval=ctx.n_eval())

    def served_share(self, greedy_share: np.ndarray | float) -> np.ndarray:
        """The treated share once served: the greedy part's, plus exploration's (k-1)/k of the explored units."""
        return served_share(greedy_share, self.exploration, len(self.arms))

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

    def unit_changes(self, chosen: np.ndarray, uniform: np.ndarray | None = None) -> np.ndarray:
        """Per policy, unit and metric, the unit's doubly-robust change against all-control when served the
        ``chosen`` arms (K, n) with the problem's exploration, shape (K, n, M): their mean over units is the lift,
        their spread its standard error. ``uniform``: :meth:`uniform_signal`, when already computed."""
        ctrl = self.arms.index(self.control)
        uniform = self.uniform_signal() if uniform is None else uniform
        change = np.zeros((len(chosen), self.n, len(self.metrics)))
        for j in range(len(self.arms)):
            if j != ctrl:  # control's pseudo-outcome is 0
                change += (chosen == j)[:, :, None] * self.signal[None, :, j, :]
        return (1.0 - self.exploration) * change + self.exploration * uniform[None, :, :]

    def evaluate(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """Objectives (K, O), guardrail harms (K, G), feasibility (K,) and treated share (K,) of K draws."""
        u = np.atleast_2d(np.asarray(u, dtype=float))
        ctrl = self.arms.index(self.control)
        index = {m: k for k, m in enumerate(self.metrics)}
        lifts, treated = np.zeros((len(u), len(self.metrics))), np.zeros(len(u))
        bounds = np.zeros((len(u), len(self.rules)))
        uniform = self.uniform_signal()
        for start in range(0, len(u), CHUNK):
            chosen = self.choices(u[start:start + CHUNK])  # (k, n)
            change = self.unit_changes(chosen, uniform)
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
                        "guardrail_harm": {m: float(v) for m, v in zip(p.rules, kept.harms[i])},
                        "guardrail_bound": {m: float(v) for m, v in zip(p.rules, kept.bounds[i])},
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
                         "guardrail_harm": {m: float(v) for m, v in zip(p.rules, f.harms[i])},
                         **({"guardrail_bound": {m: float(v) for m, v in zip(p.rules, f.bounds[i])}}
                            if f.bounds is not None else {}),
                         "treated_share": float(f.treated_share[i])} for i in f.pareto]}

        return {"objectives": p.objectives,
                # the search's limits for the report's plots: serialized from the rules, never read back
                "guardrails": {m: r.to_dict() for m, r in p.rules.items()},
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
