"""Retrain from the decision log: a new dataset version of an experiment built from the units its policies served,
fitted and certified by the whole pipeline, and its certified recommendation proposed as a canary (never 100%).

Served units are a randomized experiment of their own: each one's arm was drawn by a policy with a known probability
(the propensity logged beside it; exploration keeps it above 0 for every arm). So the log joined with outcomes
(:func:`pex.services.feedback.feedback_table`) is a dataset whose spec names a propensity column, which the average
effects (inverse-propensity weights, :mod:`pex.experiment.effects`) and the learners (doubly-robust pseudo-outcomes,
:mod:`pex.hte.learners`) already use. The rules:

* a unit counts once, with its first decision (of any policy version in the selection): a later decision may depend
  on the outcome of the earlier one (its features changed, or a policy learned from it), and the unit's outcome
  reflects every decision it received;
* a logged propensity outside (0, 1] or an arm the experiment does not have is a data error (the log is not what
  the policy served); an arm the policy never chose cannot appear, so nothing is learned about it;
* a unit without an outcome for some metric is dropped and counted per metric (an ingest refuses missing metric
  values; here they are expected: outcomes arrive late);
* with ``pool``, the experiment's original randomized data is appended with each unit's assignment probability
  (its allocation, or its own propensity column); logged units whose id is also an original unit's are renamed
  ``<id>~log`` and counted.

The new dataset version becomes the experiment's current one; the earlier versions and their runs are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import DataError, PexError
from pex.experiment.data import MIN_UNITS_PER_ARM, PROPENSITY, Dataset, validate
from pex.experiment.spec import ExperimentSpec
from pex.services.feedback import feedback_table
from pex.services.publishing import copy_policy
from pex.store.records import DatasetVersion
from pex.store.workspace import Workspace

Say = Callable[[str], None]

# a dataset version made here says so in its source (how the next retrain finds the experiment's own data to pool)
LOG_SOURCE = "decision log of "
PROPENSITY_COLUMN = "propensity"  # the column a spec without one gets
RENAMED = "~log"  # suffix of a logged unit whose id is also an original unit's (pool)
_EXAMPLES = 3


@dataclass(frozen=True)
class LogDataset:
    """A validated dataset built from the decision log, not stored yet, and what building it did."""

    dataset: Dataset
    source: str  # the dataset version's source text
    policies: dict[str, int]  # "policy vN" -> units taken from it
    counts: dict[str, Any]  # decisions, units, repeats, dropped per metric, pooled, renamed
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The counts and notes, as JSON."""
        return {"source": self.source, "policies": dict(self.policies), **self.counts, "notes": list(self.notes),
                "n_units": self.dataset.n_units, "arms": self.dataset.arm_counts(),
                "propensity_column": self.dataset.spec.propensity}


def original_dataset(ws: Workspace, experiment: str) -> tuple[Dataset, DatasetVersion]:
    """The experiment's newest dataset version that was not built from its decision log (its randomized data)."""
    for dv in reversed(ws.list_dataset_versions(experiment)):
        if not dv.source.startswith(LOG_SOURCE):
            return ws.load_dataset(experiment, dv.version)
    return ws.load_dataset(experiment)  # only retrained versions: the current one holds the experiment's spec


