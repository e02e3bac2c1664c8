"""A round's measurement: per candidate arm and metric, the live lift over all-control, from the decision log.

The units of a round are split among its arms by a keyed hash of their id (the routing policy), which is a
randomized split: each arm's units are a random sample of the round's units. Within an arm, every decision
(the explored ones too) was drawn from that arm's own policy with the propensity the log records. So:

* a **candidate's value** is its self-normalised IPS estimate on its own units, with the candidate's own action
  probabilities as the target: the value of the candidate *as served*, exploration included, which is how it
  would run if promoted. (The weights are 1 whenever the log and the policy agree; a row whose logged
  propensity differs from what the policy gives its logged features, e.g. a log from another version, is
  re-weighted rather than trusted as is.)
* **all-control's value** is the self-normalised IPS estimate on the holdout's units with always-control as the
  target: the holdout explores too, and the logged propensities take its explored decisions out, so the
  comparison is against control itself, as the guardrail rule (:mod:`pex.experiment.guardrail`) defines harm.
* a metric with a pre-period covariate (the spec's ``pre``) is measured on its CUPED-adjusted outcome
  ``y - theta (pre - mean pre)``, ``theta`` the slope of ``y`` on ``pre`` over all the round's units: the
  covariate is unaffected by the arm and its mean is the same in every arm of a randomized split, so the
  adjustment changes no arm's expected value and takes out the part of the outcome the past already explains
  (as ``pex analyze`` does for average effects, :mod:`pex.experiment.effects`);
* a **lift** is the difference of the two, with the standard errors of independent samples combined; a
  **guardrail harm** is the rule's relative (or, at a zero control mean, absolute) change, its standard error
  Fieller's at the limit (:func:`harm_of`), its verdict the rule's.

Units without an outcome for a metric are left out of that metric (and counted). That is unbiased when
outcomes go missing independently of the arm; an arm that stops units reporting would bias it, which is why
each arm's count is shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import DataError
from pex.evaluation.estimators import Estimate, SelfNormalizedIPS
from pex.experiment.guardrail import ALPHA, GuardrailRule, Harm
from pex.experiment.spec import MetricSpec
from pex.policy.base import Policy

MIN_OUTCOMES = 2  # outcomes an arm needs on a metric for a standard error
_SNIPS = SelfNormalizedIPS()


def logged_actions(frame: pd.DataFrame, arms: Sequence[str]) -> np.ndarray:
    """Each row's logged arm as its index in ``arms``; DataError on an arm outside them."""
    # the codes of a categorical, computed once per round: a per-row map on arrow strings for every arm and metric
    # was most of a round's measurement
    action = pd.Categorical(frame["arm"], categories=list(arms)).codes.astype(np.int64)
    if (action < 0).any():  # code -1 would silently index the last arm
        unknown = sorted(set(frame["arm"][action < 0].astype(str)))
        raise DataError(f"logged arms {', '.join(unknown)} are not arms of the round's policy ({', '.join(arms)})",
                        "the round's decisions must come from its own routing policy's version")
    return action


def arm_value(frame: pd.DataFrame, metric: str, arms: Sequence[str], target: np.ndarray,
              action: np.ndarray | None = None) -> Estimate | None:
    """SNIPS of ``target`` (per row, probabilities over ``arms``) on ``frame``'s rows that have an outcome; None when
    fewer than :data:`MIN_OUTCOMES` of them have a logged arm the target can choose. ``action``: the rows'
    :func:`logged_actions`, when already known."""
    reward = frame[metric].to_numpy(dtype=float)
    keep = np.isfinite(reward)
    if keep.sum() < MIN_OUTCOMES:
        return None
    action = logged_actions(frame, arms) if action is None else action
    if (target[np.flatnonzero(keep), action[keep]] > 0).sum() < MIN_OUTCOMES:
        return None  # e.g. a holdout whose few reported units were all explored away from control
    return _SNIPS.estimate(reward[keep], action[keep], frame["propensity"].to_numpy(dtype=float)[keep], target[keep])


def harm_of(rule: GuardrailRule, value: Estimate, control: Estimate, alpha: float = ALPHA) -> Harm:
    """``rule``'s harm of ``value`` against all-control's ``control`` (independent samples), relative to the
    round's own control value: Fieller's test at the limit (:meth:`GuardrailRule.assess_means`), the change
    ``value - control`` covarying with ``control`` by ``-var(control)``. The delta method used before is skewed in
    the tail the loop's error budget reaches: with every arm at the limit, at the one-sided 0.05 / 24 of a 6-round
    loop of 4 arms, it passed 0.35% of arms instead of 0.21% (Fieller: 0.202%)."""
    rule = rule.at_control_mean(control.value)
    return rule.assess_means(value.value - control.value, math.hypot(value.se, control.se), control.se,
                             -control.se**2, n=value.n, alpha=alpha)


