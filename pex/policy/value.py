"""Value-model policies: per unit, the arm whose predicted effects are worth most.

The score of arm ``a`` for a unit with features ``x`` is

    score_a(x) = sum over metrics m of  coefficient_m * tau_m,a(x),     score_control = min_score

where ``tau_m,a`` is the stored effect model's predicted effect of ``a`` versus
control on metric ``m`` and

    coefficient_m = goal_sign_m * (weight_m + penalty_m) / scale_m.

* ``scale_m`` puts metrics on a common scale: the standard deviation of the
  metric in the control arm, so a weight is "how much one control-arm standard
  deviation of this metric is worth".
* ``goal_sign_m`` is +1 for metrics to increase and -1 for metrics to decrease.
* Default weights: 1 for the primary metric, 0.5 for secondaries, 0 for
  guardrails; a metric's ``weight`` in the spec or the caller overrides them.
* Guardrails enter as **constraints** by default: ``penalty_m`` is the smallest
  non-negative multiplier (found by bisection) for which the policy's predicted
  average harm on the guardrail, relative to its control mean, stays within the
  spec's ``max_harm``. That shapes the ranking of units; with ``guardrails="penalty"``
  guardrails are instead weighted like any metric (default weight 1).
* Either way, when an unbiased per-unit effect signal is given (the fit's
  out-of-fold doubly-robust pseudo-outcomes), the policy is made
  **certifiable** (:mod:`pex.experiment.guardrail`): units are ranked by their best arm's
  score and the number treated is the one with the most objective value whose
  harm bound, as the held-out test of ``n_eval`` units will need it, is within
  every guardrail's limit at once. ``min_score`` is the resulting bar.
* Budget and harm are about the **served** policy, exploration included: with
  exploration ``e`` over ``k`` arms, ``e (k-1)/k`` of the units are treated
  whatever the scores say, so a ``budget`` (largest share of units given a
  non-control arm) leaves ``(budget - e (k-1)/k) / (1 - e)`` to the greedy part,
  and exploration's own harm counts against each guardrail.

The document (``kind: "value"``) names the fit whose model files (JSON plus LightGBM text)
(:class:`pex.hte.EffectModel`) produce ``tau`` and carries the coefficients
and ``min_score``; the other fields say how they were derived.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pex.experiment.guardrail import GuardrailRule, best_certifiable_prefix, certify_margin, rules_for
from pex.experiment.spec import ExperimentSpec
from pex.names import check_name
from pex.policy.base import FORMAT, NAME_HINT, Policy, PolicyError
from pex.policy.constrained import served_change

DEFAULT_WEIGHTS = {"primary": 1.0, "secondary": 0.5, "guardrail": 0.0}
GUARDRAIL_MODES = ("constraint", "penalty")


@dataclass(frozen=True, kw_only=True)
class ValuePolicy(Policy):
    """Per unit, the arm whose predicted effects (by its bound effect model) are worth most (module docstring)."""

    kind: ClassVar[str] = "value"
    document_keys: ClassVar[tuple[str, ...]] = ("value_model",)

    value_model: dict | None = None
    model: Any = field(default=None, repr=False, compare=False)  # held, not copied: models are large and read-only

    @classmethod
    def _parse(cls, doc: dict, load_model: Callable[[dict], Any] | None) -> dict[str, Any]:
        if load_model is None:
            raise PolicyError(f"policy {doc['name']!r} is a value-model policy and needs its stored effect models",
                              "evaluate it inside the workspace that built it (PEX_HOME), or use a tree policy")
        if not isinstance(doc.get("value_model"), dict):
            raise PolicyError("a value policy needs a 'value_model' object", "rebuild it with `pex policies NAME --rebuild`")
        return {"model": load_model(doc["value_model"])}

    def _check(self) -> None:
        """Check the ``value_model`` block and that the bound model fits it."""
        vm = self.value_model
        if not isinstance(vm, dict):
            raise PolicyError("a value policy needs a 'value_model' object",
                              f"see docs/policy-document.md; build one with `pex policies NAME` ({FORMAT})")
        if not isinstance(vm.get("fit"), str) or not vm["fit"]:
            raise PolicyError("value_model.fit must name the fit whose models the policy uses", 'e.g. "fit": "notification_cad-fit-..."')
        metrics = vm.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise PolicyError("value_model.metrics must map metric names to their coefficients",
                              '"metrics": {"sessions": {"coefficient": 0.4}}')
        for metric, meta in metrics.items():
            check_name(metric, "value_model.metrics: a metric name", PolicyError, NAME_HINT)
            c = meta.get("coefficient") if isinstance(meta, dict) else None
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                raise PolicyError(f"value_model.metrics.{metric}.coefficient must be a finite number, got {c!r}",
                                  "rebuild the policy with `pex policies NAME --rebuild`")
        ms = vm.get("min_score", 0.0)
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms):
            raise PolicyError(f"value_model.min_score must be a finite number, got {ms!r}",
                              "0 means: an arm must be predicted better than control")
        if "min_score" not in vm:  # a new dict: the document it came from stays as it was
            object.__setattr__(self, "value_model", {**vm, "min_score": 0.0})
        model = self.model
        if model is None:
            return
        if list(model.arms) != list(self.arms) or model.control != self.default_arm:
            raise PolicyError(f"value policy {self.name!r} lists arms {self.arms} (default {self.default_arm!r}) but its fit "
                              f"{vm['fit']!r} has {model.arms} (control {model.control!r})", "rebuild the policy from the fit")
        missing = sorted(set(metrics) - set(model.metrics))
        if missing:
            raise PolicyError(f"value policy {self.name!r} weighs metric {missing[0]!r} that fit {vm['fit']!r} has no model for",
                              "rebuild the policy from the fit")

    def _document_fields(self) -> dict[str, Any]:
        return {"value_model": self.value_model}

    def _bound(self) -> Any:
        if self.model is None:
            raise PolicyError(f"value policy {self.name!r} has no effect model bound", "load it with Policy.from_document(doc, load_model)")
        return self.model

    @property
    def complexity(self) -> int:
        """A value model is the hardest to understand and serve: 10."""
        return 10

    @property
    def description(self) -> str:
        """The words "a value-model policy"."""
        return "a value-model policy"

    @property
    def features(self) -> list[str]:
        """The columns the bound effect model reads (none while unbound)."""
        return list(self.model.encoder.columns) if self.model is not None else []

    def categorical_features(self) -> list[str]:
        """The effect model's categorical columns."""
        enc = self.model.encoder if self.model is not None else None
        return [c for c in enc.columns if enc.kinds[c] == "categorical"] if enc else []

    def _check_values(self, frame: pd.DataFrame, source: str) -> None:
        self._bound().encoder.transform(frame, strict=True)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores of every arm for every unit, shape (n_units, n_arms); control scores ``min_score``."""
        model = self._bound()
        effects = model.effect(model.encoder.transform(frame, strict=False))
        vm = self.value_model
        return scores_from_effects(effects, self.arms, model.control, vm["metrics"], vm["min_score"], len(frame))

    def greedy_arms(self, frame: pd.DataFrame, effects: dict[tuple[str, str], np.ndarray] | None = None) -> np.ndarray:
        """Each unit's best-scoring arm by :func:`choose_arms`, on ``effects`` if given, else the model's predictions."""
        if effects is None:
            model = self._bound()
            effects = model.effect(model.encoder.transform(frame, strict=False))
        return self._choose(effects, len(frame))

    def greedy_arms_of_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`greedy_arms` of checked records, encoded without a frame."""
        model = self._bound()
        return self._choose(model.effect(model.encoder.transform_records(list(records))), len(records))

    def _choose(self, effects: dict[tuple[str, str], np.ndarray], n: int) -> np.ndarray:
        vm = self.value_model
        by_arm = arm_scores(effects, self.arms, self.default_arm, vm["metrics"], n)
        return choose_arms(by_arm, self.arms.index(self.default_arm), vm["min_score"])


