"""Decision policies as data: the ``pex.policy/1`` document, the base class of its kinds and their registry.

A policy maps units to a distribution over arms, shape (n_units, n_arms).
Policies are JSON documents (docs/policy-document.md) that can be
reviewed in a diff and evaluated without executing anything: plain JSON in, numpy out.

Each kind is a class registered by subclassing :class:`Policy`, in a module of its own:
``constant`` (one arm for everyone; with ``exploration = 1`` the uniform random policy,
:mod:`pex.policy.constant`), ``tree`` (a shallow if-else tree that needs no model to serve,
:mod:`pex.policy.tree`), ``value`` (the arm with the best weighted sum of predicted effects; the
document names its stored effect model, a JSON manifest plus LightGBM text models, nothing executable,
:mod:`pex.policy.value`) and ``routing`` (policies routed to by unit hash, :mod:`pex.policy.routing`).
A kind owns its validation, features, decisions, document keys and description; policies are frozen values.
Missing or unknown feature values follow a path each kind declares, never an exception.

``exploration`` spreads that probability mass uniformly over all arms, so every
decision has a known propensity and later rounds can be evaluated off-policy.
:meth:`Policy.decide` makes the draws reproducible (:mod:`pex.policy.draws`); a server's JSON features
are checked by :mod:`pex.policy.records`; :mod:`pex.policy.sql` writes a policy as one SQL expression.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pex.errors import DataError, PexError
from pex.names import HINT, check_name
from pex.policy.draws import draw, draw_key, draw_one
from pex.policy.records import records_frame

FORMAT = "pex.policy/1"
KINDS = ("constant", "tree", "value", "routing")
COMMON_KEYS = ("format", "name", "version", "experiment", "kind", "arms", "default_arm", "fallback_arm", "exploration",
               "trained_at", "lineage")

# names are data (pex.names): a line break, NUL or other control character in a name is refused when a document
# is validated; a document stored before this check that holds one fails to load with this hint
NAME_HINT = f"{HINT}; fix the document (a policy stored before pex checked names: rebuild it from clean data)"

# kind -> its class. Each kind's module registers it by subclassing Policy, so this module (what every policy
# needs) imports none of them: importing any module of pex.policy runs the package's __init__, which imports
# every kind's module, so a document of any kind can be read whichever module a caller imported.
_REGISTRY: dict[str, type[Policy]] = {}


class PolicyError(PexError):
    """A policy document is malformed."""

    status = 422


def kind_class(kind: str) -> type[Policy] | None:
    """The registered class of policy kind ``kind`` (None if there is none)."""
    return _REGISTRY.get(kind)


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The base of the policy kinds (see the module docstring): an immutable value.

    Build a policy with its kind's class (:class:`pex.policy.constant.ConstantPolicy`,
    :class:`pex.policy.tree.TreePolicy`, ...) or a factory such as :func:`pex.policy.constant.constant_policy`;
    :meth:`from_document` builds the class registered for a document's kind; :meth:`replace` returns a changed copy.
    """

    kind: ClassVar[str] = ""
    document_keys: ClassVar[tuple[str, ...]] = ()  # the document keys this kind adds to COMMON_KEYS

    name: str
    arms: list[str]
    default_arm: str
    exploration: float = 0.0
    experiment: str = ""
    version: int = 1
    trained_at: str = ""
    lineage: dict = field(default_factory=dict)
    # the arm a server answers when it cannot load this version (its model files are gone): None is default_arm,
    # the control arm of every policy a run builds (see :attr:`fallback`)
    fallback_arm: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            _REGISTRY[cls.kind] = cls

    def __post_init__(self) -> None:
        if not self.kind:
            raise PolicyError("Policy is the base of the policy kinds",
                              "build one with a kind's class (e.g. TreePolicy) or Policy.from_document")
        check_common(self.name, self.arms, self.default_arm, self.exploration)
        check_name(self.experiment, "policy experiment", PolicyError, NAME_HINT)
        check_fallback(self.arms, self.fallback_arm)
        object.__setattr__(self, "exploration", float(self.exploration))  # normalising its own construction
        self._check()  # a kind checks the names it holds (a tree its features and labels)

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
    def fallback(self) -> str:
        """The arm served when this version cannot be loaded: ``fallback_arm``, else ``default_arm``."""
        return self.fallback_arm if self.fallback_arm is not None else self.default_arm

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

        A unit's draw is a keyed hash of (name, version, ``salt``, unit id) (:data:`pex.policy.draws.DRAW_RULE`), so the same
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
        """:meth:`decide` for units given as feature records (from :func:`pex.policy.records.check_record`), as a server receives them.

        The same arms and propensities as :meth:`decide` on the frame of those records, by the same draw.
        """
        if len(units) != len(records):
            raise DataError(f"{len(units)} unit ids for {len(records)} records", "pass one unit id per record")
        return self._draw(self._greedy_of_unit_records(records, units), np.asarray(units, dtype=object), salt)

    def decide_one(self, record: Mapping[str, Any], unit: str, *, salt: str | int | None = None) -> tuple[str, float]:
        """:meth:`decide_records` of one unit, in Python scalars: a server's single decision.

        The same arm and propensity as :meth:`decide`, by :func:`pex.policy.draws.draw_one`
        (tests/store/test_serving_store.py checks 45,000 tree decisions and 300 value ones).
        """
        greedy = int(self._greedy_of_unit_records([record], [unit])[0])
        chosen, propensity = draw_one(greedy, unit, self.exploration, len(self.arms), self._draw_key(salt))
        return self.arms[chosen], propensity

    def _draw(self, greedy: np.ndarray, units: np.ndarray | pd.Series, salt: str | int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        chosen, propensity = draw(greedy, units, self.exploration, len(self.arms), self._draw_key(salt))
        return self._arm_labels[chosen], propensity

    def _draw_key(self, salt: str | int | None) -> str:
        return draw_key(self.name, int(self.version), salt)

    @functools.cached_property
    def _arm_labels(self) -> np.ndarray:
        return np.asarray(self.arms, dtype=object)

    # -- single units, as a server receives them (pex.policy.records) -----------------------

    def feature_kinds(self) -> dict[str, str]:
        """Each feature the policy reads: ``"categorical"`` (compared as a label) or ``"numeric"``."""
        return dict(self._feature_kinds)

    @functools.cached_property
    def _feature_kinds(self) -> dict[str, str]:
        # once per policy value (they are frozen): a server checks every request's features against it
        categorical = set(self.categorical_features())
        return {f: "categorical" if f in categorical else "numeric" for f in self.features}

    def greedy_arms_of_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`greedy_arms` of checked records; kinds that can, decide without building a frame."""
        return self.greedy_arms(records_frame(self, records))

    # -- documents -------------------------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        """The ``pex.policy/1`` document (a fresh copy: changing it does not change the policy)."""
        doc = {"format": FORMAT, "name": self.name, "version": self.version, "experiment": self.experiment,
               "kind": self.kind, "arms": list(self.arms), "default_arm": self.default_arm,
               "exploration": self.exploration}
        if self.fallback_arm is not None:  # absent means default_arm: documents without one read as before
            doc["fallback_arm"] = self.fallback_arm
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
        :class:`pex.hte.model.EffectModel` a value policy names (it is not needed for other kinds)."""
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
        common = {"name": doc["name"], "arms": copy.deepcopy(doc["arms"]), "default_arm": doc["default_arm"],
                  "exploration": doc.get("exploration", 0.0), "experiment": doc.get("experiment", ""),
                  "version": doc.get("version", 1), "trained_at": doc.get("trained_at", ""),
                  "lineage": copy.deepcopy(doc.get("lineage", {})), "fallback_arm": doc.get("fallback_arm")}
        target = _REGISTRY.get(kind) if isinstance(kind, str) else None
        if target is None:
            check_common(common["name"], common["arms"], common["default_arm"], common["exploration"])
            raise PolicyError(f"policy kind {kind!r} is not one of {', '.join(KINDS)}",
                              'use "kind": "constant", "tree", "value" or "routing"')
        own = {k: copy.deepcopy(doc.get(k)) for k in target.document_keys}
        own.update(target._parse(doc, load_model))
        # the keys of other kinds: absent or null is fine, a value is a document mixing kinds up
        foreign = sorted(k for k in known - set(COMMON_KEYS) - set(target.document_keys) if doc.get(k) is not None)
        if foreign:
            check_common(common["name"], common["arms"], common["default_arm"], common["exploration"])
            owner = next(c.kind for c in _REGISTRY.values() if foreign[0] in c.document_keys)
            raise PolicyError(f"a {kind} policy has no {foreign[0]!r}", f'remove "{foreign[0]}" or set "kind": "{owner}"')
        return target(**common, **own)

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


def fallback_of(doc: Any) -> tuple[list[str], str]:
    """The arms and the fallback arm of a policy document, read without building the policy (a server that cannot
    load a version's model files still knows what to answer); a :class:`PolicyError` when they are malformed."""
    if not isinstance(doc, dict):
        raise PolicyError("a policy document must be a JSON object", f'start from {{"format": "{FORMAT}", ...}}')
    check_common(doc.get("name"), doc.get("arms"), doc.get("default_arm"), doc.get("exploration", 0.0))
    check_fallback(doc["arms"], doc.get("fallback_arm"))
    fallback = doc.get("fallback_arm")
    return list(doc["arms"]), fallback if fallback is not None else doc["default_arm"]


def check_fallback(arms: list[str], fallback_arm: Any) -> None:
    """A fallback arm is absent (None: the default arm) or one of the arms (raise :class:`PolicyError`)."""
    if fallback_arm is not None and (not isinstance(fallback_arm, str) or fallback_arm not in arms):
        raise PolicyError(f"fallback_arm {fallback_arm!r} is not among the arms {arms}",
                          "set fallback_arm to one of the arms (the one served when the policy cannot be loaded), "
                          "or leave it out to fall back to default_arm")


def check_common(name: Any, arms: Any, default_arm: Any, exploration: Any) -> None:
    """Check the fields every kind has (raise :class:`PolicyError`); a document's errors in them come first."""
    if not isinstance(name, str) or not name:
        raise PolicyError("policy name must be a non-empty string", 'set "name", e.g. "notification_cadence-tree-d3"')
    if not isinstance(arms, list) or len(arms) < 1 or not all(isinstance(a, str) and a for a in arms):
        raise PolicyError("policy arms must be a non-empty list of arm labels", 'e.g. "arms": ["control", "daily"]')
    check_name(name, "policy name", PolicyError, NAME_HINT)
    for arm in arms:
        check_name(arm, "policy arm label", PolicyError, NAME_HINT)
    if len(set(arms)) != len(arms):
        raise PolicyError("policy arms list an arm more than once", "list each arm once")
    if default_arm not in arms:
        raise PolicyError(f"default_arm {default_arm!r} is not among the arms {arms}", "set default_arm to one of the arms")
    if isinstance(exploration, bool) or not isinstance(exploration, (int, float)) or not 0.0 <= exploration <= 1.0:
        raise PolicyError(f"exploration must be a number from 0 to 1, got {exploration!r}", "e.g. 0.05 spreads 5% of decisions uniformly")