def measure_round(frame: pd.DataFrame, routing: Policy, holdout: str, control: str, metrics: Mapping[str, MetricSpec],
                  rules: Mapping[str, GuardrailRule]) -> dict[str, Any]:
    """Every arm of one round measured against all-control (the module docstring's rules).

    ``metrics`` are the spec's metrics (by name); ``rules`` the loop's guardrail rules, each judged against the
    round's own control value. ``frame`` holds the round's logged feedback (a row per unit: ``route``, ``arm``,
    ``propensity``, the features and one column per metric, NaN where no outcome came); ``routing`` is the round's
    routing policy.
    Returns ``control`` (all-control's value per metric, from the holdout) and ``arms`` (per route name: units,
    per metric ``n``/``missing``/``value``/``lift``, per guardrail the harm with its verdict), and ``usable``
    (every arm has at least :data:`MIN_OUTCOMES` outcomes on every metric).
    """
    arms = list(routing.arms)
    frame, reduction = cuped_adjusted(frame, metrics)
    routes = {p.name: p for p in getattr(routing, "routes", ())}
    route = frame["route"].to_numpy(dtype=object)
    masks = {name: route == name for name in routes}
    by_route = {name: frame[mask] for name, mask in masks.items()}
    actions = logged_actions(frame, arms)
    hold = by_route[holdout]
    control_target = np.zeros((len(hold), len(arms)))
    control_target[:, arms.index(control)] = 1.0
    control_values = {m: arm_value(hold, m, arms, control_target, actions[masks[holdout]]) for m in metrics}

    out_arms: dict[str, Any] = {}
    usable = all(v is not None for v in control_values.values())
    for name, policy in routes.items():
        rows = by_route[name]
        entry: dict[str, Any] = {"units": len(rows), "holdout": name == holdout, "metrics": {}, "harms": {}}
        target = policy.action_probabilities(rows) if len(rows) else np.zeros((0, len(arms)))
        for m in metrics:
            have = int(rows[m].notna().sum()) if len(rows) else 0
            value = arm_value(rows, m, arms, target, actions[masks[name]]) if len(rows) else None
            cell: dict[str, Any] = {"n": have, "missing": len(rows) - have, "value": value.to_dict() if value else None,
                                    "lift": None}
            base = control_values[m]
            if value is None:
                usable = False
            elif base is not None:
                d, se = value.value - base.value, math.hypot(value.se, base.se)
                cell["lift"] = {"estimate": d, "se": se, "ci_low": d - 1.96 * se, "ci_high": d + 1.96 * se}
                if m in rules and rules[m].has_limit:
                    entry["harms"][m] = harm_of(rules[m], value, base).to_dict()
            entry["metrics"][m] = cell
        entry["measured"] = all(c["lift"] is not None for c in entry["metrics"].values())
        out_arms[name] = entry
    return {"control": {m: (v.to_dict() if v else None) for m, v in control_values.items()}, "arms": out_arms,
            "usable": usable, "rows": len(frame), "cuped": reduction}


def cuped_adjusted(frame: pd.DataFrame, metrics: Mapping[str, MetricSpec]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``frame`` with each metric that has a pre-period covariate replaced by its CUPED-adjusted outcome, and per
    such metric the slope and the share of the outcome's variance it removes. A missing covariate counts as
    the mean (no adjustment for that unit); a covariate without spread, or absent from the log, adjusts nothing."""
    out, info = frame, {}
    for m, goal in metrics.items():
        if not goal.pre or goal.pre not in frame.columns:
            continue
        y = frame[m].to_numpy(dtype=float)
        x = pd.to_numeric(frame[goal.pre], errors="coerce").to_numpy(dtype=float)
        both = np.isfinite(y) & np.isfinite(x)
        if both.sum() < 3 or np.ptp(x[both]) == 0:
            continue
        centre = float(x[both].mean())
        theta = float(np.cov(y[both], x[both])[0, 1] / x[both].var(ddof=1))
        adjusted = y - theta * np.where(np.isfinite(x), x - centre, 0.0)
        if out is frame:
            out = frame.copy()
        out[m] = adjusted
        kept = np.isfinite(y)
        info[m] = {"pre": goal.pre, "theta": theta,
                   "variance_reduction": float(1.0 - adjusted[kept].var() / y[kept].var()) if y[kept].var() > 0 else 0.0}
    return out, info
