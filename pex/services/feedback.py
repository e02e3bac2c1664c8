"""Logged feedback from serving: an experiment's decision log joined with the outcomes its units reported.

The join rule (docs/logged-feedback.md):

* an outcome counts for the decisions of the same experiment and unit (decisions logged without an experiment
  join nothing);
* when a unit has several outcomes for a metric, the one recorded last wins, so sending outcomes again is
  harmless and a correction replaces the earlier value;
* a unit decided several times by the same policy version is one row, its first decision: the keyed-hash draw
  gives the unit the same arm every time unless its features changed in between (those are counted);
* a decision with no outcome for a metric gets an empty cell (NaN) there; the evaluation leaves such rows out of
  that metric's estimate and counts them.

A unit decided by two policy versions appears once under each, with the same outcome; the summary counts such
units, since their outcome reflects both decisions (evaluate one version at a time if there are many).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import DataError, NotFoundError, PexError
from pex.services.outcomes import experiment_spec
from pex.store.workspace import Workspace

# the decision's own columns, in the order of the logged-feedback file (``route``: the candidate of a routing
# policy, empty for other kinds); features and metrics follow
DECISION_COLUMNS = ("decision_id", "decided_at", "unit", "policy", "version", "arm", "propensity", "route")
KEY = ["policy", "version", "unit"]


@dataclass(frozen=True)
class FeedbackTable:
    """The logged-feedback dataset of one experiment: a row per (policy version, unit) and what the join did."""

    experiment: str
    frame: pd.DataFrame
    features: list[str]
    metrics: list[str]
    n_decisions: int  # logged decisions that matched the filters, before repeats were collapsed
    repeats: int  # later decisions of a (policy version, unit) already in the table
    changed_arm: int  # units whose later decision by the same version chose another arm (their features changed)
    crossed_units: int  # units in the table under more than one policy version
    outcomes_replaced: int  # outcomes superseded by a later one of the same unit and metric
    units_without_decision: int  # units with outcomes but no decision among the rows
    versions: dict[str, int] = field(default_factory=dict)  # "policy v1" -> rows
    # decisions a server answered with the policy's fallback arm because the version could not be loaded: no policy
    # drew them, so they are left out of every value and lift estimated from the table
    fallbacks: int = 0

    @property
    def with_outcome(self) -> dict[str, int]:
        """Rows that have an outcome, per metric."""
        return {m: int(self.frame[m].notna().sum()) for m in self.metrics}

    def summary(self) -> dict[str, Any]:
        """The counts, as JSON."""
        return {"experiment": self.experiment, "rows": len(self.frame), "decisions": self.n_decisions,
                "repeats_collapsed": self.repeats, "changed_arm": self.changed_arm, "crossed_units": self.crossed_units,
                "outcomes_replaced": self.outcomes_replaced, "units_without_decision": self.units_without_decision,
                "with_outcome": self.with_outcome, "versions": dict(self.versions), "fallbacks_left_out": self.fallbacks,
                "features": list(self.features),
                "metrics": list(self.metrics)}


def feedback_table(ws: Workspace, experiment: str, policy: str | None = None, version: int | None = None) -> FeedbackTable:
    """Join ``experiment``'s logged decisions (optionally of one policy, and one version of it) with its outcomes."""
    if version is not None and policy is None:
        raise PexError("--version needs --policy: versions are numbered per policy", "add --policy NAME")
    spec = experiment_spec(ws, experiment)
    decisions = ws.read_decisions(experiment=experiment, policy=policy)
    if version is not None:
        decisions = decisions[decisions["version"] == version]
    fallback = (decisions["fallback"].fillna(False).astype(bool) if "fallback" in decisions.columns
                else pd.Series(False, index=decisions.index))
    fallbacks = int(fallback.sum())
    decisions = decisions[~fallback.to_numpy()]
    if decisions.empty:
        raise NotFoundError(f"no decisions of {_which(experiment, policy, version)} are logged", _logged_hint(ws, experiment))
    dataset, _ = ws.load_dataset(experiment)
    kinds = dict(dataset.features)
    metrics = list(spec.metrics)

    decisions = decisions.reset_index(drop=True)
    first = ~decisions.duplicated(KEY, keep="first")
    first_arm = decisions[first].set_index(KEY)["arm"]
    arm_then = first_arm.reindex(pd.MultiIndex.from_frame(decisions[KEY])).to_numpy()
    changed = decisions.loc[decisions["arm"].to_numpy() != arm_then, KEY].drop_duplicates()
    rows = decisions[first].reset_index(drop=True)

    features = _features(rows["features"], kinds)
    clash = [c for c in (*features.columns, *metrics) if c in DECISION_COLUMNS]
    if clash:
        raise DataError(f"experiment {experiment!r} has a feature or metric named {clash[0]!r}, a column the decision "
                        "already fills", "rename it in the spec (and the data) to export its logged feedback")
    frame = rows[list(DECISION_COLUMNS)].copy()
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    frame["version"] = frame["version"].astype("int64")
    frame["propensity"] = frame["propensity"].astype(float)
    frame = pd.concat([frame, features], axis=1)

    outcomes = ws.read_outcomes(experiment)
    latest = outcomes.drop_duplicates(["unit", "metric"], keep="last")  # read oldest first: the last is the newest
    wide = latest.pivot(index="unit", columns="metric", values="value") if len(latest) else pd.DataFrame()
    for m in metrics:
        frame[m] = frame["unit"].map(wide[m]).astype(float) if m in wide.columns else np.nan
    versions = frame.groupby(["policy", "version"], sort=True).size()
    return FeedbackTable(
        experiment=experiment, frame=frame, features=list(features.columns), metrics=metrics,
        n_decisions=len(decisions), repeats=int((~first).sum()), changed_arm=len(changed),
        crossed_units=int((frame.groupby("unit")["version"].size() > 1).sum()),
        outcomes_replaced=len(outcomes) - len(latest),
        units_without_decision=len(set(latest["unit"]) - set(frame["unit"])),
        versions={f"{p} v{v}": int(c) for (p, v), c in versions.items()},
        fallbacks=fallbacks,
    )