def arm_scores(effects: dict[tuple[str, str], np.ndarray], arms: list[str], control: str, metrics: dict[str, dict],
               n: int) -> list[np.ndarray | None]:
    """Each treated arm's score per unit, sum over metrics of coefficient * effect (None for control)."""
    out: list[np.ndarray | None] = []
    for arm in arms:
        if arm == control:
            out.append(None)
            continue
        score = np.zeros(n)
        for metric, meta in metrics.items():
            if meta["coefficient"] != 0.0:
                score += meta["coefficient"] * effects[(metric, arm)]
        out.append(score)
    return out


def scores_from_effects(effects: dict[tuple[str, str], np.ndarray], arms: list[str], control: str, metrics: dict[str, dict],
                        min_score: float, n: int) -> np.ndarray:
    """:func:`arm_scores` as one (n, n_arms) array, control scoring ``min_score``."""
    scores = np.zeros((n, len(arms)))
    for j, s in enumerate(arm_scores(effects, arms, control, metrics, n)):
        scores[:, j] = min_score if s is None else s
    return scores


# -- the decision rule, shared with the weight search (pex.search.tuning) ------------------------------------------

def best_treated(by_arm: Sequence[np.ndarray | None]) -> np.ndarray:
    """Per unit, the best score of a non-control arm (``by_arm`` as from :func:`arm_scores`, any common shape)."""
    return np.maximum.reduce([s for s in by_arm if s is not None])


