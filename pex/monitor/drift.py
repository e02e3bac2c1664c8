"""Feature drift: a fit's training profile of its features, and how far served traffic has moved from it.

:func:`profile` summarises the training units once, at fit time (stored with the fit as ``profile.json``);
:func:`drift` compares the features of served decisions with it. Numeric features are binned at the training
deciles and compared by the population-stability index (PSI); categorical ones by the Jensen-Shannon distance of
their category shares (base 2, so 0..1); both by the rise of the missing rate, and categoricals by the share of
served values in categories training never had. Pure functions over frames: no store here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

PROFILE_FORMAT = "pex.profile/1"
PROFILE_FILE = "profile.json"
QUANTILES = np.linspace(0.1, 0.9, 9)  # the interior decile edges; the outer bins are open (-inf and +inf ends)
TOP_CATEGORIES = 50  # categories kept by name; the rarer ones are pooled in the profile's "other" share
EPSILON = 1e-4  # the share given to an empty bin, so that PSI (a log ratio) stays finite
MIN_DECISIONS = 200  # below this many served decisions nothing is judged: shares of a few units are noise
TOO_FEW = "too few decisions"
NOT_LOGGED = "not logged"  # the decision log keeps only the features the live policy reads

DEFAULT_THRESHOLDS = {"psi": 0.2, "js": 0.1, "missing_increase": 0.05, "unseen": 0.01, "arm_share_psi": 0.2}


def profile(frame: pd.DataFrame, features: list[str], kinds: Mapping[str, str],
            effects: Mapping[tuple[str, str], np.ndarray] | None = None) -> dict[str, Any]:
    """The training profile of ``features`` over the rows of ``frame`` (the fit's training units).

    A numeric feature keeps its decile ``edges`` (unique interior cut points; the bins are (-inf, e1], (e1, e2],
    ..., (ek, +inf)), the training ``shares`` of those bins (of its non-missing values) and its ``missing_rate``;
    a categorical one its ``TOP_CATEGORIES`` most frequent ``categories`` with their shares, the pooled share of the
    rest (``other``) and its ``missing_rate``. ``effects`` (per (metric, arm): the fit's out-of-fold predicted
    effects) are kept as their deciles, so a later check can see the predictions' distribution move too.
    """
    out: dict[str, Any] = {"format": PROFILE_FORMAT, "n": len(frame), "features": {}}
    for name in features:
        kind = kinds[name]
        series = frame[name] if name in frame.columns else pd.Series([None] * len(frame), dtype=object)
        if kind == "numeric":
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            present = values[~np.isnan(values)]
            edges = np.unique(np.quantile(present, QUANTILES)) if len(present) else np.array([])
            out["features"][name] = {"kind": "numeric", "edges": edges.tolist(),
                                     "shares": _bin_shares(present, edges).tolist(),
                                     "missing_rate": _rate(len(values) - len(present), len(values))}
        else:
            labels = _labels(series)
            present = labels.dropna()
            counts = present.value_counts()
            top = counts.iloc[:TOP_CATEGORIES]
            n = max(len(present), 1)
            out["features"][name] = {"kind": "categorical",
                                     "categories": {str(k): float(v / n) for k, v in top.items()},
                                     "other": float(counts.iloc[TOP_CATEGORIES:].sum() / n),
                                     "missing_rate": _rate(len(labels) - len(present), len(labels))}
    if effects:
        out["effects"] = [{"metric": metric, "arm": arm,
                           "deciles": np.quantile(np.asarray(values, dtype=np.float64), QUANTILES).tolist()}
                          for (metric, arm), values in effects.items() if len(values)]
    return out


def drift(profile: Mapping[str, Any], served: pd.DataFrame, thresholds: Mapping[str, float] | None = None,
          logged: Collection[str] | None = None) -> dict[str, Any]:
    """Each profiled feature of ``served`` (one row per served decision, a column per feature; an absent column
    is all missing) against the training ``profile``, flagged by ``thresholds`` (:data:`DEFAULT_THRESHOLDS` for
    any not given).

    Returns ``{"n", "judged", "thresholds", "epsilon", "features": [...], "drifted": [names]}``; each feature has
    ``psi`` (numeric and categorical), ``js`` (categorical), ``missing_rate`` and ``training_missing_rate``,
    ``unseen_rate`` (categorical), ``empty_bins`` (the bins given :data:`EPSILON` because training or traffic left
    them empty), ``flags`` (codes ``psi``, ``js``, ``missing``, ``unseen``) and ``drifted``. With fewer than
    :data:`MIN_DECISIONS` rows the figures are shown but nothing is flagged (``judged`` false, ``verdict``
    :data:`TOO_FEW`). ``logged``: the features the decision log holds (a server logs those its policy reads); any
    other profiled feature is listed with verdict :data:`NOT_LOGGED` and no figures (default: every feature).
    """
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    n = len(served)
    judged = n >= MIN_DECISIONS
    rows = []
    for name, prof in profile["features"].items():
        if logged is not None and name not in logged:
            rows.append({"feature": name, "kind": prof["kind"], "psi": None, "js": None, "missing_rate": None,
                         "training_missing_rate": prof["missing_rate"], "unseen_rate": None, "empty_bins": [],
                         "flags": [], "drifted": False, "verdict": NOT_LOGGED})
            continue
        series = served[name] if name in served.columns else pd.Series([None] * n, dtype=object)
        row = (_numeric_drift if prof["kind"] == "numeric" else _categorical_drift)(prof, series)
        row = {"feature": name, "kind": prof["kind"], **row, "training_missing_rate": prof["missing_rate"]}
        flags = []
        if judged:
            if prof["kind"] == "numeric" and row["psi"] is not None and row["psi"] > limits["psi"]:
                flags.append("psi")
            if row["js"] is not None and row["js"] > limits["js"]:
                flags.append("js")
            if row["missing_rate"] - prof["missing_rate"] > limits["missing_increase"]:
                flags.append("missing")
            if row["unseen_rate"] is not None and row["unseen_rate"] > limits["unseen"]:
                flags.append("unseen")
        row.update(flags=flags, drifted=bool(flags),
                   verdict=("drifted" if flags else "ok") if judged else TOO_FEW)
        rows.append(row)
    return {"n": n, "judged": judged, "min_decisions": MIN_DECISIONS, "thresholds": limits, "epsilon": EPSILON,
            "features": rows, "drifted": [r["feature"] for r in rows if r["drifted"]]}


def psi(expected: np.ndarray, actual: np.ndarray) -> tuple[float, list[int]]:
    """Population-stability index of ``actual`` shares against ``expected`` ones (same bins), and the bins whose
    share was raised to :data:`EPSILON` on either side (an empty bin would make the log ratio infinite)."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    empty = np.flatnonzero((expected < EPSILON) | (actual < EPSILON)).tolist()
    e = np.maximum(expected, EPSILON)
    a = np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e))), empty


