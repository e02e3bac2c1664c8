"""The tree kind: a shallow if-else tree over features that needs no model to serve.

Node semantics:

* ``{"feature", "op": "<=", "value": number, "left", "right"}``: numeric test;
* ``{"feature", "op": "in", "value": [labels], "left", "right"}``: category test,
  a value not in the list (including a category never seen) goes right;
* ``"missing": "left" | "right"`` (default ``"right"``) is where a unit goes
  when the feature is missing, not a number, or absent from the input
  altogether: a declared path, never an exception;
* leaves are ``{"arm": label}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pex.errors import DataError
from pex.experiment.data import as_text
from pex.names import check_name
from pex.policy.base import NAME_HINT, Policy, PolicyError

MAX_TREE_DEPTH = 12


@dataclass(frozen=True, kw_only=True)
class TreePolicy(Policy):
    """A shallow if-else tree over features (node semantics in the module docstring); serves without a model."""

    kind: ClassVar[str] = "tree"
    document_keys: ClassVar[tuple[str, ...]] = ("tree",)

    tree: dict | None = None

    def _check(self) -> None:
        if not isinstance(self.tree, dict):
            raise PolicyError("a tree policy needs a 'tree' object", 'e.g. "tree": {"arm": "control"}')
        _validate_node(self.tree, self.arms, "tree", 0)

    def _document_fields(self) -> dict[str, Any]:
        return {"tree": self.tree}

    @property
    def complexity(self) -> int:
        """The tree's depth (the depth its distillation asked for, if any)."""
        return int(self.lineage.get("distilled_depth") or _depth(self.tree))

    @property
    def description(self) -> str:
        """Like "a decision tree of depth 3"."""
        return f"a decision tree of depth {self.complexity}"

    def summary_fields(self) -> dict[str, Any]:
        """The tree itself: small, and the report draws it."""
        return {"tree": self.tree}

    @property
    def features(self) -> list[str]:
        """The features the tree's splits test, in reading order."""
        found: list[str] = []
        stack = [self.tree]
        while stack:
            node = stack.pop()
            if "feature" in node:
                if node["feature"] not in found:
                    found.append(node["feature"])
                stack += [node["right"], node["left"]]
        return found

    def categorical_features(self) -> list[str]:
        """Features some split tests by category membership."""
        return [f for f in self.features if any(op == "in" for op in self._ops(f))]

    def _ops(self, feature: str) -> set[str]:
        ops, stack = set(), [self.tree]
        while stack:
            node = stack.pop()
            if "feature" in node:
                if node["feature"] == feature:
                    ops.add(node["op"])
                stack += [node["left"], node["right"]]
        return ops

    def _check_values(self, frame: pd.DataFrame, source: str) -> None:
        for feature in self.features:
            if "<=" in self._ops(feature):
                col = frame[feature]
                values = pd.to_numeric(col, errors="coerce")
                bad = col.notna() & values.isna()
                if bad.any():
                    raise DataError(f"feature {feature!r} in {source} must be numeric but has text such as {str(col[bad].iloc[0])!r}",
                                    "fix those cells or leave them empty (missing values follow the policy's missing path)")

    def greedy_arms(self, frame: pd.DataFrame, effects: dict[tuple[str, str], np.ndarray] | None = None) -> np.ndarray:
        """Each unit's leaf arm."""
        n = len(frame)
        index = {a: i for i, a in enumerate(self.arms)}
        out = np.empty(n, dtype=np.int64)
        columns: dict = {}
        stack: list[tuple[dict, np.ndarray]] = [(self.tree, np.arange(n))]
        while stack:
            node, rows = stack.pop()
            if "arm" in node:
                out[rows] = index[node["arm"]]
                continue
            if rows.size == 0:
                continue
            goes_left = self._test(node, frame, rows, columns)
            stack.append((node["left"], rows[goes_left]))
            stack.append((node["right"], rows[~goes_left]))
        return out

    def greedy_arms_of_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Each record's leaf arm by walking the tree in Python: for a few units far cheaper than a frame, and
        the same tests as :meth:`_test` (missing takes the declared side; a label not listed goes right)."""
        index = {a: i for i, a in enumerate(self.arms)}
        out = np.empty(len(records), dtype=np.int64)
        for i, record in enumerate(records):
            node = self.tree
            while "arm" not in node:
                value = record.get(node["feature"])
                if value is None:
                    left = node.get("missing", "right") == "left"
                elif node["op"] == "<=":
                    left = value <= node["value"]
                else:
                    left = value in node["value"]
                node = node["left"] if left else node["right"]
            out[i] = index[node["arm"]]
        return out

    def _test(self, node: dict, frame: pd.DataFrame, rows: np.ndarray, columns: dict) -> np.ndarray:
        feature, op = node["feature"], node["op"]
        missing_left = node.get("missing", "right") == "left"
        if feature not in frame.columns:
            return np.full(rows.size, missing_left)
        if op == "<=":
            if feature not in columns:  # converted once per call, and only for the rows' column
                columns[feature] = _numeric_column(frame[feature])
            v = columns[feature][rows]
            return np.where(np.isnan(v), missing_left, v <= node["value"])
        # category test: membership over the whole column in one vectorised pass
        key = (feature, tuple(node["value"]))
        if key not in columns:
            labels = _label_column(frame[feature])
            columns[key] = (labels.isin(node["value"]).to_numpy(dtype=bool, na_value=False),
                            labels.isna().to_numpy(dtype=bool))
        member, missing = columns[key]
        return np.where(missing[rows], missing_left, member[rows])


def _depth(node: dict | None) -> int:
    if not node or "arm" in node:
        return 0
    return 1 + max(_depth(node.get("left")), _depth(node.get("right")))


def _numeric_column(series: pd.Series) -> np.ndarray:
    """Floats, NaN where missing or not a number."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _label_column(series: pd.Series) -> pd.Series:
    """Labels as strings (whole floats as integers: 1.0 -> "1"), missing as NA."""
    if pd.api.types.is_string_dtype(series) and not pd.api.types.is_object_dtype(series):
        return series
    return as_text(series)