def log_dataset(ws: Workspace, experiment: str, *, policy: str | None = None, since: datetime | None = None,
                pool: bool = False) -> LogDataset:
    """The decision log of ``experiment`` joined with its outcomes as a dataset with each unit's logged propensity.

    ``policy`` selects one policy's decisions (default: the experiment's live policies, or every logged policy when
    none is live); ``since`` leaves out units first decided before it; ``pool`` appends the original data.
    """
    original, original_dv = original_dataset(ws, experiment)
    spec = original.spec
    table = feedback_table(ws, experiment, policy=policy)
    frame = table.frame
    notes: list[str] = []
    if policy is None:
        live = sorted(set(ws.live_versions()) & set(frame["policy"]))
        if live:
            frame = frame[frame["policy"].isin(live)]
            notes.append(f"decisions of the live {'policy' if len(live) == 1 else 'policies'} {', '.join(live)}")
        else:
            notes.append("no policy of the experiment is live: decisions of every policy that logged any")
    # one row per unit, its first decision: later ones may depend on the outcome of the first
    frame = frame.sort_values(["decided_at", "decision_id"], kind="stable")
    first = ~frame.duplicated("unit", keep="first")
    repeats = int((~first).sum())
    frame = frame[first].reset_index(drop=True)
    if repeats:
        notes.append(f"{repeats:,} later decisions of units already decided (by another policy version) left out: "
                     "each unit counts once, with its first decision")
    if since is not None:  # after the rule above: a unit first decided before ``since`` stays out with its later decisions
        start = pd.Timestamp(since)
        frame = frame[frame["decided_at"] >= (start.tz_localize("UTC") if start.tzinfo is None else start)]
    if frame.empty:
        raise DataError(f"no logged decisions of experiment {experiment!r} match"
                        + (f" policy {policy!r}" if policy else "") + (f" since {since.isoformat()}" if since else ""),
                        "serve a policy of the experiment first, or widen --policy/--since")

    _check_log(frame, original.arms, experiment)
    dropped = {m: int(frame[m].isna().sum()) for m in table.metrics}
    complete = frame[table.metrics].notna().all(axis=1)
    if not complete.any():
        raise DataError(f"none of the {len(frame):,} logged units of {experiment!r} has an outcome for every metric "
                        f"({', '.join(table.metrics)})", "record outcomes first: pex outcomes NAME FILE or POST /api/v1/outcomes")
    if (~complete).any():
        notes.append(f"{int((~complete).sum()):,} units without an outcome for every metric dropped ("
                     + ", ".join(f"{m}: {n:,} missing" for m, n in dropped.items() if n) + ")")
    frame = frame[complete].reset_index(drop=True)
    policies = {f"{p} v{v}": int(n) for (p, v), n in frame.groupby(["policy", "version"]).size().items()}

    propensity = spec.propensity or PROPENSITY_COLUMN
    features = list(original.features)
    metrics = dict(spec.metrics)
    for name, m in spec.metrics.items():
        if m.pre and m.pre not in features:  # the log holds the request's features only: no pre-period values
            metrics[name] = replace(m, pre=None)
            notes.append(f"metric {name!r}: its pre-period column {m.pre!r} is not a logged feature, so no CUPED adjustment")
    clash = [c for c in (*features, *(m.column for m in metrics.values())) if c == propensity]
    if clash:
        raise DataError(f"experiment {experiment!r} has a feature or metric named {propensity!r}, the column the logged "
                        "propensities go in", "set the spec's propensity key to a free column name")
    logged = pd.DataFrame({spec.unit: frame["unit"].astype(str), spec.arm: frame["arm"].astype(str)})
    for f in features:
        logged[f] = frame[f] if f in frame.columns else np.nan
    for name, m in metrics.items():
        logged[m.column] = frame[name].to_numpy(dtype=float)
    logged[propensity] = frame["propensity"].to_numpy(dtype=float)

    counts: dict[str, Any] = {"decisions": table.n_decisions, "logged_units": int(len(frame) + (~complete).sum()),
                              "repeats": repeats, "dropped_without_outcome": int((~complete).sum()),
                              "missing_outcomes": dropped, "pooled": 0, "renamed": 0}
    parts = [logged]
    if pool:
        base = original.frame
        own = pd.DataFrame({spec.unit: base[spec.unit].astype(str), spec.arm: base[spec.arm].astype(str)})
        for f in features:
            own[f] = base[f]
        for m in metrics.values():
            own[m.column] = base[m.column].to_numpy(dtype=float)
        own[propensity] = base[PROPENSITY].to_numpy(dtype=float)  # allocation, observed share or its own column
        taken = set(own[spec.unit])
        collide = logged[spec.unit].isin(taken)
        if collide.any():
            logged.loc[collide, spec.unit] = logged.loc[collide, spec.unit] + RENAMED
            if logged[spec.unit].isin(taken).any():
                raise DataError(f"logged units renamed with {RENAMED!r} still collide with the experiment's unit ids",
                                "retrain without --pool, or rename the units of the original data")
            notes.append(f"{int(collide.sum()):,} logged units share an id with a unit of the original data: "
                         f"renamed to <id>{RENAMED}")
        parts = [own, logged]
        counts.update(pooled=len(own), renamed=int(collide.sum()))
        notes.append(f"pooled with dataset version {original_dv.version} ({len(own):,} units, their experiment propensities)")

    # the experiment's arms stay in its order; an arm the log never shows is left out (nothing can be learned of it)
    shown = set(pd.concat([p[spec.arm] for p in parts]))
    never = [a for a in original.arms if a not in shown]
    if never:
        notes.append(f"arm {', '.join(repr(a) for a in never)} never served: the retrained data cannot value it")
    if spec.control not in shown:
        raise DataError(f"no logged unit with an outcome got the control arm {spec.control!r}",
                        "effects are measured against control: serve with exploration (> 0) so that some units get it")
    rare = {a: n for a, n in logged[spec.arm].value_counts().items() if n < MIN_UNITS_PER_ARM and not pool}
    if rare:
        raise DataError(f"the log has fewer than {MIN_UNITS_PER_ARM} units with an outcome in arm "
                        + ", ".join(f"{a!r} ({n})" for a, n in rare.items()),
                        "serve with exploration (a policy's exploration > 0) and wait for more outcomes")
    new_spec: ExperimentSpec = replace(spec, propensity=propensity, features=tuple(features), allocation=None,
                                       metrics=metrics)
    source = _source(experiment, policies, since, pool, original_dv)
    dataset = validate(pd.concat(parts, ignore_index=True), new_spec, source=f"the decision log of {experiment}")
    # the stored spec's data is the file the store keeps the version in (content-addressed; the digest leaves the path out)
    dataset.spec = replace(new_spec, data=(ws.artifacts / "datasets" / f"{dataset.content_hash()}.parquet").resolve())
    return LogDataset(dataset=dataset, source=source, policies=policies, counts=counts, notes=notes)