def _numeric_drift(prof: Mapping[str, Any], series: pd.Series) -> dict[str, Any]:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    present = values[~np.isnan(values)]
    edges = np.asarray(prof["edges"], dtype=np.float64)
    value = None
    empty: list[str] = []
    if len(present):
        value, bins = psi(np.asarray(prof["shares"]), _bin_shares(present, edges))
        empty = [_bin_label(edges, i) for i in bins]
    return {"psi": value, "js": None, "missing_rate": _rate(len(values) - len(present), len(values)),
            "unseen_rate": None, "empty_bins": empty}


def _categorical_drift(prof: Mapping[str, Any], series: pd.Series) -> dict[str, Any]:
    labels = _labels(series)
    present = labels.dropna()
    known = list(prof["categories"])
    n = len(present)
    js = value = unseen = None
    empty: list[str] = []
    if n:
        counts = present.value_counts()
        served_known = np.array([counts.get(k, 0) for k in known], dtype=np.float64) / n
        served_other = max(0.0, 1.0 - float(served_known.sum()))
        expected = np.array([*prof["categories"].values(), prof["other"]])
        actual = np.array([*served_known, served_other])
        # with every training category named (other = 0) any other label is unseen; when training had more than
        # TOP_CATEGORIES, the rare ones are pooled, so only traffic beyond training's pooled share counts as unseen
        unseen = max(0.0, served_other - float(prof["other"]))
        js = float(jensenshannon(expected, actual, base=2))
        value, bins = psi(expected, actual)
        empty = [(known[i] if i < len(known) else "other") for i in bins]
    return {"psi": value, "js": js, "missing_rate": _rate(len(labels) - n, len(labels)), "unseen_rate": unseen,
            "empty_bins": empty}


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins (-inf, e1], (e1, e2], ..., (ek, +inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1).astype(np.float64)
    return counts / max(len(values), 1)


def _bin_label(edges: np.ndarray, i: int) -> str:
    low = f"{edges[i - 1]:g}" if i > 0 else "-inf"
    high = f"{edges[i]:g}" if i < len(edges) else "+inf"
    return f"({low}, {high}]" if i < len(edges) else f"({low}, {high})"


def _labels(series: pd.Series) -> pd.Series:
    """Category labels as stripped text (as the feature encoder reads them), missing as NA; an empty label is missing."""
    def label(v: Any) -> Any:
        text = None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
        return text if text else np.nan
    return pd.Series([label(v) for v in series.astype(object)], index=series.index, dtype=object)


def _rate(k: int, n: int) -> float:
    return float(k / n) if n else 0.0