def _features(values: pd.Series, kinds: dict[str, str]) -> pd.DataFrame:
    """The logged feature objects as columns: the experiment's features first (as their kind: numbers, or labels
    as text), then any other key the requests sent (numbers if all its values are, else text).

    A value that does not fit its kind (text in a numeric feature) becomes missing, as the policy read it when it
    served the request.
    """
    objects = [v if isinstance(v, dict) else {} for v in values]
    raw = pd.DataFrame.from_records(objects, index=range(len(objects)), columns=None) if objects else pd.DataFrame()
    extra = sorted(c for c in raw.columns if c not in kinds)
    out = {}
    for name in [*kinds, *extra]:
        column = raw[name] if name in raw.columns else pd.Series([None] * len(objects), dtype=object)
        kind = kinds.get(name) or ("numeric" if all(_is_number(v) for v in column if not _is_missing(v)) else "categorical")
        if kind == "numeric":
            out[name] = pd.Series([float(v) if _is_number(v) else np.nan for v in column], dtype=float)
        else:
            out[name] = pd.Series([None if _is_missing(v) else _label(v) for v in column], dtype="string")
    return pd.DataFrame(out, index=range(len(objects)))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _label(value: Any) -> str:
    """A JSON value as a category label: 2.0 reads "2", as pex reads labels from files (pex.experiment.data.as_text)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _which(experiment: str, policy: str | None, version: int | None) -> str:
    who = f"experiment {experiment!r}"
    if policy is not None:
        who += f" by policy {policy!r}" + (f" v{version}" if version is not None else "")
    return who


def _logged_hint(ws: Workspace, experiment: str) -> str:
    logged = ws.read_decisions(experiment=experiment)
    if logged.empty:
        return "decisions are logged when a policy of this experiment is served; serve one first"
    found = logged.groupby(["policy", "version"]).size()
    return "logged: " + ", ".join(f"{p} v{v} ({c:,} decisions)" for (p, v), c in found.items())