def _validate_node(node: Any, arms: list[str], path: str, depth: int) -> None:
    if depth > MAX_TREE_DEPTH:
        raise PolicyError(f"policy tree is deeper than {MAX_TREE_DEPTH} at {path}", "policies are shallow trees; prune it")
    if not isinstance(node, dict):
        raise PolicyError(f"policy tree node {path} must be an object",
                          'a node is {"arm": ...} or {"feature", "op", "value", "left", "right"}')
    if "arm" in node:
        if set(node) != {"arm"} or node["arm"] not in arms:
            raise PolicyError(f"policy leaf {path} must be {{\"arm\": one of {arms}}}, got {node!r}", "fix the leaf's arm label")
        return
    for key in ("feature", "op", "value", "left", "right"):
        if key not in node:
            raise PolicyError(f"policy tree node {path} is missing {key!r}", "a split needs feature, op, value, left and right")
    extra = sorted(set(node) - {"feature", "op", "value", "left", "right", "missing"})
    if extra:
        raise PolicyError(f"policy tree node {path} has unknown key {extra[0]!r}", "allowed: feature, op, value, left, right, missing")
    if not isinstance(node["feature"], str) or not node["feature"]:
        raise PolicyError(f"policy tree node {path}: feature must be a column name", 'e.g. "feature": "tenure_days"')
    check_name(node["feature"], f"policy tree node {path}: feature", PolicyError, NAME_HINT)
    if node["op"] == "<=":
        v = node["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise PolicyError(f"policy tree node {path}: '<=' needs a finite number, got {v!r}", 'e.g. "value": 30.5')
    elif node["op"] == "in":
        v = node["value"]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise PolicyError(f"policy tree node {path}: 'in' needs a list of labels, got {v!r}", 'e.g. "value": ["ios"]')
        for label in v:
            check_name(label, f"policy tree node {path}: category label", PolicyError, NAME_HINT)
    else:
        raise PolicyError(f"policy tree node {path}: op {node['op']!r} is not '<=' or 'in'", 'use "<=" for numbers, "in" for categories')
    if node.get("missing", "right") not in ("left", "right"):
        raise PolicyError(f"policy tree node {path}: missing must be 'left' or 'right'", "declare where missing values go")
    _validate_node(node["left"], arms, f"{path}.left", depth + 1)
    _validate_node(node["right"], arms, f"{path}.right", depth + 1)
