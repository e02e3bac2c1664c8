"""Value a candidate policy on logged feedback from serving: IPS and SNIPS per metric, beside what was served.

The served policy explored, so every logged decision carries the probability it had (the propensity): IPS and
SNIPS (:mod:`pex.evaluation.estimators`) re-weight the logged outcomes by how much more or less often the candidate
would have chosen the logged arm. The served policy's own value is the plain mean of the logged outcomes, and the
candidate's lift over it is a paired difference on the same rows.

Rows without an outcome for a metric are left out of that metric's estimates (and counted). That is unbiased
when outcomes go missing independently of the arm and the outcome; an arm that makes units stop reporting
would bias it, which is why the count is shown.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pex.evaluation import estimators as ope
from pex.evaluation.feedback import LoggedFeedback

ESTIMATORS = (ope.InverseProbabilityWeighting(), ope.SelfNormalizedIPS())


def value_on_logged(feedback: LoggedFeedback, action_dist: np.ndarray) -> dict[str, Any]:
    """Per metric IPS and SNIPS of the policy ``action_dist`` (n, arms in ``feedback.arms`` order), the served mean,
    the lifts over it, and weight diagnostics over every row.

    Returns ``metrics[m]`` = {``n``, ``missing``, ``ips``, ``snips``, ``logged``, ``ips_lift``, ``snips_lift``}
    (estimates as dicts; None where fewer than 2 rows have an outcome) and ``diagnostics``: those of
    :func:`pex.evaluation.estimators.diagnostics` plus ``zero_share`` (rows where the candidate never picks the
    logged arm) and ``unsupported_share`` (the candidate's probability on arms the served policy could not have
    chosen, from rows logged with propensity 1).
    """
    dist = np.asarray(action_dist, dtype=float)
    action, pscore = feedback.action, feedback.pscore
    metrics: dict[str, dict[str, Any]] = {}
    for m, reward in feedback.rewards.items():
        keep = np.isfinite(reward)
        entry: dict[str, Any] = {"n": int(keep.sum()), "missing": int((~keep).sum())}
        if keep.sum() < 2:
            entry.update(ips=None, snips=None, logged=None, ips_lift=None, snips_lift=None)
            metrics[m] = entry
            continue
        r, a, p, d = reward[keep], action[keep], pscore[keep], dist[keep]
        found = ope.evaluate(r, a, p, d, None, ESTIMATORS)
        logged = ope.Estimate.from_contributions("logged", r)
        entry.update({name: e.to_dict() for name, e in found.items()}, logged=logged.to_dict())
        for name, e in found.items():
            entry[f"{name}_lift"] = ope.difference(e, logged, f"{name}-logged").to_dict()
        metrics[m] = entry
    diag = ope.diagnostics(action, pscore, dist)
    chosen = dist[np.arange(len(action)), action]
    diag["zero_share"] = float((chosen == 0).mean())
    diag["unsupported_share"] = float(((pscore >= 1.0) * (1.0 - chosen)).mean())
    if diag["unsupported_share"] > 0:
        diag["warnings"].append(
            f"No exploration: {diag['unsupported_share']:.1%} of the candidate's decisions go to arms the served policy "
            "could not have chosen (rows logged with propensity 1); no logged outcome shows them, so IPS and SNIPS are "
            "biased. Serve with exploration above 0 to evaluate other policies.")
    return {"metrics": metrics, "diagnostics": diag,
            "arm_shares": {arm: float(dist[:, j].mean()) for j, arm in enumerate(feedback.arms)},
            "logged_arm_shares": {arm: float((action == j).mean()) for j, arm in enumerate(feedback.arms)}}