def budget_bar(best: np.ndarray, cap: np.ndarray | float, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """Control's score so that at most ``cap`` of the units are treated: per row of ``best`` (policies x units,
    each unit's :func:`best_treated` score), ``floor``, raised to the score quantile that treats ``cap`` when
    more than that many units score above ``floor`` (the best score when ``cap`` is 0)."""
    best = np.atleast_2d(best)
    caps = np.broadcast_to(np.asarray(cap, dtype=float), (len(best),))
    bar = np.array(np.broadcast_to(np.asarray(floor, dtype=float), caps.shape))
    over = (best > bar[:, None]).mean(axis=1) > caps
    for k in np.flatnonzero(over):
        bar[k] = max(bar[k], float(best[k].max()) if caps[k] <= 0 else linear_quantile(best[k], 1.0 - caps[k]))
    return bar


def linear_quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear method, the same float operations) by a partial sort, not a full one."""
    n, q = values.size, min(max(float(q), 0.0), 1.0)
    virtual = (n - 1) * q  # numpy's virtual index for the linear method
    if virtual >= n - 1:
        return float(values.max())
    if virtual < 0:
        return float(values.min())
    lo = math.floor(virtual)
    gamma = virtual - lo
    part = np.partition(values, (lo, lo + 1))
    a, b = float(part[lo]), float(part[lo + 1])
    diff = b - a
    # numpy interpolates from the nearer end (numpy.lib._function_base_impl._lerp)
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


def choose_arms(by_arm: Sequence[np.ndarray | None], control_index: int, bar: np.ndarray | float) -> np.ndarray:
    """The value policy's decision: per unit the arm with the highest score, control scoring ``bar``, ties to the
    first arm (as ``np.argmax``). ``by_arm[j]`` holds arm j's scores (the control entry is ignored); ``bar``
    broadcasts against them (e.g. shape (policies, 1) for scores of shape (policies, units))."""
    shape = np.broadcast_shapes(*(s.shape for s in by_arm if s is not None), np.shape(bar))
    scores = [np.broadcast_to(bar, shape) if j == control_index else s for j, s in enumerate(by_arm)]
    best, chosen = np.broadcast_to(scores[0], shape), np.zeros(shape, dtype=np.int64)
    for j in range(1, len(scores)):
        better = scores[j] > best
        chosen[better] = j
        best = np.where(better, scores[j], best)
    return chosen


def guardrail_rules(spec: ExperimentSpec, frame: pd.DataFrame) -> dict[str, GuardrailRule]:
    """Each guardrail's rule, relative to the control mean of ``frame``'s control units (0 when there are none)."""
    control_rows = frame[spec.arm] == spec.control
    means = {}
    for name, m in spec.metrics.items():
        if m.role == "guardrail":
            y = frame.loc[control_rows, m.column].to_numpy(dtype=float)
            means[name] = float(y.mean()) if len(y) else 0.0
    return rules_for(spec, means)


def greedy_budget(budget: float, exploration: float, arms: int) -> float:
    """The share of units the greedy part of a served policy may treat when at most ``budget`` of all units may be
    treated: uniform exploration ``e`` over ``arms`` arms treats ``e (arms-1)/arms`` of the units whatever the
    scores say, so the greedy part gets ``(budget - e (arms-1)/arms) / (1 - e)``, within [0, 1]."""
    if exploration >= 1:
        return 0.0
    explored = exploration * (arms - 1) / arms
    return min(max((budget - explored) / (1.0 - exploration), 0.0), 1.0)


def served_share(greedy: np.ndarray | float, exploration: float, arms: int) -> np.ndarray:
    """The treated share once served: the greedy part's, plus exploration's ``(arms-1)/arms`` of the explored units
    (the inverse of :func:`greedy_budget` within its range)."""
    return (1.0 - exploration) * np.asarray(greedy) + exploration * (arms - 1) / arms


def objective(spec: ExperimentSpec, frame: pd.DataFrame, weights: dict[str, float] | None = None,
              guardrails: str = "constraint") -> tuple[dict[str, dict], dict[str, dict]]:
    """Metric weights and scales plus guardrail settings, before any penalty is calibrated.

    ``frame`` holds the units the policy is built on (scales and control means
    come from their control arm).
    """
    if guardrails not in GUARDRAIL_MODES:
        raise PolicyError(f"guardrail mode {guardrails!r} is not one of {', '.join(GUARDRAIL_MODES)}",
                          "constraint keeps each guardrail within its max_harm; penalty weighs it like any metric")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(spec.metrics))
    if unknown:
        raise PolicyError(f"weight given for unknown metric {unknown[0]!r}", f"metrics of {spec.name}: {', '.join(spec.metrics)}")
    control_rows = frame[spec.arm] == spec.control
    rules = guardrail_rules(spec, frame)
    metrics: dict[str, dict] = {}
    rails: dict[str, dict] = {}
    for name, m in spec.metrics.items():
        weight = weights.get(name, m.weight)
        if weight is None:
            weight = 1.0 if (m.role == "guardrail" and guardrails == "penalty") else DEFAULT_WEIGHTS[m.role]
        if not math.isfinite(weight) or weight < 0:
            raise PolicyError(f"weight of {name!r} must be a finite number >= 0, got {weight}",
                              "a weight says how much the metric counts; use 0 to ignore it")
        y = frame.loc[control_rows, m.column].to_numpy(dtype=float)
        scale = float(np.std(y, ddof=1)) if len(y) > 1 else 0.0
        if not scale > 0:  # constant in control: the spread over all arms, else raw units
            everyone = frame[m.column].to_numpy(dtype=float)
            scale = float(np.std(everyone, ddof=1)) if len(everyone) > 1 else 0.0
        metrics[name] = {"goal": m.goal, "role": m.role, "weight": float(weight), "scale": scale if scale > 0 else 1.0,
                         "coefficient": 0.0}
        if name in rules:  # the document's record of the rule (what built it; nothing reads the limit back)
            rule = rules[name]
            rails[name] = {"mode": guardrails, "control_mean": rule.control_mean, "penalty": 0.0, "max_harm": rule.max_harm,
                           "limit": rule.limit if rule.has_limit else None, "basis": rule.basis}
    if not any(meta["weight"] > 0 for meta in metrics.values()):
        raise PolicyError("every metric weight is 0, so no arm can be better than another", "give at least one metric a positive weight")
    _set_coefficients(metrics, rails)
    return metrics, rails


def build_value_policy(
    *,
    name: str,
    spec: ExperimentSpec,
    model: Any,
    frame: pd.DataFrame,
    fit_id: str,
    weights: dict[str, float] | None = None,
    guardrails: str = "constraint",
    budget: float | None = None,
    exploration: float = 0.0,
    lineage: dict | None = None,
    effects: dict[tuple[str, str], np.ndarray] | None = None,
    harm_signal: dict[tuple[str, str], np.ndarray] | None = None,
    n_eval: int | None = None,
    margin: float | None = None,
) -> tuple[Policy, dict[str, Any]]:
    """The value-model policy over ``model``'s effects, calibrated on the units of ``frame``.

    ``effects`` (per (metric, arm), for the rows of ``frame``) replaces the
    model's predictions in the calibration: pass out-of-fold effects, whose
    spread is not inflated by in-sample fit. ``harm_signal`` (same keys and
    rows, e.g. out-of-fold doubly-robust pseudo-outcomes) replaces the predicted
    effects when a constraint measures the policy's guardrail harm: units chosen
    *because* their predicted harm is low are, on average, harmed more than
    predicted (selection on noisy predictions), whereas an unbiased per-unit
    signal of the effect that the decision did not see measures the harm of
    the selected units without that optimism. Returns the policy and what the
    calibration predicts for those units (share treated, arm shares, each
    guardrail's relative harm). ``margin`` is how many standard errors the
    certifiable bound adds (:func:`pex.experiment.guardrail.certify_margin` by default).
    """
    if budget is not None and not 0.0 <= budget <= 1.0:
        raise PolicyError(f"budget must be a share from 0 to 1, got {budget}",
                          "e.g. --budget 0.3: at most 30% of units get a non-control arm")
    metrics, rails = objective(spec, frame, weights, guardrails)
    if effects is None:
        effects = model.effect(model.encoder.transform(frame, strict=False))
    arms, control, n = list(model.arms), model.control, len(frame)
    ctrl = arms.index(control)

    def decide(min_score: float) -> np.ndarray:
        return choose_arms(arm_scores(effects, arms, control, metrics, n), ctrl, min_score)

    def harm(metric: str, chosen: np.ndarray) -> float:
        """The policy's predicted harm on a guardrail (greedy part; positive = harmful)."""
        return served_harm(rules[metric], effects, arms, control, chosen, 0.0)[0]

    rules = guardrail_rules(spec, frame)
    k = len(arms)
    # the served policy mixes in uniform exploration, which treats (k-1)/k of the explored units whatever
    # the scores say: budget and guardrails are about what is served, so the greedy part gets what is left
    greedy = greedy_budget(budget, exploration, k) if budget is not None else None
    min_score = 0.0
    constrained = [m for m, rule in rules.items() if guardrails == "constraint" and rule.has_limit]
    # Budget and constraints interact (fewer treated units harm less), so alternate a few rounds.
    for _round in range(3):
        for metric in constrained:
            _calibrate_penalty(rules[metric], metrics, rails, lambda m=metric, t=min_score: harm(m, decide(t)))
        if greedy is not None:
            best = best_treated(arm_scores(effects, arms, control, metrics, n))
            min_score = float(budget_bar(best, greedy, min_score)[0])
    # The penalty weighs predicted harm against gain unit by unit, but the units it lets through are those
    # whose predicted harm is low, partly by chance, so their real harm is larger than predicted. Measured
    # with the unbiased signal, the policy must be *certifiable*: the bound its harm will need on the
    # held-out units (pex.experiment.guardrail) within the limit, for every guardrail at once. Among the units ranked
    # by their best arm's score, the number treated is the one with the most objective value that meets
    # that (everyone on control harms nothing, so a prefix always exists).
    certified: dict[str, Any] = {}
    if harm_signal is not None and any(r.has_limit for r in rules.values()):
        min_score, certified = _certifiable_threshold(
            metrics, rules, effects, harm_signal, arms, control, min_score, exploration, n_eval or n, margin)
        for metric in rails:
            rails[metric]["met"] = certified["met"].get(metric, True)
    chosen = decide(min_score)
    value_model = {"fit": fit_id, "metrics": metrics, "guardrails": rails, "budget": budget, "min_score": float(min_score)}
    policy = ValuePolicy(name=name, arms=arms, default_arm=control, exploration=exploration, experiment=spec.name,
                         trained_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), lineage=dict(lineage or {}),
                         value_model=value_model, model=model)
    shares = np.bincount(chosen, minlength=len(arms)) / max(n, 1)
    served = (1.0 - exploration) * shares + exploration / k
    info = {
        "n_units": n,
        "arm_shares": {a: float(served[j]) for j, a in enumerate(arms)},
        "treated_share": float(1.0 - served[ctrl]),
        "greedy_treated_share": float(1.0 - shares[ctrl]),
        "exploration": exploration,
        "predicted_guardrail_harm": {m: harm(m, chosen) for m in rails},
        "guardrail_harm_measured_by": "doubly-robust pseudo-outcomes" if harm_signal is not None else "predicted effects",
        **({"estimated_guardrail_harm": certified["harm"], "estimated_guardrail_harm_se": certified["se"],
            "certifiable_bound": certified["bound"], "certify_for_units": certified["n_eval"],
            "certify_margin": certified["margin"]} if certified else {}),
        "penalties": {m: r["penalty"] for m, r in rails.items()},
        "min_score": float(min_score),
    }
    return policy, info


