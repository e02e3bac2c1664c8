"""Propose an experiment spec from a table's columns (``pex init DATA`` and the UI's "New experiment" page).

The proposal is a spec dict in the TOML shape of the README (The experiment spec) plus a note for every guess
saying why it was made, so that the owner can check each one. It is a starting point, never a silent default:
``pex init`` writes it to a file to be read, and the UI shows it in a form to be corrected. The rules, in order:

- **unit**: a column named like an id (``id``, ``user``, ``unit``, ``customer``, ``account`` ...) whose values are
  unique; else the first unique text or integer column. No unique column is an error (duplicate ids).
- **arm**: a column named like an assignment (``arm``, ``variant``, ``group``, ``treatment``, ``bucket`` ...) with
  1 to 20 labels; else the text or integer column with the fewest labels (2 to 6, none missing) whose counts are
  consistent with equal shares (a guess, and the notes say so). None is an error.
- **control**: a label named like one (``control``, ``ctrl``, ``baseline``, ``a``, ``default``, ``holdout``, ``0``),
  else the most common label (a guess, and the notes say so).
- **metrics**: numeric columns whose name reads like an outcome (revenue, sessions, clicks, conversions, ``*_count``,
  ``*rate`` ...). A name that reads like a harm (unsubscribe, churn, complaint, error, latency, cost, bounce, crash,
  refund, cancel ...) gets ``goal = "decrease"``, ``role = "guardrail"`` and ``max_harm = 0.05``
  (:data:`DEFAULT_MAX_HARM`: at most 5% worse than control); the first other metric is the primary one, the rest
  secondary. A column ``<metric>_pre`` (or ``pre_<metric>``) is the metric's pre-period covariate (CUPED).
- **propensity**: a numeric column named ``p``, ``propensity``, ``pscore`` ... with values in (0, 1].
- **features**: every other column, except constant ones and text columns with a distinct value per row (ids).
- **allocation**: a planned-looking split (equal shares, equal shares in whole percents such as 0.34 / 0.33 / 0.33,
  else the observed shares rounded to 5%) when the observed counts are consistent with it (chi-square p >= 0.001,
  the sample-ratio check's own threshold); else left out, and the notes say so (pex then uses the observed shares).

Columns whose names hold characters a name may not (:mod:`pex.names`) are left out of every role, with a note.
Deterministic: the same table gives the same proposal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pex.errors import DataError
from pex.experiment.data import as_text
from pex.experiment.spec import NAME_PATTERN
from pex.names import describe, unsafe_character

__all__ = ["DEFAULT_MAX_HARM", "experiment_name", "propose_spec"]

DEFAULT_MAX_HARM = 0.05  # a proposed guardrail tolerates at most 5% relative harm until the owner says otherwise
SRM_ALPHA = 0.001  # a split "looks planned" when the sample-ratio test at this level would not flag it

_UNIT_WORDS = {"id", "uid", "uuid", "user", "userid", "unit", "unitid", "customer", "customerid", "account",
               "accountid", "member", "memberid", "visitor", "visitorid", "client", "clientid", "person",
               "participant", "subject", "household", "device", "deviceid", "key"}
# the words that name an assignment column, strongest first: "arm" beats "group" when a table has both
_ARM_WORDS = ({"arm", "arms", "variant", "variation", "treatment", "bucket", "assignment", "assigned"},
              {"group", "cohort", "condition", "branch", "treat", "treated", "experience", "cell"})
_CONTROL_LABELS = ("control", "ctrl", "baseline", "base", "a", "default", "holdout", "0", "c", "off", "none")
_HARM_STEMS = ("unsubscri", "churn", "complain", "complaint", "error", "latenc", "cost", "bounce", "crash", "refund",
               "cancel", "uninstall", "abandon", "timeout", "spam", "dislike", "block", "fail")
_METRIC_STEMS = ("revenue", "session", "click", "conver", "order", "purchas", "spend", "sales", "gmv", "booking",
                 "signup", "subscri", "retain", "retention", "engag", "active", "view", "pageview", "watch", "ctr",
                 "rate", "count", "profit", "ltv", "value", "outcome", "success", "reward", "upgrade", "activation",
                 "activated", "minutes", "time_spent", "duration", "score", "margin", "income", "deposit", "transact")
_PROPENSITY_NAMES = {"p", "propensity", "propensity_score", "pscore", "prob", "probability", "assignment_prob",
                     "assignment_probability", "p_assign", "p_assigned"}


def propose_spec(frame: pd.DataFrame, name: str, data: str, *, partial: bool = False) -> dict[str, Any]:
    """A spec for ``frame`` and why: ``{"spec": spec dict (TOML shape), "notes": [{"field", "reason"}, ...]}``.

    Parameters
    ----------
    frame
        The table as :func:`pex.experiment.data.read_table` reads it.
    name
        The experiment name (see :func:`experiment_name` to make one from a file name).
    data
        The spec's ``data`` entry (the file's path relative to where the spec will live).
    partial
        When no column can be the unit or the arm, or none reads like a metric, no spec could be proposed that would
        load: by default that raises a :class:`~pex.errors.DataError` (with ``field``). With ``partial``, the
        proposal leaves what it could not guess empty ("" or no metric) and adds ``"errors"``:
        ``[{"field", "message", "hint"}]``, for a form in which the owner fills it in.
    """
    notes: list[dict[str, str]] = []
    errors: list[DataError] = []

    def note(field: str, reason: str) -> None:
        notes.append({"field": field, "reason": reason})

    def attempt(guess, *args, empty):
        try:
            return guess(*args)
        except DataError as exc:
            if not partial:
                raise
            errors.append(exc)
            return empty

    if frame.shape[0] == 0:
        raise DataError("the table has a header but no rows", "export the experiment's rows, one per unit", field="")
    columns: list[str] = []
    for col in frame.columns:
        char = unsafe_character(str(col))
        if not isinstance(col, str) or char is not None:
            note("features", f"column {str(col)!r} is left out: its name holds {describe(char or '?')}, which a name "
                             "may not; rename it in the file to use it")
            continue
        columns.append(col)

    unit = attempt(_unit, frame, columns, note, empty="")
    arm = attempt(_arm, frame, [c for c in columns if c != unit], note, empty="")
    arms: list[str] = []
    counts = pd.Series(dtype="int64")
    control = ""
    if arm:
        counts = as_text(frame[arm]).str.strip().str.normalize("NFC").value_counts(dropna=True)
        arms = sorted(counts.index, key=lambda a: (-int(counts[a]), a))
        if len(arms) < 2:
            attempt(_single_arm, arm, arms, empty=None)
        else:
            control = _control(arms, counts, arm, note)

    rest = [c for c in columns if c not in (unit, arm)]
    propensity = _propensity(frame, rest, note)
    if propensity:
        rest.remove(propensity)
    metrics = attempt(_metrics, frame, rest, note, empty={})
    metric_columns = {m["column"] if "column" in m else n for n, m in metrics.items()}
    features = _features(frame, [c for c in rest if c not in metric_columns], note)

    spec: dict[str, Any] = {"name": name, "data": data, "unit": unit, "arm": arm, "control": control}
    if features:
        spec["features"] = features
    if propensity:
        spec["propensity"] = propensity
    if control:
        allocation = _allocation(counts, arms, control)
        if allocation is None:
            shares = ", ".join(f"{a} {counts[a] / counts.sum():.1%}" for a in arms)
            note("allocation", f"left out: the observed shares ({shares}) do not look like a planned split, so pex "
                               "will use them as they are; add the planned shares if you know them")
        else:
            spec["allocation"] = allocation
            note("allocation", "the planned split that the observed shares ("
                 + ", ".join(f"{a} {int(counts[a]):,}" for a in arms) + ") are consistent with; "
                 "correct it if the plan was different, since the sample-ratio check compares against it")
    spec["metrics"] = metrics
    out: dict[str, Any] = {"spec": spec, "notes": notes}
    if partial:
        out["errors"] = [{"field": e.field or "", "message": e.message, "hint": e.hint} for e in errors]
    return out


def _single_arm(arm: str, arms: list[str]) -> None:
    raise DataError(f"column {arm!r} holds a single arm label {arms[0]!r}" if arms else f"column {arm!r} is empty",
                    "an experiment needs a control and at least one other arm; export every arm's rows", field="arm")


def experiment_name(text: str) -> str:
    """An experiment name ([a-z0-9_-], at most 64 characters) made from ``text`` (e.g. a file's stem)."""
    slug = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_-")[:64].strip("_-")
    return slug if NAME_PATTERN.fullmatch(slug) else "experiment"


def _words(name: str) -> list[str]:
    """A column name's words: ``"Customer ID"`` -> ["customer", "id"], ``"userId"`` -> ["user", "id"]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def _key(name: str) -> str:
    return "_".join(_words(name))


def _is_labelish(series: pd.Series) -> bool:
    """Text, integer or boolean: a column that can hold ids or arm labels (floats cannot, dates are not labels)."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        return True
    if pd.api.types.is_float_dtype(series):
        values = series.dropna()
        return bool(len(values)) and bool((values % 1 == 0).all())
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)


