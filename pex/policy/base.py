"""Decision policies as data: the ``pex.policy/1`` document and its vectorised evaluator.

A policy maps units to a distribution over arms, shape (n_units, n_arms).
Policies are JSON documents (docs/policy-document.md) that can be
reviewed in a diff and evaluated without executing anything: plain JSON in, numpy out.

Kinds: ``constant`` (one arm for everyone; with ``exploration = 1`` the
uniform random policy), ``tree`` (a shallow if-else tree that needs no model
to serve) and ``value`` (the arm with the best weighted sum of predicted
effects; the document names its stored effect model (a JSON manifest plus LightGBM
text models, nothing executable) and holds the
weights, see :mod:`pex.policy.value`). Each kind is a class registered by
subclassing :class:`Policy` (:class:`ConstantPolicy`, :class:`TreePolicy`,
:class:`pex.policy.value.ValuePolicy`) that owns its validation, features,
decisions, document keys and description; policies are frozen values.
Tree node semantics:

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
:meth:`Policy.decide` makes the draws reproducible: a keyed hash of the unit id
under a key made from the policy's name and version (:data:`DRAW_RULE`), the
hash the held-out split uses (:mod:`pex.experiment.split`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pex.errors import DataError, PexError
from pex.experiment.data import as_text
from pex.experiment.split import keyed_uniform, keyed_uniform_one

FORMAT = "pex.policy/1"
KINDS = ("constant", "tree", "value", "routing")
MAX_TREE_DEPTH = 12
COMMON_KEYS = ("format", "name", "version", "experiment", "kind", "arms", "default_arm", "exploration", "trained_at", "lineage")
DRAW_PERSON = b"pex-decide-v1"  # blake2b personalisation of the draw keys: no other pex hash can share them
DRAW_RULE = ("key = hex(blake2b-64(json [name, version, salt], person DRAW_PERSON)); "
             "u = (siphash(str(unit id), key) >> 11) / 2**53; "
             "explore when u < exploration and then take arm floor(u / exploration * n_arms), else the greedy arm")

# kind -> its class. Kinds defined in other modules register by subclassing Policy, so this module (what every
# policy needs) does not import them: importing pex.policy.base imports the pex.policy package, which imports
# pex.policy.value and so registers "value".
_REGISTRY: dict[str, type[Policy]] = {}


class PolicyError(PexError):
    """A policy document is malformed."""

    status = 422


def kind_class(kind: str) -> type[Policy] | None:
    """The registered class of policy kind ``kind`` (None if there is none)."""
    return _REGISTRY.get(kind)


class _PolicyType(type):
    """Lets ``Policy(..., kind="tree", ...)`` build the registered class of that kind, as the one class did before."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        kind = kwargs.pop("kind", getattr(cls, "kind", None) or "constant")
        target = (_REGISTRY.get(kind) if isinstance(kind, str) else None) if cls is Policy else cls
        if target is not None and target.kind != kind:
            raise PolicyError(f"a {target.kind} policy cannot have kind {kind!r}", f"build it with Policy(..., kind={kind!r})")
        own = {f.name for f in dataclasses.fields(target)} if target is not None else set()
        # the fields of other kinds: absent (None) is fine, a value is a document mixing kinds up
        foreign = [k for k in kwargs if k not in own and k in _kind_fields()]
        for key in [k for k in foreign if kwargs[k] is None]:
            del kwargs[key]
            foreign.remove(key)
        if target is None or foreign:
            _check_common(kwargs.get("name"), kwargs.get("arms"), kwargs.get("default_arm"), kwargs.get("exploration", 0.0))
            if target is None:
                raise PolicyError(f"policy kind {kind!r} is not one of {', '.join(KINDS)}",
                                  'use "kind": "constant", "tree", "value" or "routing"')
            owner = next(c.kind for c in _REGISTRY.values() if any(f.name == foreign[0] for f in dataclasses.fields(c)))
            raise PolicyError(f"a {kind} policy has no {foreign[0]!r}", f'remove "{foreign[0]}" or set "kind": "{owner}"')
        return super(_PolicyType, target).__call__(*args, **kwargs)