def served_changes(signal: dict[tuple[str, str], np.ndarray], metric: str, arms: list[str], control: str,
                   chosen: np.ndarray, exploration: float) -> np.ndarray:
    """Per unit, the change in ``metric`` the served policy makes (greedy arm ``chosen`` mixed with uniform
    exploration), by a per-unit effect ``signal`` (control 0)."""
    by_arm = np.column_stack([np.zeros(len(chosen)) if arm == control else signal[(metric, arm)] for arm in arms])
    return served_change(by_arm, chosen, exploration)


def served_harm(rule: GuardrailRule, signal: dict, arms: list[str], control: str, chosen: np.ndarray,
                exploration: float) -> tuple[float, float]:
    """Harm and its standard error of the served policy on ``rule``'s guardrail, by a per-unit ``signal``."""
    return rule.harm_and_se(served_changes(signal, rule.metric, arms, control, chosen, exploration))


def _certifiable_threshold(metrics: dict, rules: dict[str, GuardrailRule], effects: dict, signal: dict, arms: list[str],
                           control: str, min_score: float, exploration: float, n_eval: int,
                           margin: float | None = None) -> tuple[float, dict]:
    """The score bar treating the ranked prefix with the most objective value whose certifiable harm bound is
    within every limit (:func:`pex.experiment.guardrail.best_certifiable_prefix`), and what that prefix measures."""
    n, ctrl = len(next(iter(signal.values()))), arms.index(control)
    scores = scores_from_effects(effects, arms, control, metrics, 0.0, n)
    scores[:, ctrl] = -np.inf
    best_arm = np.argmax(scores, axis=1)
    best = scores[np.arange(n), best_arm]
    order = np.argsort(-best, kind="stable")
    eligible = int((best > min_score).sum())  # the budget's bar, and never an arm scored below control
    owner = {m: (1.0 if meta["goal"] == "increase" else -1.0) * meta["weight"] / meta["scale"] for m, meta in metrics.items()}
    gain = np.zeros(n)
    for j, arm in enumerate(arms):
        if arm != control:
            gain += np.where(best_arm == j, sum(c * signal[(m, arm)] for m, c in owner.items() if c), 0.0)
    constraints = []
    for m, rule in rules.items():
        treated = np.zeros(n)
        uniform = np.zeros(n)
        for j, arm in enumerate(arms):
            if arm != control:
                treated += np.where(best_arm == j, signal[(m, arm)], 0.0)
                uniform += signal[(m, arm)] / len(arms)
        constraints.append((rule, (1.0 - exploration) * treated[order], exploration * uniform[order]))
    margin = certify_margin() if margin is None else float(margin)
    count = best_certifiable_prefix(gain[order], constraints, n_eval=n_eval, max_count=eligible, margin=margin)
    count = int(count)
    bar = float(best[order[count]]) if count < n else min_score
    new_min = max(min_score, bar) if count < eligible else min_score
    if count == 0:
        new_min = max(min_score, float(best.max()))
    chosen = np.where(best > new_min, best_arm, ctrl)
    out: dict[str, Any] = {"harm": {}, "se": {}, "bound": {}, "met": {}, "n_eval": int(n_eval), "margin": margin}
    for m, rule in rules.items():
        estimate, se = served_harm(rule, signal, arms, control, chosen, exploration)
        out["harm"][m], out["se"][m] = estimate, se
        out["bound"][m] = rule.certifiable(estimate, se, n, n_eval, margin)
        out["met"][m] = bool(out["bound"][m] <= rule.limit)
    return float(new_min), out