def _unique(series: pd.Series) -> bool:
    return bool(series.notna().all()) and not as_text(series).str.strip().duplicated().any()


def _unit(frame: pd.DataFrame, columns: list[str], note) -> str:
    named = [c for c in columns if set(_words(c)) & _UNIT_WORDS or _key(c).endswith("_id")]
    for col in named:
        if _is_labelish(frame[col]) and _unique(frame[col]):
            note("unit", f"{col!r} is named like an id and holds a different value in every row")
            return col
    for col in columns:
        if _is_labelish(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]) and _unique(frame[col]):
            note("unit", f"{col!r} is the first column with a different value in every row (no column is named "
                         "like an id): a guess")
            return col
    if named:
        col = named[0]
        ids = as_text(frame[col]).str.strip()
        repeated = ids[ids.duplicated(keep=False) & ids.notna()].unique()
        missing = int(ids.isna().sum())
        what = (f"repeats {len(repeated):,} ids (e.g. {', '.join(repr(str(i)) for i in repeated[:3])})" if len(repeated)
                else f"has {missing:,} empty cells")
        raise DataError(f"no column holds a unique id per row: {col!r} {what}",
                        "each unit must appear in exactly one row: aggregate per unit or remove the repeated rows",
                        field="unit")
    raise DataError("no column holds a unique id per row, so pex cannot tell which column is the unit",
                    "add a column with one id per unit (e.g. user_id), one row per unit", field="unit")