def _check_log(frame: pd.DataFrame, arms: list[str], experiment: str) -> None:
    """Refuse what a policy cannot have served: a propensity outside (0, 1], an arm the experiment does not have."""
    p = frame["propensity"].to_numpy(dtype=float)
    bad = ~((p > 0) & (p <= 1))  # NaN included
    if bad.any():
        shown = ", ".join(f"{u!r} ({v:g})" for u, v in zip(frame["unit"][bad][:_EXAMPLES], p[bad][:_EXAMPLES]))
        raise DataError(f"{int(bad.sum()):,} logged decisions of {experiment!r} have a propensity outside (0, 1] "
                        f"(e.g. unit {shown})",
                        "a logged propensity is the probability the policy gave the served arm; a decision logged "
                        "with 0 or above 1 did not come from a policy's draw: select other decisions with --policy/--since")
    unknown = ~frame["arm"].isin(arms)
    if unknown.any():
        labels = sorted(set(frame["arm"][unknown]))
        raise DataError(f"{int(unknown.sum()):,} logged decisions of {experiment!r} chose arms the experiment does not "
                        f"have: {', '.join(repr(a) for a in labels[:_EXAMPLES])}",
                        f"the experiment's arms are {', '.join(arms)}; select the decisions of its policies with --policy")


def _source(experiment: str, policies: dict[str, int], since: datetime | None, pool: bool, original: DatasetVersion) -> str:
    text = f"{LOG_SOURCE}{experiment}: " + ", ".join(f"{k} ({n:,} units)" for k, n in policies.items())
    if since is not None:
        text += f", since {since.isoformat()}"
    return text + (f"; pooled with dataset version {original.version}" if pool else "")


