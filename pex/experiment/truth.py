"""The truth harness: what a policy is truly worth on a simulated experiment, and the best any policy could do.

A simulated experiment (:mod:`pex.experiment.simulate`) knows every unit's expected outcome under every
arm. This module turns that into the references that tests and benchmarks check pex against: a policy's
true value, lift and guardrail harm (:func:`policy_truth`, :func:`distribution_truth`), the population
average effect (:func:`population_ate`), the best policy under the truth within every guardrail's limit
(:func:`constrained_oracle`, :func:`oracle_policy`) and the most gain an honest certification on a given
number of units can be expected to keep (:func:`certification_ceiling`).

Nothing on a product path imports it: the demo and the traffic simulator need the scenarios only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pex.experiment.guardrail import GuardrailRule
from pex.experiment.simulate import SimulatedExperiment, simulate

if TYPE_CHECKING:
    from pex.policy.base import Policy


def population_ate(scenario: str, metric: str, arm: str, n: int = 1_000_000, seed: int = 987_654) -> float:
    """The population average effect, by Monte Carlo over a large draw of units."""
    sim = simulate(n, scenario=scenario, seed=seed, n_noise=0, missing_rate=0.0)
    return sim.truth.ate(metric, arm)


TOLERANCE = 1e-9  # harms within this of the limit count as within it (floating-point sums, not statistics)


def expected_matrix(sim: SimulatedExperiment, metric: str) -> np.ndarray:
    """E[Y(a) | x] of ``metric`` per unit and arm, shape (n_units, n_arms) in ``sim.arms`` order."""
    return np.column_stack([sim.truth.expected[metric][arm] for arm in sim.arms])


def policy_probabilities(policy: Policy, sim: SimulatedExperiment) -> np.ndarray:
    """``policy.action_probabilities(sim.data)`` with its columns in ``sim.arms`` order (exploration included).

    The policy reads the *observed* features (missing values and all), as it would when serving.
    """
    probs = policy.action_probabilities(sim.data)
    out = np.zeros((len(sim.data), len(sim.arms)))
    for j, arm in enumerate(policy.arms):
        if arm not in sim.arms:
            raise ValueError(f"policy {policy.name!r} has arm {arm!r}, which scenario {sim.scenario!r} does not know ({sim.arms})")
        out[:, sim.arms.index(arm)] = probs[:, j]
    return out


def distribution_truth(probabilities: np.ndarray, sim: SimulatedExperiment) -> dict[str, Any]:
    """True values of serving arm probabilities ``probabilities`` (n_units, n_arms in ``sim.arms`` order).

    Returns
    -------
    dict
        ``metrics[m]``: ``value`` (mean over units of sum_a pi(a|x) E[Y_m(a)|x]), ``control``
        (all-control's value) and ``lift`` (value - control); guardrails with a ``max_harm`` also
        carry ``harm`` (the change in the harmful direction relative to the control mean, or absolute
        when the control mean is 0), ``limit`` (``max_harm``, or 0 when absolute, as in
        :mod:`pex.experiment.guardrail`), ``basis`` and ``within``. Top level: ``primary``, ``gain`` (the primary's
        lift in its goal's direction), ``harm`` (guardrail -> harm), ``exceeds`` (some guardrail's
        harm is beyond its limit) and ``arm_shares``.
    """
    probs = np.asarray(probabilities, dtype=float)
    if probs.shape != (len(sim.data), len(sim.arms)):
        raise ValueError(f"probabilities must have shape {(len(sim.data), len(sim.arms))}, got {probs.shape}")
    c = sim.arms.index(sim.control)
    guardrails = set(sim.guardrails)
    metrics: dict[str, dict[str, Any]] = {}
    harm: dict[str, float] = {}
    for metric, meta in sim.metrics.items():
        table = expected_matrix(sim, metric)
        value = float((probs * table).sum(axis=1).mean())
        control = float(table[:, c].mean())
        entry: dict[str, Any] = {"value": value, "control": control, "lift": value - control}
        if metric in guardrails:
            rule = _rule(sim, metric, control)
            entry.update(harm=rule.harm(value - control), limit=rule.limit, max_harm=float(meta["max_harm"]), basis=rule.basis)
            entry["within"] = entry["harm"] <= rule.limit + TOLERANCE
            harm[metric] = entry["harm"]
        metrics[metric] = entry
    primary = sim.primary
    sign = 1.0 if sim.metrics[primary]["goal"] == "increase" else -1.0
    return {
        "metrics": metrics,
        "primary": primary,
        "gain": sign * metrics[primary]["lift"],
        "harm": harm,
        "exceeds": not all(metrics[g]["within"] for g in harm),
        "arm_shares": {arm: float(probs[:, j].mean()) for j, arm in enumerate(sim.arms)},
    }


def policy_truth(policy: Policy, sim: SimulatedExperiment) -> dict[str, Any]:
    """True value, lift vs all-control and guardrail harm of ``policy`` on the units of ``sim``.

    Pass a large, fresh draw of the scenario (not the experiment the policy was built on), so the
    numbers are the policy's population values rather than values on its own training units.
    The result is :func:`distribution_truth` of the policy's action probabilities (exploration included).
    """
    return distribution_truth(policy_probabilities(policy, sim), sim)


def _rule(sim: SimulatedExperiment, metric: str, control_mean: float) -> GuardrailRule:
    """The engine's guardrail rule of ``metric`` against a true control mean (no sampling error)."""
    meta = sim.metrics[metric]
    return GuardrailRule(metric, meta["goal"], float(meta["max_harm"]), control_mean)


@dataclass
class _OracleFamily:
    """The truth's Lagrangian policies: per unit, the arm maximising its true primary effect minus
    ``lambda`` times its true guardrail harms (each normalised by its limit), served with exploration."""

    n: int
    k: int
    c: int
    exploration: float
    effect: np.ndarray  # (n, k): goal-signed true primary effect vs control
    contributions: dict[str, np.ndarray]  # guardrail -> (n, k): a policy's harm is the mean of its chosen entries
    limits: dict[str, float]
    penalty: np.ndarray  # (n, k): sum over guardrails of contribution / limit

    @classmethod
    def of(cls, sim: SimulatedExperiment, exploration: float) -> _OracleFamily:
        if not 0.0 <= exploration <= 1.0:
            raise ValueError(f"exploration must be in [0, 1], got {exploration}")
        n, k = len(sim.data), len(sim.arms)
        c = sim.arms.index(sim.control)
        sign = 1.0 if sim.metrics[sim.primary]["goal"] == "increase" else -1.0
        table = expected_matrix(sim, sim.primary)
        contributions: dict[str, np.ndarray] = {}
        limits: dict[str, float] = {}
        penalty = np.zeros((n, k))
        for g in sim.guardrails:
            table_g = expected_matrix(sim, g)
            rule = _rule(sim, g, float(table_g[:, c].mean()))
            contributions[g] = rule.harm(table_g - table_g[:, [c]])
            limits[g] = rule.limit
            # A zero (absolute) limit gives no scale; the bisection over lambda finds it instead.
            penalty += contributions[g] / (rule.limit if rule.limit > 0 else 1.0)
        return cls(n=n, k=k, c=c, exploration=float(exploration), effect=sign * (table - table[:, [c]]),
                   contributions=contributions, limits=limits, penalty=penalty)

    def served(self, greedy: np.ndarray) -> np.ndarray:
        probs = np.full((self.n, self.k), self.exploration / self.k)
        probs[np.arange(self.n), greedy] += 1.0 - self.exploration
        return probs

    def harms(self, probs: np.ndarray) -> dict[str, float]:
        return {g: float((probs * self.contributions[g]).sum(axis=1).mean()) for g in self.contributions}

    def keeps(self, probs: np.ndarray) -> bool:
        h = self.harms(probs)
        return all(h[g] <= self.limits[g] + TOLERANCE for g in h)

    def greedy(self, lam: float) -> np.ndarray:
        score = self.effect - lam * self.penalty
        best = np.argmax(score, axis=1)
        # control scores exactly 0; ties go to control, so "no better arm" never treats
        return np.where(score[np.arange(self.n), best] > score[:, self.c], best, self.c)

    def gain(self, probs: np.ndarray) -> float:
        return float((probs * self.effect).sum(axis=1).mean())

    def lambda_scale(self) -> float:
        """The lambda at which an average effect and an average limit-sized harm weigh the same."""
        return max(float(np.abs(self.effect).mean()), 1e-12) / max(float(np.abs(self.penalty).mean()), 1e-12)


def constrained_oracle(sim: SimulatedExperiment, exploration: float = 0.05) -> dict[str, Any]:
    """The best policy under the truth whose true harm on every guardrail is within its limit.

    Every unit gets the arm maximising its true primary effect (goal-signed) minus
    ``lambda`` times the sum over guardrails of its true harm contribution, normalised by the
    control mean (as the harm is) and by the limit (so one ``lambda`` weighs guardrails with
    different limits alike). The served policy is ``(1 - exploration) * greedy + exploration *
    uniform``, as the pipeline's policies are, and the smallest ``lambda`` whose served policy keeps
    every guardrail is found by bisection. Units whose scores tie (effects that depend on a few
    categories only) would make the greedy policy jump past the limit, so the result mixes the
    policies just below and just above that ``lambda`` as far as the limits allow: the linear
    programme's solution for one guardrail, close to it for several.

    The oracle knows every unit's expected outcomes, latent features included, so no policy built
    on observed features can beat it; a policy's gain divided by the oracle's measures how much of
    the achievable gain within the limits it takes.

    Parameters
    ----------
    sim
        A (large, fresh) draw of the scenario.
    exploration
        Share of decisions spread uniformly over the arms, as in the served policies.

    Returns
    -------
    dict
        ``gain`` (true primary gain per unit vs all-control), ``harm`` (guardrail -> true harm),
        ``feasible`` (False when even all-control with exploration breaks a limit: then ``gain`` is 0),
        ``lambda``, ``mix`` (weight of the below-``lambda`` policy), ``exploration``, ``arm_shares``,
        ``truth`` (:func:`distribution_truth` of the served policy) and ``probabilities``
        (n_units, n_arms), the served policy.
    """
    family = _OracleFamily.of(sim, exploration)
    n, c = family.n, family.c
    served, harms, keeps, greedy = family.served, family.harms, family.keeps, family.greedy

    all_control = served(np.full(n, c))
    result: dict[str, Any] = {"exploration": float(exploration), "mix": 0.0}
    if not keeps(all_control):
        truth = distribution_truth(all_control, sim)
        return {**result, "gain": 0.0, "harm": truth["harm"], "feasible": False, "lambda": math.inf,
                "arm_shares": truth["arm_shares"], "truth": truth, "probabilities": all_control}

    lo, probs_lo = 0.0, served(greedy(0.0))
    if keeps(probs_lo):
        lam, probs = 0.0, probs_lo
    else:
        # lambda at which an average effect and an average limit-sized harm weigh the same, doubled until feasible
        hi = family.lambda_scale()
        probs_hi = served(greedy(hi))
        for _ in range(200):
            if keeps(probs_hi):
                break
            lo, probs_lo = hi, probs_hi
            hi *= 2.0
            probs_hi = served(greedy(hi))
        else:  # no lambda keeps every guardrail at once (several guardrails pulling apart): all-control does
            hi, probs_hi = math.inf, all_control
        if math.isfinite(hi):
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                if mid <= lo or mid >= hi:
                    break
                probs_mid = served(greedy(mid))
                if keeps(probs_mid):
                    hi, probs_hi = mid, probs_mid
                else:
                    lo, probs_lo = mid, probs_mid
        lam, probs = hi, probs_hi
        # Harms and gain are linear in the mixing weight t of the infeasible policy: take the largest t that keeps all.
        h_lo, h_hi = harms(probs_lo), harms(probs_hi)
        t = 1.0
        for g in h_lo:
            if h_lo[g] > h_hi[g]:
                t = min(t, (family.limits[g] - h_hi[g]) / (h_lo[g] - h_hi[g]))
        t = float(np.clip(t, 0.0, 1.0))
        gain_lo, gain_hi = family.gain(probs_lo), family.gain(probs_hi)
        if t > 0.0 and gain_lo > gain_hi:
            probs = t * probs_lo + (1.0 - t) * probs_hi
            result["mix"] = t
    truth = distribution_truth(probs, sim)
    return {**result, "gain": truth["gain"], "harm": truth["harm"], "feasible": True, "lambda": lam,
            "arm_shares": truth["arm_shares"], "truth": truth, "probabilities": probs}


def oracle_policy(sim: SimulatedExperiment, lam: float, exploration: float = 0.05) -> np.ndarray:
    """Served arm probabilities (n_units, n_arms) of the truth's Lagrangian policy with multiplier ``lam`` on the
    units of ``sim``: the policies :func:`constrained_oracle` and :func:`certification_ceiling` search over."""
    family = _OracleFamily.of(sim, exploration)
    return family.served(family.greedy(float(lam)))


def certification_ceiling(sim: SimulatedExperiment, n_eval: int, exploration: float = 0.05, alpha: float = 0.05,
                          steps: int = 60, draws: int = 4000, seed: int = 0) -> dict[str, Any]:
    """The most primary gain to expect from policies that must be *certified* on ``n_eval`` units.

    A policy is certified when, on ``n_eval`` units that played no part in choosing it, the one-sided
    ``1 - alpha`` upper bound of each guardrail's harm is within its limit (:mod:`pex.experiment.guardrail`).
    Even knowing every unit's true effects, a policy whose harm sits at the limit passes only
    ``alpha`` of the time, so the constrained oracle's gain is out of reach of any honest procedure;
    this is the reference that is not. It takes the oracle's own path of policies (per unit, the arm
    maximising true primary effect minus ``lambda`` times true harm, served with ``exploration``; up to
    ``steps`` of them, from all-control to the unconstrained best) and gives each guardrail harm its
    smallest possible standard error on ``n_eval`` units, the semiparametric efficiency bound of a
    randomized experiment with the scenario's allocation, which doubly-robust estimation with the true
    outcome models attains:

        Var = Var_x(sum_a w_a(x) mu_a(x)) + E_x[sum_a w_a(x)^2 sigma_a^2(x) / p_a],  w = pi - control.

    Two references come out of it:

    * ``single_test``: the best ``P(pass) * gain`` of one policy tested once (normal estimate, the
      smallest pass probability over guardrails);
    * ``fixed_sequence``: the expected gain when the whole path is tested safest first, each at the
      full level, keeping the last policy before the first failure (fixed-sequence testing, as
      :mod:`pex.evaluation.recommendation` does): the estimates along the path are drawn ``draws`` times from their
      joint normal law (covariances as above, from up to 40,000 of the units).

    The control mean's own error (the delta-method term) is left out, which can only flatter both.

    Returns
    -------
    dict
        ``single_test`` and ``fixed_sequence`` (expected gains per unit, 0 when only control can be
        certified), ``best_single`` (the single test's policy: ``gain``, ``harm`` and ``se`` per
        guardrail, ``p_pass``, ``treated_share``, ``lambda``: the path's multiplier, so :func:`oracle_policy`
        rebuilds it on other units), ``steps`` (path policies used) and ``n_eval``.
    """
    from scipy.stats import norm

    if n_eval < 1:
        raise ValueError(f"n_eval must be at least 1, got {n_eval}")
    family = _OracleFamily.of(sim, exploration)
    shares = np.array([sim.allocation[a] for a in sim.arms], dtype=float)
    shares /= shares.sum()
    scales, noise = {}, {}  # per guardrail: |control mean| (or 1), and (n, k) outcome variance per unit and arm
    for g in sim.guardrails:
        table = expected_matrix(sim, g)
        scales[g] = _rule(sim, g, float(table[:, family.c].mean())).scale
        if sim.metrics[g]["kind"] == "binary":
            noise[g] = table * (1.0 - table)
        else:
            realised = np.column_stack([sim.truth.outcomes[g][a] for a in sim.arms])
            noise[g] = np.broadcast_to((realised - table).var(axis=0), table.shape)

    path: list[np.ndarray] = []  # greedy arms, safest (all control) first
    path_lambdas: list[float] = []
    for lam in [*(family.lambda_scale() * np.geomspace(1e4, 1e-4, 801)), 0.0]:
        greedy = family.greedy(float(lam))
        if not path or not np.array_equal(greedy, path[-1]):
            path.append(greedy)
            path_lambdas.append(float(lam))
    # evenly spaced in gain, where it matters, rather than in lambda
    path_gains = np.array([family.gain(family.served(g)) for g in path])
    targets = np.linspace(path_gains.min(), path_gains.max(), max(2, steps))
    keep = np.unique(np.concatenate([[0], np.abs(path_gains[None, :] - targets[:, None]).argmin(axis=1)]))
    keep = keep[np.argsort(path_gains[keep], kind="stable")]
    policies = [family.served(path[i]) for i in keep]
    gains = path_gains[keep]
    guardrails = list(family.contributions)
    rows = np.random.default_rng(seed).permutation(family.n)[:40_000]
    harm = np.zeros((len(guardrails), len(policies)))
    changes = np.zeros((len(guardrails), len(policies), len(rows)))  # per unit, relative to the scale
    weights = []
    for j, probs in enumerate(policies):
        w = probs.copy()
        w[:, family.c] -= 1.0
        weights.append(w[rows])
        for i, g in enumerate(guardrails):
            change = (w * family.contributions[g]).sum(axis=1)
            harm[i, j] = float(change.mean())
            changes[i, j] = change[rows]
    flat = changes.reshape(-1, len(rows))
    cov = np.cov(flat) if flat.shape[0] > 1 else np.atleast_2d(flat.var(ddof=1))
    size = len(policies)
    for i, g in enumerate(guardrails):  # the outcome noise, within each guardrail (simulated metrics draw their noise apart)
        per_arm = noise[g][rows] / shares / scales[g] ** 2
        for j in range(size):
            for k in range(j, size):
                cov[i * size + j, i * size + k] += float((weights[j] * weights[k] * per_arm).sum(axis=1).mean())
                cov[i * size + k, i * size + j] = cov[i * size + j, i * size + k]
    cov /= n_eval
    se = np.sqrt(np.diag(cov)).reshape(len(guardrails), size)
    limits = np.array([family.limits[g] for g in guardrails])[:, None]
    z = float(norm.ppf(1.0 - alpha))

    p_pass = norm.cdf((limits - harm) / np.maximum(se, 1e-300) - z).min(axis=0)
    best = int(np.argmax(p_pass * gains))
    single = float(max(p_pass[best] * gains[best], 0.0))

    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    estimates = harm.reshape(-1) + np.random.default_rng(seed + 1).standard_normal((draws, len(values))) @ root.T
    passed = (estimates.reshape(draws, len(guardrails), size) + z * se <= limits).all(axis=1)
    first_fail = np.where(passed.all(axis=1), size, np.argmin(passed, axis=1))
    kept = np.where(first_fail > 0, gains[np.maximum(first_fail - 1, 0)], 0.0)
    return {
        "single_test": single, "fixed_sequence": float(max(kept.mean(), 0.0)), "n_eval": int(n_eval), "steps": size,
        "best_single": {"gain": float(gains[best]), "p_pass": float(p_pass[best]), "lambda": path_lambdas[keep[best]],
                        "harm": {g: float(harm[i, best]) for i, g in enumerate(guardrails)},
                        "se": {g: float(se[i, best]) for i, g in enumerate(guardrails)},
                        "treated_share": float(1.0 - policies[best][:, family.c].mean())},
    }
