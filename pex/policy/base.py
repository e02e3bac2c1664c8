"""Decision policies as data: the ``pex.policy/1`` document and its vectorised evaluator.

A policy maps units to a distribution over arms, shape (n_units, n_arms).
Policies are JSON documents (docs/policy-document.md) that can be
reviewed in a diff and evaluated without executing anything: plain JSON in, numpy out.

Kinds: ``constant`` (one arm for everyone; with ``exploration = 1`` the
uniform random policy), ``tree`` (a shallow if-else tree that needs no model
to serve) and ``value`` (the arm with the best weighted sum of predicted
effects; the document names its stored effect model (a JSON manifest plus LightGBM
text models, nothing executable) and holds the
weights, see :mod:`pex.policy.value`). Tree node semantics:

* ``{"feature", "op": "<=", "value": number, "left", "right"}``: numeric test;
* ``{"feature", "op": "in", "value": [labels], "left", "right"}``: category test,
  a value not in the list (including a category never seen) goes right;
* ``"missing": "left" | "right"`` (default ``"right"``) is where a unit goes
  when the feature is missing, not a number, or absent from the input
  altogether: a declared path, never an exception;
* leaves are ``{"arm": label}``.

A value policy routes missing or unknown feature values down the effect
models' own learned missing-value branches.

``exploration`` spreads that probability mass uniformly over all arms, so every
decision has a known propensity and later rounds can be evaluated off-policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import DataError, PexError
from pex.experiment.data import as_text

FORMAT = "pex.policy/1"
KINDS = ("constant", "tree", "value")
MAX_TREE_DEPTH = 12

# Kinds defined in their own modules register how they score units and check their document here, so this
# module (what every policy needs) does not import them: pex.policy.value registers "value" on import, and
# importing pex.policy.base imports the pex.policy package, which imports pex.policy.value.
_SCORERS: dict[str, Callable[[Policy, pd.DataFrame], np.ndarray]] = {}
_VALIDATORS: dict[str, Callable[[Policy], None]] = {}


def register_kind(kind: str, *, scores: Callable[[Policy, pd.DataFrame], np.ndarray],
                  validate: Callable[[Policy], None]) -> None:
    """Make ``kind`` decide by the argmax of ``scores`` per unit and check its documents with ``validate``."""
    _SCORERS[kind] = scores
    _VALIDATORS[kind] = validate


class PolicyError(PexError):
    """A policy document is malformed."""

    status = 422


@dataclass
class Policy:
    """A ``constant``, ``tree`` or ``value`` policy (see the module docstring).

    A value policy needs its effect model bound (``model``) to decide;
    :meth:`from_document` binds it through a loader.
    """

    name: str
    arms: list[str]
    default_arm: str
    kind: str = "constant"
    exploration: float = 0.0
    tree: dict | None = None
    experiment: str = ""
    version: int = 1
    trained_at: str = ""
    lineage: dict = field(default_factory=dict)
    value_model: dict | None = None
    model: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def features(self) -> list[str]:
        """The feature columns this policy reads."""
        if self.kind == "value":
            return list(self.model.encoder.columns) if self.model is not None else []
        found: list[str] = []
        stack = [self.tree] if self.tree else []
        while stack:
            node = stack.pop()
            if "feature" in node:
                if node["feature"] not in found:
                    found.append(node["feature"])
                stack += [node["right"], node["left"]]
        return found

    def categorical_features(self) -> list[str]:
        """Features read as labels (to be loaded as text, so "007" stays "007")."""
        if self.kind == "value":
            enc = self.model.encoder if self.model is not None else None
            return [c for c in enc.columns if enc.kinds[c] == "categorical"] if enc else []
        return [f for f in self.features if any(op == "in" for op in self._ops(f))]

    def _ops(self, feature: str) -> set[str]:
        ops, stack = set(), [self.tree] if self.tree else []
        while stack:
            node = stack.pop()
            if "feature" in node:
                if node["feature"] == feature:
                    ops.add(node["op"])
                stack += [node["left"], node["right"]]
        return ops

    def check_frame(self, frame: pd.DataFrame, source: str = "the data") -> None:
        """Strict input check for batch files: every feature present, numbers where numbers are compared.

        Serving single units is lenient (missing values follow the declared
        path); in a file a missing column or text among numbers is a mistake.
        """
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise DataError(f"feature column {missing[0]!r} is missing from {source}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                            f"policy {self.name!r} reads {', '.join(self.features)}; add the column (empty cells are fine)")
        if self.kind == "value":
            self.model.encoder.transform(frame, strict=True)
            return
        for feature in self.features:
            if "<=" in self._ops(feature):
                col = frame[feature]
                values = pd.to_numeric(col, errors="coerce")
                bad = col.notna() & values.isna()
                if bad.any():
                    raise DataError(f"feature {feature!r} in {source} must be numeric but has text such as {str(col[bad].iloc[0])!r}",
                                    "fix those cells or leave them empty (missing values follow the policy's missing path)")

    # -- evaluation ------------------------------------------------------------------

    def greedy_arms(self, frame: pd.DataFrame) -> np.ndarray:
        """The arm index each unit gets before exploration, shape (n_units,)."""
        n = len(frame)
        index = {a: i for i, a in enumerate(self.arms)}
        if self.kind in _SCORERS:
            return np.argmax(_SCORERS[self.kind](self, frame), axis=1)
        if self.kind == "constant" or self.tree is None:
            return np.full(n, index[self.default_arm], dtype=np.int64)
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

    def action_probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of each arm for each unit, shape (n_units, n_arms); rows sum to 1."""
        k = len(self.arms)
        probs = np.full((len(frame), k), self.exploration / k)
        probs[np.arange(len(frame)), self.greedy_arms(frame)] += 1.0 - self.exploration
        return probs

    def decide(self, frame: pd.DataFrame, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw an arm per unit; returns (arm labels, propensity of the drawn arm)."""
        rng = rng or np.random.default_rng()
        greedy = self.greedy_arms(frame)
        k, n = len(self.arms), len(frame)
        explore = rng.uniform(size=n) < self.exploration
        chosen = np.where(explore, rng.integers(0, k, size=n), greedy)
        propensity = np.where(chosen == greedy, 1.0 - self.exploration + self.exploration / k, self.exploration / k)
        return np.asarray(self.arms, dtype=object)[chosen], propensity

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

    # -- documents -------------------------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        doc = {"format": FORMAT, "name": self.name, "version": self.version, "experiment": self.experiment,
               "kind": self.kind, "arms": list(self.arms), "default_arm": self.default_arm,
               "exploration": self.exploration}
        if self.tree is not None:
            doc["tree"] = self.tree
        if self.value_model is not None:
            doc["value_model"] = self.value_model
        doc["trained_at"] = self.trained_at
        doc["lineage"] = self.lineage
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_document(), indent=2)

    @classmethod
    def from_document(cls, doc: Any, load_model: Callable[[dict], Any] | None = None) -> Policy:
        """Validate a ``pex.policy/1`` document; ``load_model(value_model)`` returns the
        :class:`pex.hte.EffectModel` a value policy names (it is not needed for other kinds)."""
        if not isinstance(doc, dict):
            raise PolicyError("a policy document must be a JSON object", f'start from {{"format": "{FORMAT}", ...}}')
        if doc.get("format") != FORMAT:
            raise PolicyError(f"policy format is {doc.get('format')!r}, not {FORMAT!r}", f'set "format": "{FORMAT}"')
        known = {"format", "name", "version", "experiment", "kind", "arms", "default_arm", "exploration", "tree", "trained_at",
                 "lineage", "value_model"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise PolicyError(f"unknown policy key {unknown[0]!r}", f"allowed keys: {', '.join(sorted(known))}")
        for key in ("name", "arms", "default_arm"):
            if key not in doc:
                raise PolicyError(f"policy document is missing {key!r}", f"add {key!r} (see docs/policy-document.md)")
        model = None
        if doc.get("kind") == "value":
            if load_model is None:
                raise PolicyError(f"policy {doc['name']!r} is a value-model policy and needs its stored effect models",
                                  "evaluate it inside the workspace that built it (PEX_HOME), or use a tree policy")
            if not isinstance(doc.get("value_model"), dict):
                raise PolicyError("a value policy needs a 'value_model' object", "rebuild it with `pex policies NAME --rebuild`")
            model = load_model(doc["value_model"])
        return cls(name=doc["name"], arms=doc["arms"], default_arm=doc["default_arm"], kind=doc.get("kind", "constant"),
                   exploration=doc.get("exploration", 0.0), tree=doc.get("tree"), experiment=doc.get("experiment", ""),
                   version=doc.get("version", 1), trained_at=doc.get("trained_at", ""), lineage=doc.get("lineage", {}),
                   value_model=doc.get("value_model"), model=model)

    @classmethod
    def from_json(cls, text: str, load_model: Callable[[dict], Any] | None = None) -> Policy:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy file is not valid JSON: {exc}", "check quotes, commas and brackets") from None
        return cls.from_document(doc, load_model)


def constant_policy(arms: list[str], arm: str, exploration: float = 0.0, name: str | None = None) -> Policy:
    """Everyone gets ``arm`` (a baseline every comparison includes)."""
    return Policy(name=name or f"all-{arm}", arms=list(arms), default_arm=arm, kind="constant", exploration=exploration)


def uniform_policy(arms: list[str], name: str = "uniform-random") -> Policy:
    """Every arm with equal probability: exploration 1."""
    return Policy(name=name, arms=list(arms), default_arm=arms[0], kind="constant", exploration=1.0)


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


def _validate(p: Policy) -> None:
    if not isinstance(p.name, str) or not p.name:
        raise PolicyError("policy name must be a non-empty string", 'set "name", e.g. "notification_cadence-tree-d3"')
    if not isinstance(p.arms, list) or len(p.arms) < 1 or not all(isinstance(a, str) and a for a in p.arms):
        raise PolicyError("policy arms must be a non-empty list of arm labels", 'e.g. "arms": ["control", "daily"]')
    if len(set(p.arms)) != len(p.arms):
        raise PolicyError("policy arms list an arm more than once", "list each arm once")
    if p.default_arm not in p.arms:
        raise PolicyError(f"default_arm {p.default_arm!r} is not among the arms {p.arms}", "set default_arm to one of the arms")
    if p.kind not in KINDS:
        raise PolicyError(f"policy kind {p.kind!r} is not one of {', '.join(KINDS)}", 'use "kind": "constant", "tree" or "value"')
    if isinstance(p.exploration, bool) or not isinstance(p.exploration, (int, float)) or not 0.0 <= p.exploration <= 1.0:
        raise PolicyError(f"exploration must be a number from 0 to 1, got {p.exploration!r}", "e.g. 0.05 spreads 5% of decisions uniformly")
    p.exploration = float(p.exploration)
    if p.kind == "tree":
        if not isinstance(p.tree, dict):
            raise PolicyError("a tree policy needs a 'tree' object", 'e.g. "tree": {"arm": "control"}')
        _validate_node(p.tree, p.arms, "tree", 0)
    elif p.tree is not None:
        raise PolicyError(f"a {p.kind} policy has no 'tree'", 'remove "tree" or set "kind": "tree"')
    if p.kind in _VALIDATORS:
        _VALIDATORS[p.kind](p)
    elif p.value_model is not None:
        raise PolicyError(f"a {p.kind} policy has no 'value_model'", 'remove "value_model" or set "kind": "value"')


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
    if node["op"] == "<=":
        v = node["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise PolicyError(f"policy tree node {path}: '<=' needs a finite number, got {v!r}", 'e.g. "value": 30.5')
    elif node["op"] == "in":
        v = node["value"]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise PolicyError(f"policy tree node {path}: 'in' needs a list of labels, got {v!r}", 'e.g. "value": ["ios"]')
    else:
        raise PolicyError(f"policy tree node {path}: op {node['op']!r} is not '<=' or 'in'", 'use "<=" for numbers, "in" for categories')
    if node.get("missing", "right") not in ("left", "right"):
        raise PolicyError(f"policy tree node {path}: missing must be 'left' or 'right'", "declare where missing values go")
    _validate_node(node["left"], arms, f"{path}.left", depth + 1)
    _validate_node(node["right"], arms, f"{path}.right", depth + 1)