def retrain(ws: Workspace, experiment: str, *, pool: bool = False, canary: float | None = 0.05,
            ramp: list[float] | None = None, holdout: float = 0.05, seed: int = 0, say: Say | None = None,
            policy: str | None = None, since: datetime | None = None, actor: str | None = None) -> dict[str, Any]:
    """Build a dataset version from ``experiment``'s decision log (:func:`log_dataset`), run the pipeline on it and,
    when the run certifies its recommendation, start it as a canary (``canary`` share, ``ramp``, ``holdout``; None:
    propose it without starting). Never publishes to all traffic.

    Returns the dataset version, the log's counts and notes, the run's recommendation and what was started.
    """
    from pex.services.run import run_stored

    say = say or (lambda message: None)
    built = log_dataset(ws, experiment, policy=policy, since=since, pool=pool)
    for note in built.notes:
        say(f"note: {note}")
    dv = ws.put_dataset(built.dataset, source=built.source)
    say(f"dataset version {dv.version} of {experiment} ({'new' if dv.created else 'already stored'}): "
        f"{built.dataset.n_units:,} units from {built.source[len(LOG_SOURCE):]}")
    result = run_stored(ws, experiment, dv.version, seed=seed, say=say)
    summary = result.summary
    rec = summary["recommendation"]
    name, version = result.recommended_policy, result.recommended_version
    certified = name in (rec.get("certification") or {}).get("certified", [])
    out: dict[str, Any] = {
        "experiment": experiment, "dataset_version": dv.to_dict(), "log": built.to_dict(), "run": result.run_id,
        "recommendation": {"policy": name, "version": version, "verdict": rec["verdict"], "headline": rec["headline"],
                           "certified": certified},
        "canary": None,
    }
    if not certified:
        out["canary"] = {"started": False, "reason": "the run certified no policy to propose: nothing goes live"}
        say("nothing certified: no canary proposed")
        return out
    target = _serving_name(ws, experiment, built.policies, policy)
    if target is not None and target != name and canary is not None:
        # services ask for the live policy by its stable name: the retrained version goes out under it, as a copy
        # that decides exactly as the recommendation (the gate gives it the run's certificate)
        copy = copy_policy(ws, name, version, target, {"retrained": {"run": result.run_id, "dataset_version": dv.version}})
        say(f"{name} v{version} stored as {target} v{copy.version}, the name its services ask for")
        out["recommendation"]["serving_as"] = {"policy": target, "version": copy.version}
        name, version = target, copy.version
    out["canary"] = _propose(ws, name, version, canary=canary, ramp=ramp, holdout=holdout, actor=actor)
    say(f"canary: {out['canary']['reason']}")
    return out


def _serving_name(ws: Workspace, experiment: str, logged: dict[str, int], chosen: str | None) -> str | None:
    """The stable name the retrained version should be served under: the one live policy of ``experiment`` whose
    decisions were retrained on (``logged``: "name vN" -> units), or the ``--policy`` chosen; None when several are
    live or none (then the recommendation is rolled out under its own name)."""
    names = {key.rsplit(" v", 1)[0] for key in logged}
    live = {p for p in ws.live_versions() if p in names}
    if chosen is not None:
        return chosen if chosen in live else None
    return next(iter(live)) if len(live) == 1 else None


def _propose(ws: Workspace, name: str, version: int | None, *, canary: float | None, ramp: list[float] | None,
             holdout: float, actor: str | None) -> dict[str, Any]:
    """Start ``name`` v``version`` as a canary through the rollout service, or say why it was only proposed."""
    proposal = {"policy": name, "version": version, "canary": canary, "ramp": ramp, "holdout": holdout}
    if canary is None:
        return {**proposal, "started": False,
                "reason": f"proposed, not started (--no-canary): pex publish {name} --version {version} --canary 5"}
    try:
        from pex.services import rollout
        start = rollout.start
    except (ImportError, AttributeError):  # the staged rollout is not part of this installation
        return {**proposal, "started": False, "reason": "proposed, not started: this pex has no staged rollout"}
    try:
        started = start(ws, name, version, canary=canary, ramp=ramp, holdout=holdout, actor=actor)
    except PexError as exc:  # e.g. a rollout of this policy is already running: the run stays, the user decides
        return {**proposal, "started": False, "reason": f"proposed, not started: {exc.message}", "hint": exc.hint}
    return {**proposal, "started": True, "reason": f"{name} v{version} started as a {canary:.0%} canary",
            "rollout": started}
