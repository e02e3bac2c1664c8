"""The routing policy: a policy whose arms are policies, chosen per unit by a keyed hash of the unit id.

A routing document names a SipHash key and a list of routes, each an arc of the unit circle
(``start``, ``share``, fractions of 2**64) with the policy that serves the units whose id hashes
into it (:func:`pex.experiment.split.hash_interval_mask`). The arcs tile [0, 1), so every unit
has exactly one route, the same one in every process and on every day: a unit never switches
policy while the document is live.

Two uses share the kind:

* **Cross-fitting** (:mod:`pex.services.crossfit`): a run fits twice, each time holding out one
  half of the units by the held-out split's own hash, and serves each half-policy to the half of
  the units it was *not* built on. On the experiment's units that makes every unit's decision
  come from models that never saw it, so the policy can be certified on all of them.
* **Live rounds** (the online loop): candidate policies as the arms of a new test.

Exploration is the routing policy's own, drawn under its own name and version (:data:`pex.policy.draws.DRAW_RULE`),
and every route must have the same arms and exploration, so a decision's propensity is the
routing policy's whichever route served it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pex.errors import DataError
from pex.experiment.split import hash_interval_mask, keyed_hash
from pex.names import check_name
from pex.policy.base import NAME_HINT, Policy, PolicyError

TILE_TOLERANCE = 1e-9  # how far arcs may miss each other (decimal fractions in JSON) and still tile [0, 1)


@dataclass(frozen=True, kw_only=True)
class RoutingPolicy(Policy):
    """Each unit gets the decision of the route its id hashes into (module docstring)."""

    kind: ClassVar[str] = "routing"
    document_keys: ClassVar[tuple[str, ...]] = ("routing",)

    routing: dict | None = None  # {"key": str, "unit": str, "routes": [{"start", "share", "policy": document}]}
    routes: tuple[Policy, ...] = field(default=(), repr=False, compare=False)  # the routes' policies, in document order

    @classmethod
    def _parse(cls, doc: dict, load_model: Callable[[dict], Any] | None) -> dict[str, Any]:
        routing = doc.get("routing")
        if not isinstance(routing, dict) or not isinstance(routing.get("routes"), list):
            return {}  # _check says what is wrong
        return {"routes": tuple(Policy.from_document(r.get("policy") if isinstance(r, dict) else r, load_model)
                                for r in routing["routes"])}

    def _check(self) -> None:
        r = self.routing
        if not isinstance(r, dict):
            raise PolicyError("a routing policy needs a 'routing' object",
                              '"routing": {"key": "...", "unit": "user_id", "routes": [{"start": 0, "share": 1, "policy": {...}}]}')
        for key in ("key", "unit"):
            if not isinstance(r.get(key), str) or not r[key]:
                raise PolicyError(f"routing.{key} must be a non-empty string",
                                  "key: the hash key units are routed by; unit: the unit id column of a data file")
            check_name(r[key], f"routing.{key}", PolicyError, NAME_HINT)
        routes = r.get("routes")
        if not isinstance(routes, list) or not routes:
            raise PolicyError("routing.routes must be a non-empty list", '[{"start": 0, "share": 1, "policy": {...}}]')
        at = 0.0
        for i, route in enumerate(routes):
            if not isinstance(route, dict) or not isinstance(route.get("policy"), dict):
                raise PolicyError(f"routing.routes[{i}] must be an object with a 'policy' document",
                                  '{"start": 0, "share": 0.5, "policy": {...}}')
            for key in ("start", "share"):
                v = route.get(key)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                    raise PolicyError(f"routing.routes[{i}].{key} must be a number from 0 to 1, got {v!r}",
                                      "routes are arcs of the hash circle, as fractions")
            if abs(route["start"] - at) > TILE_TOLERANCE or route["share"] <= 0.0:
                raise PolicyError(f"routing.routes[{i}] starts at {route['start']} but the routes before it end at {at:g}",
                                  "list the routes in order, each starting where the last ended, each with a share above 0")
            at += route["share"]
        if abs(at - 1.0) > TILE_TOLERANCE:
            raise PolicyError(f"the routes' shares add up to {at:g}, not 1", "every unit needs a route: make the shares sum to 1")
        if not self.routes:  # built from a document without _parse: only kinds that need no model load this way
            object.__setattr__(self, "routes", tuple(Policy.from_document(route["policy"]) for route in routes))
        if len(self.routes) != len(routes):
            raise PolicyError(f"routing policy {self.name!r} has {len(routes)} routes but {len(self.routes)} policies bound",
                              "build it with routing_policy() or Policy.from_document()")
        for i, p in enumerate(self.routes):
            # one level of nesting: a staged rollout routes to cross-fitted policies, themselves routing by unit hash
            if isinstance(p, RoutingPolicy) and any(isinstance(q, RoutingPolicy) for q in p.routes):
                raise PolicyError(f"routing.routes[{i}] ({p.name!r}) is a routing policy that itself routes to a routing policy",
                                  "nest at most one level: a route may route to constant, tree or value policies")
            if list(p.arms) != list(self.arms) or p.exploration != self.exploration:
                raise PolicyError(f"routing.routes[{i}] ({p.name!r}) has arms {p.arms} and exploration {p.exploration:g}; "
                                  f"the routing policy has {self.arms} and {self.exploration:g}",
                                  "every route decides among the same arms in the same order, with the same exploration")
        kinds: dict[str, str] = {}
        for p in self.routes:
            for feature, kind in p.feature_kinds().items():
                if kinds.setdefault(feature, kind) != kind:
                    raise PolicyError(f"feature {feature!r} is read as {kinds[feature]} by one route and as {kind} by another",
                                      "route to policies built from the same experiment")

    def _document_fields(self) -> dict[str, Any]:
        return {"routing": self.routing}

    # -- what it is ------------------------------------------------------------------

    @property
    def complexity(self) -> int:
        """The most complex route's: serving needs every route."""
        return max(p.complexity for p in self.routes)

    @property
    def description(self) -> str:
        """The routes' kinds, e.g. "2 depth-2 trees, each for the units of its own hash arc"."""
        kinds = {p.description for p in self.routes}
        inner = kinds.pop() if len(kinds) == 1 else " or ".join(sorted(kinds))  # e.g. each fold chose its own depth
        return f"{len(self.routes)} routes by unit hash, each {inner}"

    def summary_fields(self) -> dict[str, Any]:
        """Each route: its arc, its policy's name and kind, and that kind's own fields (a tree's tree)."""
        return {"routes": [{"start": r["start"], "share": r["share"], "name": p.name, "kind": p.kind,
                            "complexity": p.complexity, **p.summary_fields()}
                           for r, p in zip(self.routing["routes"], self.routes)]}

    @property
    def features(self) -> list[str]:
        """Every route's features, in first-seen order."""
        return list(dict.fromkeys(f for p in self.routes for f in p.features))

    def categorical_features(self) -> list[str]:
        """Features any route reads as labels."""
        return list(dict.fromkeys(f for p in self.routes for f in p.categorical_features()))

    def _check_values(self, frame: pd.DataFrame, source: str) -> None:
        for p in self.routes:
            p._check_values(frame, source)

    # -- decisions -------------------------------------------------------------------

    def route_of(self, units: np.ndarray | pd.Series | Sequence[str]) -> np.ndarray:
        """The route index of each unit id."""
        h = keyed_hash(np.asarray(units, dtype=object), self.routing["key"])
        out = np.full(len(h), -1, dtype=np.int64)
        for i, r in enumerate(self.routing["routes"]):
            out[hash_interval_mask(h, r["start"], r["share"])] = i
        out[out < 0] = len(self.routes) - 1  # a hash rounding past the last tolerated gap: the last arc's
        return out

    def route_names(self, units: Sequence[str]) -> list[str | None]:
        """The name of the route policy of each unit id."""
        names = [p.name for p in self.routes]
        return [names[i] for i in self.route_of(np.array(list(units), dtype=object)).tolist()]

    def greedy_arms(self, frame: pd.DataFrame, effects: dict[tuple[str, str], np.ndarray] | None = None) -> np.ndarray:
        """Each unit's greedy arm from its route; the units are ``frame``'s unit id column (``routing.unit``)."""
        unit = self.routing["unit"]
        if unit not in frame.columns:
            raise DataError(f"policy {self.name!r} routes each unit by its id, but the data has no column {unit!r}",
                            f"add the unit ids as column {unit!r}, or pass them as units")
        return self._routed(frame, frame[unit].to_numpy(), effects)

    def _greedy_of_units(self, frame: pd.DataFrame, units: np.ndarray | pd.Series) -> np.ndarray:
        return self._routed(frame, np.asarray(units, dtype=object), None)

    def _routed(self, frame: pd.DataFrame, units: np.ndarray, effects: dict | None) -> np.ndarray:
        route = self.route_of(units)
        out = np.zeros(len(frame), dtype=np.int64)
        for i, p in enumerate(self.routes):
            rows = np.flatnonzero(route == i)
            if len(rows):
                part = None if effects is None else {k: np.asarray(v)[rows] for k, v in effects.items()}
                if isinstance(p, RoutingPolicy):  # a nested routing routes by the same unit ids, not by a column
                    out[rows] = p._routed(frame.iloc[rows], units[rows], part)
                else:
                    out[rows] = p.greedy_arms(frame.iloc[rows], effects=part)
        return out

    def greedy_arms_of_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Never without unit ids: the route depends on them (use :meth:`decide_records`)."""
        raise DataError(f"policy {self.name!r} routes each unit by its id", "decide with unit ids (decide_records, decide_one)")

    def _greedy_of_unit_records(self, records: Sequence[Mapping[str, Any]], units: Sequence[str]) -> np.ndarray:
        route = self.route_of(np.array(list(units), dtype=object))
        out = np.zeros(len(records), dtype=np.int64)
        for i, p in enumerate(self.routes):
            rows = np.flatnonzero(route == i)
            if len(rows):
                part = [records[j] for j in rows]
                out[rows] = (p._greedy_of_unit_records(part, [units[j] for j in rows]) if isinstance(p, RoutingPolicy)
                             else p.greedy_arms_of_records(part))
        return out


def routing_policy(name: str, policies: Sequence[tuple[float, float, Policy]], *, key: str, unit: str,
                   experiment: str = "", trained_at: str = "", lineage: dict | None = None) -> RoutingPolicy:
    """A routing policy over ``policies`` (``(start, share, policy)`` arcs that tile [0, 1)); arms, default arm and
    exploration are the routes' (which must agree)."""
    first = policies[0][2]
    routing = {"key": key, "unit": unit,
               "routes": [{"start": float(start), "share": float(share), "policy": p.to_document()} for start, share, p in policies]}
    return RoutingPolicy(name=name, arms=list(first.arms), default_arm=first.default_arm, exploration=first.exploration,
                         experiment=experiment, trained_at=trained_at, lineage=dict(lineage or {}), routing=routing,
                         routes=tuple(p for _s, _h, p in policies))
