"""Staged rollouts: a new policy version served to a growing canary share, rolled back automatically on harm.

A rollout serves a routing policy (:mod:`pex.policy.routing`) under the policy's stable name, so callers keep
asking the same name. Its arcs of the unit-hash circle, under a key fixed for the whole rollout:

* ``[0, holdout)``: all-control (with the new version's arms and exploration), what guardrail harm is measured
  against, as the one guardrail rule (:mod:`pex.experiment.guardrail`) defines harm;
* ``[holdout, holdout + share)``: the new version (the canary), its share growing step by step;
* the rest: the version live before (the base).

The key and the holdout arc never change, and the canary arc only grows, so a canary unit stays a canary unit;
a base unit may become a canary unit at a ramp, and is then counted where its first decision in the rollout put
it (the base: its outcome may carry that decision's effect). Each step is a new version of the stable name,
published as a release step (:meth:`pex.store.releases.ReleasesMixin.release_step`), so every move, automatic or
not, is a release row with its reason and figures.

:func:`check` measures the canary against the holdout from the decision log joined with outcomes (the online
loop's measurement, :func:`pex.online.lifts.measure_round`), judges each guardrail with an always-valid bound
(:mod:`pex.monitor.sequential`: the watcher looks after every batch without inflating false alarms), and acts by
the step rule (:mod:`pex.monitor.rollout`). The sequential test runs on all canary units so far, across steps:
the bound is time-uniform.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import uuid
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import DataError, NotFoundError, PexError, UncertifiedError
from pex.evaluation.estimators import Estimate
from pex.experiment.guardrail import GuardrailRule, rules_for
from pex.experiment.spec import ExperimentSpec
from pex.monitor.agreement import agreement
from pex.monitor.rollout import Action, next_action
from pex.monitor.sequential import SequentialHarm, sequential_harm
from pex.names import check_name
from pex.online.lifts import measure_round
from pex.policy.base import NAME_HINT, Policy
from pex.policy.constant import constant_policy
from pex.policy.routing import RoutingPolicy, routing_policy
from pex.services.feedback import feedback_table
from pex.services.models import effect_model_by_id
from pex.services.outcomes import experiment_spec
from pex.services.publishing import check_reason, gate, local_actor, publish
from pex.store.releases import FORCED_PREFIX
from pex.store.rollouts import Rollout
from pex.store.workspace import Workspace

MIN_OUTCOMES = 500  # canary units with outcomes a step needs before it may advance (the sequential bound is asymptotic)
ALPHA = 0.05
DEFAULT_RAMP = (0.25, 0.5, 1.0)  # the steps after the canary when no ramp is given
MAX_HOLDOUT = 0.5


# --------------------------------------------------------------------------- start


def start(ws: Workspace, policy: str, version: int | None = None, *, canary: float, ramp: list[float] | None = None,
          holdout: float, actor: str | None = None, force_reason: str | None = None,
          min_outcomes: int = MIN_OUTCOMES, alpha: float = ALPHA) -> dict[str, Any]:
    """Start a staged rollout of ``version`` of ``policy`` (default: the version `pex publish` would make live).

    Shares are fractions: ``canary`` the first step's share of units, ``ramp`` every step's (increasing, ending at
    1; the canary's share first, added when missing), ``holdout`` the all-control share kept for the whole rollout.
    The gate applies first (:func:`pex.services.publishing.gate`): an uncertified version is refused with
    :class:`~pex.errors.UncertifiedError` unless ``force_reason`` is given (then recorded on the canary's release).
    When nothing of ``policy`` is live, an all-control version is published first as the base.
    """
    actor = actor or local_actor()
    steps = rollout_steps(canary, ramp, holdout)
    if isinstance(min_outcomes, bool) or not isinstance(min_outcomes, int) or min_outcomes < 1:
        raise DataError(f"min_outcomes must be a positive number of units, got {min_outcomes!r}",
                        "e.g. 500: canary units with outcomes a step needs before it may advance")
    if not 0.0 < alpha < 0.5:
        raise DataError(f"alpha must be strictly between 0 and 0.5, got {alpha}", "e.g. 0.05")
    if policy in running(ws):
        raise PexError(f"policy {policy!r} already has a running rollout",
                       f"see `pex rollout status {policy}`; stop it with `pex rollout stop {policy}` first")
    reason = check_reason(force_reason) if force_reason is not None else None
    version = version if version is not None else ws.publish_target(policy)
    record = ws.get_policy(policy, version)
    if "rollout" in (record.document.get("lineage") or {}):
        raise PexError(f"policy {policy!r} version {version} is a step of an earlier rollout, not a version to roll out",
                       f"roll out the version it served as canary; `pex policies {record.experiment}` lists them")
    verdict = gate(ws, policy, version)
    if not verdict.certified and reason is None:
        raise UncertifiedError(f"policy {policy} v{version} is not certified to keep its guardrails: {verdict.why}",
                               "roll out a certified version, or pass --force --reason '...' to override "
                               "(recorded in the release history)")
    live = ws.live_versions().get(policy)
    if live == version:
        raise PexError(f"policy {policy!r} version {version} is already live", "roll out another version")
    spec = experiment_spec(ws, record.experiment)
    new = _load(ws, record.document)
    for name in (f"{policy}-holdout", f"{policy}-canary-v{version}"):
        check_name(name, "a rollout route's name", PexError, NAME_HINT)
    if live is not None:
        base = _load(ws, ws.get_policy(policy, live).document)
        if list(base.arms) != list(new.arms) or base.exploration != new.exploration:
            raise PexError(f"policy {policy} v{version} has arms {list(new.arms)} and exploration {new.exploration:g}; "
                           f"the live v{live} has {list(base.arms)} and {base.exploration:g}",
                           "a rollout serves both to the same units: roll out a version with the live one's arms and "
                           "exploration, or publish it directly")
    else:  # published only once every check has passed: a refused rollout changes nothing that is live
        base_doc = constant_policy(list(new.arms), spec.control, new.exploration, name=policy).replace(
            experiment=spec.name, lineage={"rollout_base": {"for_version": version}}).to_document()
        stored = ws.put_policies(spec.name, [(base_doc, None)])[0]
        publish(ws, policy, stored.version, actor,
                note=f"all-control base for the rollout of v{version}: nothing of {policy} was live")
        live = stored.version
        base = _load(ws, ws.get_policy(policy, live).document)
    key = hashlib.blake2b(f"{policy}/rollout/{uuid.uuid4().hex}".encode(), digest_size=8).hexdigest()
    settings = {"min_outcomes": min_outcomes, "alpha": alpha, "control": spec.control}
    first = _routing(policy, spec, new, base, version, live, key=key, holdout=holdout, share=steps[0], step=0)
    first_version = ws.put_policies(spec.name, [(first.to_document(), None)])[0].version
    rollout = ws.create_rollout(policy, spec.name, version, live, key, holdout, steps, settings, first_version, actor,
                                reason)
    note = (FORCED_PREFIX + reason) if reason is not None and not verdict.certified else \
        f"rollout #{rollout.id}: v{version} to {_pct(steps[0])} of units, {_pct(holdout)} all-control holdout"
    try:
        ws.release_step(policy, "canary", first_version, actor, note=note, expect_live=live,
                        details={"rollout": rollout.id, "step": 0, "share": steps[0], "holdout": holdout,
                                 "new_version": version, "base_version": live, "gate": verdict.to_dict()})
    except BaseException:
        ws.update_rollout(rollout.id, status="stopped", last_check={"error": "the canary could not be published"})
        raise
    return status(ws, policy)


def rollout_steps(canary: float, ramp: list[float] | None, holdout: float) -> list[float]:
    """The canary share of each step (fractions), checked: DataError on a share out of range or a ramp that does not
    increase to 1."""
    for name, v in (("canary", canary), ("holdout", holdout)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DataError(f"the {name} share must be a number, got {v!r}", "shares are percents on the command line")
    if not 0.0 < holdout <= MAX_HOLDOUT:
        raise DataError(f"the holdout share must be above 0 and at most {_pct(MAX_HOLDOUT)}, got {_pct(holdout)}",
                        "e.g. --holdout 5: a few units keep control, the comparison every guardrail is judged against")
    if not 0.0 < canary < 1.0 - holdout:
        raise DataError(f"the canary share must be above 0 and below {_pct(1.0 - holdout)} (all but the holdout), got "
                        f"{_pct(canary)}", "e.g. --canary 5: the new version's first share of units")
    if ramp is None:
        steps = [float(canary), *DEFAULT_RAMP[next(i for i, s in enumerate(DEFAULT_RAMP) if s > canary):]]
    else:
        steps = [float(s) for s in ramp]
        if not steps or any(isinstance(s, bool) or not math.isfinite(s) or not 0.0 < s <= 1.0 for s in steps):
            raise DataError(f"every ramp step must be a share above 0 and at most 100%, got {list(ramp)}",
                            "e.g. --ramp 5,25,50,100")
        if steps[0] != canary:
            steps.insert(0, float(canary))
    if any(b <= a for a, b in itertools.pairwise(steps)) or steps[-1] != 1.0:
        raise DataError(f"the ramp must increase step by step from the canary's {_pct(canary)} and end at 100%, got "
                        + ", ".join(_pct(s) for s in steps), "e.g. --canary 5 --ramp 5,25,50,100")
    return steps


def _pct(share: float) -> str:
    return f"{100 * share:g}%"


def _load(ws: Workspace, document: dict) -> Policy:
    return Policy.from_document(document, lambda vm: effect_model_by_id(ws, vm["fit"]))


def _route_policies(policy: str, spec: ExperimentSpec, new: Policy, base: Policy, new_version: int,
                    base_version: int) -> tuple[Policy, Policy, Policy]:
    """The holdout, canary and base routes, each under its own name (a decision logs its route's name)."""
    holdout = constant_policy(list(new.arms), spec.control, new.exploration, name=f"{policy}-holdout").replace(
        experiment=spec.name)
    return holdout, new.replace(name=f"{policy}-canary-v{new_version}"), base.replace(name=f"{policy}-base-v{base_version}")


def _routing(policy: str, spec: ExperimentSpec, new: Policy, base: Policy, new_version: int, base_version: int, *,
             key: str, holdout: float, share: float, step: int) -> RoutingPolicy:
    """Step ``step``'s routing version: holdout, then the canary's ``share`` (all but the holdout at 100%), then the
    base."""
    hold, canary, rest = _route_policies(policy, spec, new, base, new_version, base_version)
    width = min(share, 1.0 - holdout)
    routes: list[tuple[float, float, Policy]] = [(0.0, holdout, hold), (holdout, width, canary)]
    if holdout + width < 1.0 - 1e-12:
        routes.append((holdout + width, 1.0 - holdout - width, rest))
    else:
        routes[-1] = (holdout, 1.0 - holdout, canary)  # the arcs tile [0, 1) exactly
    return routing_policy(policy, routes, key=key, unit=spec.unit, experiment=spec.name,
                          lineage={"rollout": {"step": step, "share": share, "holdout": holdout,
                                               "new_version": new_version, "base_version": base_version}})


# --------------------------------------------------------------------------- status


def running(ws: Workspace) -> list[str]:
    """The policies with a running rollout."""
    return [r.policy for r in ws.running_rollouts()]


def status(ws: Workspace, policy: str) -> dict[str, Any]:
    """Policy ``policy``'s newest rollout: the row, and its measurement so far (:func:`measure`)."""
    rollout = ws.get_rollout(policy)
    found = measure(ws, rollout)
    found.pop("sequential")  # the objects; their JSON is the canary's "sequential"
    # each step the watcher left: the figures it left it on (its release row's details)
    left = {r.details["step"]: {**r.details, "release": r.action, "at": r.created_at.isoformat()}
            for r in ws.releases(policy)
            if r.action in ("ramp", "complete", "auto-rollback") and (r.details or {}).get("rollout") == rollout.id}
    for step in found["by_step"]:
        step["left"] = left.get(step["step"])
    return {**rollout.to_dict(), "live_version": ws.live_versions().get(policy), **found}


def measure(ws: Workspace, rollout: Rollout) -> dict[str, Any]:
    """The canary against the holdout from the decision log joined with outcomes.

    Returns ``by_step`` (per routing version: its share, units and outcomes per metric, by route), ``canary`` (all
    canary units so far: units, outcomes, per metric the lift over the holdout with its CI, the offline
    estimate's agreement; per guardrail the fixed one-sided harm and the always-valid one), ``outcomes`` (the
    fewest canary outcomes over the metrics) and ``sequential`` (the guardrails' :class:`SequentialHarm`, by
    metric, for :func:`check`).
    """
    spec = experiment_spec(ws, rollout.experiment)
    names = _names(rollout)
    frame = _attributed(ws, rollout)
    by_step = []
    for i, (share, v) in enumerate(zip(rollout.steps, rollout.versions, strict=False)):
        rows = frame[frame["version"] == v] if len(frame) else frame
        by_step.append({"step": i, "version": v, "share": share, "units": len(rows),
                        "routes": {role: int((rows["route"] == name).sum()) if len(rows) else 0
                                   for role, name in names.items()},
                        "outcomes": {m: int(rows[m].notna().sum()) if len(rows) else 0 for m in spec.metrics}})
    rules = _rules(ws, spec)
    out: dict[str, Any] = {"by_step": by_step, "canary": None, "holdout_route": None, "outcomes": 0, "step_outcomes": 0,
                           "sequential": {},
                           "method": None, "guardrails": sorted(rules)}
    canary_rows = frame[frame["route"] == names["canary"]] if len(frame) else frame
    hold_rows = frame[frame["route"] == names["holdout"]] if len(frame) else frame
    if len(canary_rows) == 0 or len(hold_rows) == 0:
        return out
    routing = _measuring_routing(ws, rollout, spec)
    frame = frame.copy()
    if spec.unit not in frame.columns:  # a cross-fitted (routing) canary reads its units from the spec's unit column
        frame[spec.unit] = frame["unit"]
    results = measure_round(frame, routing, names["holdout"], spec.control, spec.metrics, rules)
    got = results["arms"][names["canary"]]
    offline = _offline(ws, rollout)
    alpha = float(rollout.settings.get("alpha", ALPHA))
    planned = int(rollout.settings.get("min_outcomes", MIN_OUTCOMES))
    sequential: dict[str, SequentialHarm] = {}
    metrics: dict[str, Any] = {}
    for m, cell in got["metrics"].items():
        lift = cell["lift"]
        entry: dict[str, Any] = {"n": cell["n"], "missing": cell["missing"], "lift": lift, "offline": offline.get(m)}
        entry["agreement"] = None
        if lift is not None and offline.get(m) is not None:
            entry["agreement"] = agreement(lift["estimate"], lift["se"], offline[m]["estimate"], offline[m]["se"]).to_dict()
        metrics[m] = entry
    for m, rule in rules.items():
        value, control = got["metrics"][m]["value"], results["control"].get(m)
        if value is None or control is None:
            continue
        sequential[m] = sequential_harm(rule, _estimate(value), _estimate(control), alpha=alpha, planned_n=planned)
    out["canary"] = {"route": names["canary"], "units": got["units"], "metrics": metrics, "harms": got["harms"],
                     "sequential": {m: h.to_dict() for m, h in sequential.items()},
                     "offline": "no offline estimate" if not offline else "the recommending run's lift over control"}
    out["holdout_route"] = {"route": names["holdout"], "units": results["arms"][names["holdout"]]["units"],
                      "control": results["control"]}
    out["outcomes"] = min((c["n"] for c in got["metrics"].values()), default=0)
    # the canary's outcomes first decided at the live step: a step advances on what its own share showed, never on
    # the earlier steps' units alone (else every later step would advance at its first check, with no new data)
    at_step = canary_rows[canary_rows["version"] == rollout.live_version]
    out["step_outcomes"] = min((int(at_step[m].notna().sum()) for m in got["metrics"]), default=0)
    out["sequential"] = sequential
    out["method"] = next(iter(sequential.values())).method if sequential else None
    return out


def _names(rollout: Rollout) -> dict[str, str]:
    p = rollout.policy
    return {"holdout": f"{p}-holdout", "canary": f"{p}-canary-v{rollout.new_version}",
            "base": f"{p}-base-v{rollout.base_version}"}


def _attributed(ws: Workspace, rollout: Rollout) -> pd.DataFrame:
    """The rollout's logged feedback, one row per unit: its FIRST decision within the rollout (a unit a ramp moved
    from the base to the canary counts as base: its outcome may carry the base's decision)."""
    frames = []
    for v in dict.fromkeys(rollout.versions):
        try:
            frames.append(feedback_table(ws, rollout.experiment, policy=rollout.policy, version=v).frame)
        except NotFoundError:  # no decision of that step yet
            continue
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True).sort_values(["decided_at", "version"], kind="stable")
    frame = frame.drop_duplicates("unit", keep="first").reset_index(drop=True)
    if frame["route"].isna().any():  # logged without a route column: the step's own hash says it
        for v in frame.loc[frame["route"].isna(), "version"].unique():
            rows = frame["route"].isna() & (frame["version"] == v)
            routing = _load(ws, ws.get_policy(rollout.policy, int(v)).document)
            frame.loc[rows, "route"] = routing.route_names(frame.loc[rows, "unit"].tolist())
    return frame


def _measuring_routing(ws: Workspace, rollout: Rollout, spec: ExperimentSpec) -> RoutingPolicy:
    """A routing policy with all three routes (holdout, canary, base) for :func:`measure_round`, which reads only
    the routes' names and policies: the last step may have no base route, but its units logged earlier still
    count."""
    first = _load(ws, ws.get_policy(rollout.policy, rollout.versions[0]).document)
    by_name = {p.name: p for p in first.routes}
    names = _names(rollout)
    new = by_name.get(names["canary"]) or _load(ws, ws.get_policy(rollout.policy, rollout.new_version).document)
    base = by_name.get(names["base"]) or _load(ws, ws.get_policy(rollout.policy, rollout.base_version).document)
    hold, canary, rest = _route_policies(rollout.policy, spec, new, base, rollout.new_version, rollout.base_version)
    return routing_policy(rollout.policy, [(0.0, 1 / 3, hold), (1 / 3, 1 / 3, canary), (2 / 3, 1 / 3, rest)],
                          key=rollout.routing_key, unit=spec.unit, experiment=spec.name)


def _rules(ws: Workspace, spec: ExperimentSpec) -> dict[str, GuardrailRule]:
    """The experiment's guardrail rules with a limit (their control mean the experiment's; the measurement judges
    each against the holdout's own)."""
    dataset, _ = ws.load_dataset(spec.name)
    control = dataset.frame[dataset.frame[spec.arm] == spec.control]
    means = {m: float(control[spec.metrics[m].column].mean()) for m in spec.metrics}
    return {m: r for m, r in rules_for(spec, means).items() if r.has_limit}


def _estimate(d: dict[str, Any]) -> Estimate:
    # the measurement's JSON form back as an Estimate (the per-unit contributions are not needed by a harm)
    return Estimate(estimator=d["estimator"], value=float(d["value"]), se=float(d["se"]), ci_low=float(d["ci_low"]),
                    ci_high=float(d["ci_high"]), n=int(d["n"]), contributions=np.zeros(0))


def _offline(ws: Workspace, rollout: Rollout) -> dict[str, dict[str, float]]:
    """Per metric, the offline lift over control (with its se) of the new version in the run that judged it; empty
    when no run did or it kept no standard error."""
    try:
        run = gate(ws, rollout.policy, rollout.new_version).run
        if run is None:
            return {}
        summary = ws.run_summary(run)
    except PexError:
        return {}
    for row in summary.get("policies") or []:
        if row.get("name") == rollout.policy and row.get("version") in (None, rollout.new_version):
            return {m: {"estimate": float(v["estimate"]), "se": float(v["se"])}
                    for m, v in (row.get("lift_vs_control") or {}).items() if v.get("se") is not None}
    return {}


# --------------------------------------------------------------------------- acting


def check(ws: Workspace, policy: str, actor: str = "watcher") -> dict[str, Any]:
    """Measure the running rollout of ``policy`` and act by the step rule: advance to the next share, complete (the
    new version alone), roll back automatically, or hold. Every move is a release row with the reason and the
    figures; the measurement is kept as the rollout's ``last_check``."""
    rollout = ws.get_rollout(policy)
    if rollout.status != "running":
        raise PexError(f"the newest rollout of {policy!r} is {rollout.status}, not running",
                       f"start a new one with `pex publish {policy} --canary 5`")
    live = ws.live_versions().get(policy)
    if live != rollout.live_version:  # someone published or rolled back by hand: the rollout stops acting
        why = f"version {live} was made live outside the rollout (it served v{rollout.live_version})"
        ws.update_rollout(rollout.id, expect_step=rollout.step, status="stopped",
                          last_check={"action": {"action": "stop", "reason": why, "code": "changed_by_hand"}})
        return status(ws, policy)
    found = measure(ws, rollout)
    action = _decide(rollout, found)
    figures = _figures(rollout, found, action)
    last = {**figures, "checked_by": actor}
    at = rollout.live_version
    if action.action == "rollback":
        ws.release_step(policy, "auto-rollback", rollout.base_version or 0, actor, note=action.reason, details=figures,
                        expect_live=at)
        ws.update_rollout(rollout.id, expect_step=rollout.step, status="rolled_back", last_check=last)
    elif action.action == "complete":
        ws.release_step(policy, "complete", rollout.new_version, actor, note=action.reason, details=figures,
                        expect_live=at)
        ws.update_rollout(rollout.id, expect_step=rollout.step, status="complete", last_check=last)
    elif action.action == "advance":
        spec = experiment_spec(ws, rollout.experiment)
        new = _load(ws, ws.get_policy(policy, rollout.new_version).document)
        base = _load(ws, ws.get_policy(policy, rollout.base_version).document)
        step = rollout.step + 1
        routing = _routing(policy, spec, new, base, rollout.new_version, rollout.base_version, key=rollout.routing_key,
                           holdout=rollout.holdout, share=rollout.steps[step], step=step)
        version = ws.put_policies(spec.name, [(routing.to_document(), None)])[0].version
        ws.release_step(policy, "ramp", version, actor, note=action.reason, details=figures, expect_live=at)
        ws.update_rollout(rollout.id, expect_step=rollout.step, step=step, add_version=version, last_check=last)
    else:
        ws.update_rollout(rollout.id, expect_step=rollout.step, last_check=last)
    return status(ws, policy)


def _decide(rollout: Rollout, found: dict[str, Any]) -> Action:
    """The step rule; a guardrail not yet measurable (no outcomes in the holdout or canary) holds the step, since
    an empty harm dict would read as "no guardrail to hold"."""
    harms: dict[str, SequentialHarm] = found["sequential"]
    unmeasured = found["canary"] is None or any(m not in harms for m in found["guardrails"])
    action = next_action(harms, outcomes=int(found["step_outcomes"]),
                         min_outcomes=int(rollout.settings.get("min_outcomes", MIN_OUTCOMES)),
                         at_last_step=rollout.step == len(rollout.steps) - 1)
    if unmeasured and action.action != "rollback":
        return Action("hold", "the canary or the holdout has too few outcomes to measure every guardrail yet",
                      "few_outcomes")
    return action


def _figures(rollout: Rollout, found: dict[str, Any], action: Action) -> dict[str, Any]:
    """What a release row keeps of a check: the action, the step and, for the canary, units, outcomes, lifts and
    both harms of every guardrail."""
    canary = found["canary"] or {}
    return {"rollout": rollout.id, "step": rollout.step, "share": rollout.steps[rollout.step],
            "version": rollout.live_version, "action": action.to_dict(), "outcomes": found["outcomes"],
            "step_outcomes": found["step_outcomes"],
            "units": canary.get("units", 0), "holdout_units": (found["holdout_route"] or {}).get("units", 0),
            "lifts": {m: c["lift"] for m, c in (canary.get("metrics") or {}).items()},
            "agreement": {m: c["agreement"] for m, c in (canary.get("metrics") or {}).items()},
            "harms": canary.get("harms", {}), "sequential": canary.get("sequential", {}), "method": found["method"]}


def stop(ws: Workspace, policy: str, actor: str | None = None) -> dict[str, Any]:
    """Stop ``policy``'s running rollout by hand: back to the base (a rollback, by ``actor``), status ``stopped``."""
    actor = actor or local_actor()
    rollout = ws.get_rollout(policy)
    if rollout.status != "running":
        raise PexError(f"the newest rollout of {policy!r} is {rollout.status}, not running", "nothing to stop")
    live = ws.live_versions().get(policy)
    if live == rollout.live_version:
        ws.rollback(policy, actor, note=f"rollout #{rollout.id} stopped by {actor}")
    ws.update_rollout(rollout.id, expect_step=rollout.step, status="stopped",
                      last_check={**(rollout.last_check or {}),
                                  "action": {"action": "stop", "reason": f"stopped by {actor}", "code": "stopped"}})
    return status(ws, policy)