def _arm(frame: pd.DataFrame, columns: list[str], note) -> str:
    for words in _ARM_WORDS:
        for col in columns:
            if set(_words(col)) & words and _is_labelish(frame[col]):
                n = frame[col].nunique(dropna=True)
                if 1 <= n <= 20:  # one label is a named arm column all the same: the caller says it needs two
                    note("arm", f"{col!r} is named like an assignment and holds {n} labels")
                    return col
    candidates = []
    for col in columns:
        series = frame[col]
        if not _is_labelish(series) or series.isna().any():
            continue
        counts = as_text(series).str.strip().value_counts()
        if 2 <= len(counts) <= 6 and \
                _allocation(counts, list(counts.index), str(counts.index[0]), equal_only=True) is not None:
            candidates.append((len(counts), columns.index(col), col))
    if candidates:
        n, _, col = min(candidates)
        note("arm", f"{col!r} holds {n} labels in about equal shares (no column is named like an assignment, e.g. "
                    "arm or variant): a guess, check it")
        return col
    raise DataError(
        "no column looks like the assigned arm: none is named like one (arm, variant, group, treatment, bucket) "
        "and none holds a few labels in about equal shares",
        "add a column with each unit's assigned arm (e.g. arm = control / treatment), or write the spec by hand "
        "(pex init writes one to start from when the file has such a column)",
        field="arm",
    )


def _control(arms: list[str], counts: pd.Series, arm: str, note) -> str:
    by_label = {a.strip().lower(): a for a in arms}
    for label in _CONTROL_LABELS:
        if label in by_label:
            note("control", f"{by_label[label]!r} is named like a control arm")
            return by_label[label]
    for a in arms:
        if any(w in ("control", "baseline", "holdout") for w in _words(a)):
            note("control", f"{a!r} is named like a control arm")
            return a
    note("control", f"no label in {arm!r} is named like a control arm, so the most common one ({arms[0]!r}, "
                    f"{int(counts[arms[0]]):,} rows) is a guess: set control to the arm the others are compared with")
    return arms[0]


def _propensity(frame: pd.DataFrame, columns: list[str], note) -> str | None:
    for col in columns:
        if _key(col) in _PROPENSITY_NAMES and pd.api.types.is_numeric_dtype(frame[col]):
            values = frame[col].dropna()
            if len(values) and bool(((values > 0) & (values <= 1)).all()):
                note("propensity", f"{col!r} is named like an assignment probability and holds values in (0, 1]")
                return col
    return None


def _stem_match(words: Iterable[str], stems: tuple[str, ...]) -> str | None:
    for w in words:
        for stem in stems:
            if w.startswith(stem):  # a prefix of a word: "conversions", "churned"; never inside one ("account")
                return stem
    return None