def _kind_fields() -> set[str]:
    common = {f.name for f in dataclasses.fields(Policy)}
    return {f.name for c in _REGISTRY.values() for f in dataclasses.fields(c)} - common


@dataclass(frozen=True, kw_only=True)
class Policy(metaclass=_PolicyType):
    """A policy of one of the registered kinds (see the module docstring): an immutable value.

    ``Policy(..., kind=...)`` and :meth:`from_document` build the class registered for the kind
    (:class:`ConstantPolicy`, :class:`TreePolicy`, :class:`pex.policy.value.ValuePolicy`);
    :meth:`replace` returns a changed copy.
    """

    kind: ClassVar[str] = ""
    document_keys: ClassVar[tuple[str, ...]] = ()  # the document keys this kind adds to COMMON_KEYS
    # what the kinds without them read as: callers written for the one Policy class read these on any policy
    tree: ClassVar[dict | None] = None
    value_model: ClassVar[dict | None] = None
    model: ClassVar[Any] = None

    name: str
    arms: list[str]
    default_arm: str
    exploration: float = 0.0
    experiment: str = ""
    version: int = 1
    trained_at: str = ""
    lineage: dict = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            _REGISTRY[cls.kind] = cls

    def __post_init__(self) -> None:
        if not self.kind:
            raise PolicyError("Policy is the base of the policy kinds", "build one with Policy(..., kind=...) or a kind's class")
        _check_common(self.name, self.arms, self.default_arm, self.exploration)
        object.__setattr__(self, "exploration", float(self.exploration))  # normalising its own construction
        self._check()

    def _check(self) -> None:
        """Validate the kind's own fields (raise :class:`PolicyError`)."""

    def replace(self, **changes: Any) -> Policy:
        """A copy with ``changes`` (field=value), validated again; a bound effect model is kept, not copied."""
        return dataclasses.replace(self, **changes)

    # -- what the policy reads ---------------------------------------------------------

    @property
    def features(self) -> list[str]:
        """The feature columns this policy reads."""
        return []

    def categorical_features(self) -> list[str]:
        """Features read as labels (to be loaded as text, so "007" stays "007")."""
        return []

    def check_frame(self, frame: pd.DataFrame, source: str = "the data") -> None:
        """Strict input check for batch files: every feature present, values of the type the policy compares.

        Serving single units is lenient (missing values follow the declared
        path); in a file a missing column or text among numbers is a mistake.
        """
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise DataError(f"feature column {missing[0]!r} is missing from {source}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                            f"policy {self.name!r} reads {', '.join(self.features)}; add the column (empty cells are fine)")
        self._check_values(frame, source)

    def _check_values(self, frame: pd.DataFrame, source: str) -> None:
        """The kind's strict check of the feature values in ``frame`` (raise :class:`DataError`)."""

    # -- description -----------------------------------------------------------------

    @property
    def single_arm(self) -> str | None:
        """The arm this policy gives every unit before exploration, if it is a one-arm baseline; else None."""
        return None

    @property
    def complexity(self) -> int:
        """How much there is to understand and serve: one arm 0, a tree its depth, a value model 10."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """What the policy is, in a few words for a headline."""
        raise NotImplementedError

    def summary_fields(self) -> dict[str, Any]:
        """The kind's entries in the run summary's policy row (see :func:`pex.services.run.build_summary`)."""
        return {}

    def sql_case(self) -> str:
        """The greedy arm as one SQL expression over the feature columns, for a warehouse to assign arms in a
        query (exploration is not applied: a query cannot log propensities)."""
        raise PolicyError(f"policy {self.name!r} is a {self.kind} policy, which has no SQL form",
                          "SQL export covers constant and tree policies; export it with --format onnx, "
                          "or distil a tree from it (`pex policies NAME`)")

    # -- evaluation ------------------------------------------------------------------

    def greedy_arms(self, frame: pd.DataFrame, effects: dict[tuple[str, str], np.ndarray] | None = None) -> np.ndarray:
        """The arm index each unit gets before exploration, shape (n_units,).

        ``effects`` (per (metric, arm), for the rows of ``frame``) replaces the
        predictions of a policy that decides on predicted effects; the other kinds ignore it.
        """
        raise NotImplementedError

    def action_probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of each arm for each unit, shape (n_units, n_arms); rows sum to 1."""
        k = len(self.arms)
        probs = np.full((len(frame), k), self.exploration / k)
        probs[np.arange(len(frame)), self.greedy_arms(frame)] += 1.0 - self.exploration
        return probs

    def decide(self, frame: pd.DataFrame, units: np.ndarray | pd.Series, *, salt: str | int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Reproducible decisions: (arm label, propensity of that arm) per row of ``frame``, unit ``units[i]``.

        A unit's draw is a keyed hash of (name, version, ``salt``, unit id) (:data:`DRAW_RULE`), so the same
        unit gets the same arm from the same policy version in any process, and units are independent
        uniform draws. ``salt`` (e.g. a ``--seed``) gives a different, equally reproducible, set of draws.
        """
        if len(units) != len(frame):
            raise DataError(f"{len(units)} unit ids for {len(frame)} rows", "pass one unit id per row of the frame")
        return self._draw(self._greedy_of_units(frame, units), units, salt)

    def _greedy_of_units(self, frame: pd.DataFrame, units: np.ndarray | pd.Series) -> np.ndarray:
        """:meth:`greedy_arms` of ``frame`` whose units are ``units``; a kind that routes by unit id uses them."""
        return self.greedy_arms(frame)

    def route_names(self, units: Sequence[str]) -> list[str | None]:
        """The name of the policy that decides each unit inside this one (a routing policy's route); None for kinds
        that decide themselves. The decision log keeps it, so an online round's lifts group by candidate."""
        return [None] * len(units)

    def _greedy_of_unit_records(self, records: Sequence[Mapping[str, Any]], units: Sequence[str]) -> np.ndarray:
        """:meth:`greedy_arms_of_records` of records whose units are ``units`` (see :meth:`_greedy_of_units`)."""
        return self.greedy_arms_of_records(records)

    def decide_records(self, records: Sequence[Mapping[str, Any]], units: Sequence[str], *,
                       salt: str | int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`decide` for units given as feature records (from :meth:`check_record`), as a server receives them.

        The same arms and propensities as :meth:`decide` on the frame of those records, by the same draw.
        """
        if len(units) != len(records):
            raise DataError(f"{len(units)} unit ids for {len(records)} records", "pass one unit id per record")
        return self._draw(self._greedy_of_unit_records(records, units), np.asarray(units, dtype=object), salt)

    def decide_one(self, record: Mapping[str, Any], unit: str, *, salt: str | int | None = None) -> tuple[str, float]:
        """:meth:`decide_records` of one unit, in Python scalars: a server's single decision.

        The numpy path costs some 60 us a call when its caches are cold, as they are between requests; this is
        :data:`DRAW_RULE` again in the same floating-point operations, in the same order, so the arm and the
        propensity are exactly those of :meth:`decide` (tests/test_serving_store.py checks 45,000 tree decisions and 300 value ones).
        """
        greedy = int(self._greedy_of_unit_records([record], [unit])[0])
        k, e = len(self.arms), self.exploration
        chosen = greedy
        if e != 0.0:
            u = keyed_uniform_one(unit, _draw_key(self.name, int(self.version), salt))
            if u < e:
                chosen = min(int(u / e * k), k - 1)
        propensity = 1.0 - e + e / k if chosen == greedy else e / k
        return self.arms[chosen], propensity

    def _draw(self, greedy: np.ndarray, units: np.ndarray | pd.Series, salt: str | int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        # one SipHash key per (policy version, salt) and the bare unit ids hashed under it: a third faster than
        # hashing a prefixed copy of every id, and the same independence between policies and versions
        key = _draw_key(self.name, int(self.version), salt)
        k, e = len(self.arms), self.exploration
        labels = self._arm_labels
        if e == 0.0:  # nothing to draw
            return labels[greedy], self._propensity(greedy, greedy)
        u = keyed_uniform(np.asarray(units, dtype=object), key)
        explore = u < e
        # given u < e, u / e is uniform on [0, 1): exploration's arm, uniform over all arms
        scaled = np.divide(u, e, out=np.zeros_like(u), where=explore)
        chosen = np.where(explore, np.minimum((scaled * k).astype(np.int64), k - 1), greedy)
        return labels[chosen], self._propensity(chosen, greedy)

    @functools.cached_property
    def _arm_labels(self) -> np.ndarray:
        return np.asarray(self.arms, dtype=object)

    # -- single units, as a server receives them ---------------------------------------

    def feature_kinds(self) -> dict[str, str]:
        """Each feature the policy reads: ``"categorical"`` (compared as a label) or ``"numeric"``."""
        return dict(self._feature_kinds)

    @functools.cached_property
    def _feature_kinds(self) -> dict[str, str]:
        # once per policy value (they are frozen): a server checks every request's features against it
        categorical = set(self.categorical_features())
        return {f: "categorical" if f in categorical else "numeric" for f in self.features}

    def check_record(self, features: Any, where: str = "features") -> dict[str, float | str | None]:
        """One unit's features as JSON sent them, checked and typed for :meth:`decide_records`.

        Lenient where serving must be: a feature absent or null is missing (it follows the declared path) and
        keys the policy does not read are left out. Strict about types: a numeric feature takes a JSON number,
        a categorical one a string (or a number, read as its label, as files are); anything else is a
        :class:`DataError`, since it is the caller's mistake rather than a missing value.
        """
        if not isinstance(features, Mapping):
            example = ", ".join(f'"{f}": ...' for f in self.features[:3])
            raise DataError(f"{where} must be an object mapping feature names to values, got {_json_type(features)}",
                            f"send e.g. {{{example}}}")
        out: dict[str, float | str | None] = {}
        for name, kind in self._feature_kinds.items():
            value = features.get(name)
            if value is None:
                out[name] = None
            elif kind == "numeric":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise DataError(f"{where}.{name} must be a number or null, got {_json_type(value)} {value!r}"[:300],
                                    f"policy {self.name!r} compares {name!r} as a number; send null when it is unknown")
                try:
                    value = float(value)
                except OverflowError:  # JSON integers have no bound; floats end at 1.8e308
                    raise DataError(f"{where}.{name} must be a finite number, got an integer beyond the float range",
                                    "send the number as a float, or null when it is unknown") from None
                if value != value:  # NaN (Python's json reads it) is missing, as in a file
                    out[name] = None
                elif math.isinf(value):
                    raise DataError(f"{where}.{name} must be a finite number, got {value}",
                                    "JSON has no infinity; send the number, or null when it is unknown")
                else:
                    out[name] = value
            elif isinstance(value, str):
                out[name] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = _label(value)
            else:
                raise DataError(f"{where}.{name} must be a string label or null, got {_json_type(value)} {value!r}"[:300],
                                f"policy {self.name!r} compares {name!r} as a category label")
        return out

    def records_frame(self, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """Checked records (:meth:`check_record`) as the frame :meth:`greedy_arms` reads: numbers as floats
        (NaN where missing), labels as text (None where missing)."""
        columns: dict[str, Any] = {}
        for name, kind in self._feature_kinds.items():
            values = [r[name] for r in records]
            if kind == "numeric":
                columns[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            else:
                columns[name] = np.array(values, dtype=object)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))

    def greedy_arms_of_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`greedy_arms` of checked records; kinds that can, decide without building a frame."""
        return self.greedy_arms(self.records_frame(records))

    def _propensity(self, chosen: np.ndarray, greedy: np.ndarray) -> np.ndarray:
        k = len(self.arms)
        return np.where(chosen == greedy, 1.0 - self.exploration + self.exploration / k, self.exploration / k)

    # -- documents -------------------------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        """The ``pex.policy/1`` document (a fresh copy: changing it does not change the policy)."""
        doc = {"format": FORMAT, "name": self.name, "version": self.version, "experiment": self.experiment,
               "kind": self.kind, "arms": list(self.arms), "default_arm": self.default_arm,
               "exploration": self.exploration}
        doc.update(copy.deepcopy(self._document_fields()))
        doc["trained_at"] = self.trained_at
        doc["lineage"] = copy.deepcopy(self.lineage)
        return doc

    def _document_fields(self) -> dict[str, Any]:
        """The kind's own document keys and values (placed after ``exploration``)."""
        return {}

    def to_json(self) -> str:
        """The document as indented JSON."""
        return json.dumps(self.to_document(), indent=2)

    @classmethod
    def from_document(cls, doc: Any, load_model: Callable[[dict], Any] | None = None) -> Policy:
        """Validate a ``pex.policy/1`` document; ``load_model(value_model)`` returns the
        :class:`pex.hte.EffectModel` a value policy names (it is not needed for other kinds)."""
        if not isinstance(doc, dict):
            raise PolicyError("a policy document must be a JSON object", f'start from {{"format": "{FORMAT}", ...}}')
        if doc.get("format") != FORMAT:
            raise PolicyError(f"policy format is {doc.get('format')!r}, not {FORMAT!r}", f'set "format": "{FORMAT}"')
        known = set(COMMON_KEYS).union(*(c.document_keys for c in _REGISTRY.values()))
        unknown = sorted(set(doc) - known)
        if unknown:
            raise PolicyError(f"unknown policy key {unknown[0]!r}", f"allowed keys: {', '.join(sorted(known))}")
        for key in ("name", "arms", "default_arm"):
            if key not in doc:
                raise PolicyError(f"policy document is missing {key!r}", f"add {key!r} (see docs/policy-document.md)")
        kind = doc.get("kind", "constant")
        common = {"name": doc["name"], "arms": copy.deepcopy(doc["arms"]), "default_arm": doc["default_arm"], "kind": kind,
                  "exploration": doc.get("exploration", 0.0), "experiment": doc.get("experiment", ""),
                  "version": doc.get("version", 1), "trained_at": doc.get("trained_at", ""),
                  "lineage": copy.deepcopy(doc.get("lineage", {}))}
        own = {k: copy.deepcopy(doc.get(k)) for k in known - set(COMMON_KEYS)}
        target = _REGISTRY.get(kind) if isinstance(kind, str) else None
        if target is not None:
            own.update(target._parse(doc, load_model))
        return Policy(**common, **own)

    @classmethod
    def _parse(cls, doc: dict, load_model: Callable[[dict], Any] | None) -> dict[str, Any]:
        """Fields the kind derives from its document beyond its keys (e.g. a bound model)."""
        return {}

    @classmethod
    def from_json(cls, text: str, load_model: Callable[[dict], Any] | None = None) -> Policy:
        """Parse and validate a JSON policy document (see :meth:`from_document`)."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy file is not valid JSON: {exc}", "check quotes, commas and brackets") from None
        return cls.from_document(doc, load_model)


@dataclass(frozen=True, kw_only=True)
class ConstantPolicy(Policy):
    """One arm for everyone (``default_arm``); with ``exploration = 1`` the uniform random policy."""

    kind: ClassVar[str] = "constant"

    @property
    def single_arm(self) -> str | None:
        """The arm everyone gets before exploration."""
        return self.default_arm

    @property
    def complexity(self) -> int:
        """Nothing to understand: 0."""
        return 0

    @property
    def description(self) -> str:
        """Who gets what."""
        return "every arm at random" if self.exploration >= 1.0 else f"{self.default_arm!r} for everyone"

    def summary_fields(self) -> dict[str, Any]:
        """The arm everyone gets (None for uniform random)."""
        return {"arm": None if self.exploration >= 1.0 else self.default_arm}

    def greedy_arms(self, frame: pd.DataFrame, effects: dict[tuple[str, str], np.ndarray] | None = None) -> np.ndarray:
        """``default_arm`` for every unit."""
        return np.full(len(frame), self.arms.index(self.default_arm), dtype=np.int64)

    def greedy_arms_of_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``default_arm`` for every record."""
        return np.full(len(records), self.arms.index(self.default_arm), dtype=np.int64)

    def sql_case(self) -> str:
        """The arm everyone gets, as an SQL string literal."""
        return sql_string(self.default_arm)


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

    def sql_case(self) -> str:
        """Nested ``CASE WHEN test THEN left ELSE right END``, with the same semantics as :meth:`greedy_arms`.

        Missing values are SQL NULLs and take the node's ``missing`` side: the test reads ``(x IS NULL OR x <= v)``
        when missing goes left and ``(x IS NOT NULL AND x <= v)`` when it goes right, so each subtree is written
        once. Category tests compare the column cast to text, so category columns should hold text labels.
        """
        def expression(node: dict) -> str:
            if "arm" in node:
                return sql_string(node["arm"])
            column = sql_identifier(node["feature"])
            if node["op"] == "<=":
                test = f"{column} <= {sql_number(node['value'])}"
            else:
                test = f"CAST({column} AS VARCHAR) IN ({', '.join(sql_string(str(v)) for v in node['value'])})"
            if node.get("missing", "right") == "left":
                test = f"({column} IS NULL OR {test})"
            else:
                test = f"({column} IS NOT NULL AND {test})"
            return f"CASE WHEN {test} THEN {expression(node['left'])} ELSE {expression(node['right'])} END"

        return expression(self.tree)

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


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal (single quotes doubled)."""
    return "'" + str(text).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (double quotes doubled), so any column name is safe."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_number(value: float) -> str:
    """A finite threshold as an SQL numeric literal that reads back as the same double."""
    number = float(value)
    if not math.isfinite(number):
        raise PolicyError(f"threshold {value!r} has no SQL form", "tree thresholds must be finite numbers")
    return repr(number)


def constant_policy(arms: list[str], arm: str, exploration: float = 0.0, name: str | None = None) -> Policy:
    """Everyone gets ``arm`` (a baseline every comparison includes)."""
    return ConstantPolicy(name=name or f"all-{arm}", arms=list(arms), default_arm=arm, exploration=exploration)


def uniform_policy(arms: list[str], name: str = "uniform-random") -> Policy:
    """Every arm with equal probability: exploration 1."""
    return ConstantPolicy(name=name, arms=list(arms), default_arm=arms[0], exploration=1.0)


@functools.lru_cache(maxsize=4096)
def _draw_key(name: str, version: int, salt: str | int | None) -> str:
    """The SipHash key of one policy version's draws (:data:`DRAW_RULE`); cached: a server draws per request."""
    identity = json.dumps([name, version, salt], separators=(",", ":")).encode()
    return hashlib.blake2b(identity, digest_size=8, person=DRAW_PERSON).hexdigest()  # 16 characters, as pandas needs


def _json_type(value: Any) -> str:
    """What JSON calls the type of a parsed value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _label(value: int | float) -> str:
    """A number read as a category label, as :func:`pex.experiment.data.as_text` reads a file's (1.0 -> "1")."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


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


def _check_common(name: Any, arms: Any, default_arm: Any, exploration: Any) -> None:
    if not isinstance(name, str) or not name:
        raise PolicyError("policy name must be a non-empty string", 'set "name", e.g. "notification_cadence-tree-d3"')
    if not isinstance(arms, list) or len(arms) < 1 or not all(isinstance(a, str) and a for a in arms):
        raise PolicyError("policy arms must be a non-empty list of arm labels", 'e.g. "arms": ["control", "daily"]')
    if len(set(arms)) != len(arms):
        raise PolicyError("policy arms list an arm more than once", "list each arm once")
    if default_arm not in arms:
        raise PolicyError(f"default_arm {default_arm!r} is not among the arms {arms}", "set default_arm to one of the arms")
    if isinstance(exploration, bool) or not isinstance(exploration, (int, float)) or not 0.0 <= exploration <= 1.0:
        raise PolicyError(f"exploration must be a number from 0 to 1, got {exploration!r}", "e.g. 0.05 spreads 5% of decisions uniformly")


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