def _set_coefficients(metrics: dict[str, dict], rails: dict[str, dict]) -> None:
    for name, meta in metrics.items():
        sign = 1.0 if meta["goal"] == "increase" else -1.0
        meta["coefficient"] = sign * (meta["weight"] + rails.get(name, {}).get("penalty", 0.0)) / meta["scale"]


def _calibrate_penalty(rule: GuardrailRule, metrics: dict, rails: dict, predicted_harm: Callable[[], float]) -> None:
    """Smallest penalty keeping the relative harm within max_harm (bisection).

    Harm tends to fall as the penalty grows (ever fewer units get an arm that
    the model predicts to hurt the guardrail); at a very large penalty only
    arms predicted not to hurt it are chosen. When the harm measure still
    exceeds the limit there, the largest penalty is kept and the guardrail is
    marked ``"met": false`` rather than silently claimed.
    """
    metric, limit = rule.metric, rule.limit
    rails[metric]["met"] = True

    def harm_at(penalty: float) -> float:
        rails[metric]["penalty"] = penalty
        _set_coefficients(metrics, rails)
        return predicted_harm()

    if harm_at(0.0) <= limit:
        return
    low, high = 0.0, 1.0
    while harm_at(high) > limit and high < 1e9:
        low, high = high, high * 4.0
    for _ in range(40):
        mid = 0.5 * (low + high)
        if harm_at(mid) > limit:
            low = mid
        else:
            high = mid
        if high - low <= 1e-4 * high:
            break
    rails[metric]["met"] = bool(harm_at(high) <= limit)