def _metrics(frame: pd.DataFrame, columns: list[str], note) -> dict[str, dict[str, Any]]:
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]  # booleans included (0/1 outcomes)
    pre_of = {}
    for col in numeric:
        key = _key(col)
        for base in (key[:-4] if key.endswith("_pre") else None, key[4:] if key.startswith("pre_") else None):
            if base:
                pre_of.setdefault(base, col)
    pres = set(pre_of.values())
    found: list[tuple[str, str, str]] = []  # (column, goal, stem)
    for col in numeric:
        if col in pres:
            continue
        words = _words(col)
        harm = _stem_match(words, _HARM_STEMS)
        good = _stem_match(words, _METRIC_STEMS)
        if harm:
            found.append((col, "decrease", harm))
        elif good:
            found.append((col, "increase", good))
    if not found:
        raise DataError(
            "no numeric column reads like an outcome metric (e.g. revenue, sessions, clicks, conversions, *_count, "
            "churn, complaints)",
            "rename the outcome columns so they say what they measure, or write the spec's [metrics] by hand",
            field="metrics",
        )
    metrics: dict[str, dict[str, Any]] = {}
    increase = [c for c, goal, _ in found if goal == "increase"]
    primary = increase[0] if increase else found[0][0]
    for col, goal, stem in found:
        name = _metric_name(col, metrics)
        entry: dict[str, Any] = {}
        if name != col:
            entry["column"] = col
        entry["goal"] = goal
        field = f"metrics.{name}"
        if col == primary:
            entry["role"] = "primary"
            why = "the first metric to increase" if goal == "increase" else "no metric reads like one to increase"
            note(field, f"{col!r} reads like an outcome ({stem!r}): goal {goal}, primary ({why})")
        elif goal == "decrease":
            entry["role"] = "guardrail"
            entry["max_harm"] = DEFAULT_MAX_HARM
            note(field, f"{col!r} reads like a harm ({stem!r}): goal decrease, a guardrail that tolerates at most "
                        f"{DEFAULT_MAX_HARM:.0%} relative harm (the default; set max_harm to your limit)")
        else:
            entry["role"] = "secondary"
            note(field, f"{col!r} reads like an outcome ({stem!r}): goal increase, secondary")
        pre = pre_of.get(_key(col)) or pre_of.get(_key(name))
        if pre:
            entry["pre"] = pre
            note(f"{field}.pre", f"{pre!r} is named as {col!r} before the experiment: used to reduce variance (CUPED)")
        metrics[name] = entry
    return metrics


def _metric_name(col: str, taken: dict[str, Any]) -> str:
    """A metric name made from its column: the column itself when it is a plain lowercase word, else its words."""
    name = col if re.fullmatch(r"[a-z0-9_]+", col) else _key(col)
    if not name or name in taken:
        name = f"metric_{len(taken) + 1}"
    return name


def _features(frame: pd.DataFrame, columns: list[str], note) -> list[str]:
    features, left = [], []
    for col in columns:
        series = frame[col]
        if series.nunique(dropna=True) <= 1:
            left.append(f"{col!r} (the same value in every row)")
        elif pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
            left.append(f"{col!r} (dates; derive a number from them to use them)")
        elif not pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series) \
                and len(series) > 20 and _unique(series):
            left.append(f"{col!r} (a different text in every row: an id, not a feature)")
        else:
            features.append(col)
    reason = (f"the {len(features)} other columns, describing units before the experiment; the models use them to find "
              "who gains and who is harmed") if features else "no column is left to describe units"
    if left:
        reason += "; left out: " + ", ".join(left)
    note("features", reason)
    return features


def _allocation(counts: pd.Series, arms: list[str], control: str, *, equal_only: bool = False) -> dict[str, float] | None:
    """The planned-looking split the observed ``counts`` are consistent with, control first; None when none is.

    The plans: equal shares; equal shares in whole percents, the extra ones to control first (0.34 / 0.33 / 0.33);
    the observed shares rounded to 5%. The one the counts fit best is chosen; a finer grid would make any split
    look planned. ``equal_only`` tries the equal splits alone (for telling an unnamed arm column from a feature:
    a country's shares can sit on a 5% grid too).
    """
    order = [control, *[a for a in arms if a != control]]
    observed = np.array([float(counts[a]) for a in order])
    total = observed.sum()
    k = len(order)
    percents = np.full(k, 100 // k)
    percents[: 100 - percents.sum()] += 1
    plans = [np.full(k, 1.0 / k), percents / 100]
    grid = np.round(observed / total / 0.05) * 0.05
    if not equal_only and (grid > 0).all() and abs(grid.sum() - 1.0) < 1e-9:
        plans.append(grid)
    p_values = [float(stats.chisquare(observed, plan * total).pvalue) for plan in plans]
    best = int(np.argmax(p_values))  # the plan closest to what was observed (the first, simplest, on a tie)
    if p_values[best] < SRM_ALPHA:
        return None
    return {a: round(float(share), 4) for a, share in zip(order, plans[best])}
