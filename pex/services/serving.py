"""Serving decisions: the live version of each published policy, decisions for units sent as JSON, and their log.

A :class:`PolicyServer` lives in each serving process. It loads every published policy's live version at
start and then polls the store every ``refresh_seconds``; a new live version is loaded completely (a value
policy with its effect model) before it replaces the old one, so requests in flight finish on the version they
started with and the switch needs no restart. Every decision goes to the :class:`DecisionLog`.

A live version that cannot be loaded (its effect model's files are gone) is not ready (``/readyz`` says why), but
its policy still answers: with its fallback arm (:attr:`pex.policy.base.Policy.fallback`, read from the stored
document, which needs no model files), propensity 1, each such decision logged with ``fallback`` true and the answer
saying ``"fallback": true``. Only when even the document cannot be read is the policy not served (404).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pex.errors import DataError, NotFoundError, PexError
from pex.names import check_text
from pex.policy.base import Policy, fallback_of
from pex.policy.records import check_record
from pex.services.decision_log import DecisionLog
from pex.services.models import effect_model_by_id
from pex.store.workspace import Workspace

log = logging.getLogger("pex.serving")

MAX_BATCH = 10_000
MAX_UNIT_CHARS = 256  # the decision log's unit column


class DecisionIds:
    """Decision ids, unique across processes and hosts without coordination: 20 random hex digits drawn when the
    process starts serving, then a 12-digit counter (32 characters, like a UUID, at a tenth of uuid4's cost)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(10).hex()
        self._next = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> list[str]:
        """``n`` new ids."""
        with self._lock:
            start, self._next = self._next, self._next + n
        prefix = self._prefix
        return [f"{prefix}{i:012x}" for i in range(start, start + n)]


@dataclass(frozen=True)
class Served:
    """Decisions of one request: per unit its arm and propensity, from one policy version."""

    policy: Policy
    units: list[str]
    arms: np.ndarray
    propensities: np.ndarray
    decision_ids: list[str]

    def rows(self) -> list[dict[str, Any]]:
        """One response object per unit."""
        name, version = self.policy.name, self.policy.version
        return [{"unit": u, "arm": a, "policy": name, "version": version, "propensity": float(p), "decision_id": d}
                for u, a, p, d in zip(self.units, self.arms.tolist(), self.propensities.tolist(), self.decision_ids)]


@dataclass(frozen=True)
class Fallback:
    """What a policy answers while its live version cannot be loaded: its fallback arm, for every unit."""

    name: str
    version: int
    experiment: str | None
    arm: str


class PolicyServer:
    """The live policies of a workspace, kept current, and the decisions made with them."""

    def __init__(self, ws: Workspace, decision_log: DecisionLog, refresh_seconds: float = 1.0,
                 max_batch: int = MAX_BATCH) -> None:
        self.ws = ws
        self.decision_log = decision_log
        self.refresh_seconds = refresh_seconds
        self.max_batch = max_batch
        self._live: dict[str, Policy] = {}  # replaced whole, never mutated: readers need no lock
        self._failed: dict[str, str] = {}  # name -> why its live version could not be loaded
        self._fallbacks: dict[str, Fallback] = {}  # the failed ones with nothing loaded before: their fallback arm
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed_at: float | None = None
        self._ids = DecisionIds()

    # -- the live policies ---------------------------------------------------------------

    def start(self) -> PolicyServer:
        """Load the live policies now, then keep them current in a background thread; start the log's flusher."""
        self.refresh()
        self.decision_log.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pex-policy-refresh", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # the store is unreachable: keep serving what is loaded, try again next time
                log.exception("refreshing the live policies failed; serving the versions loaded before")

    def refresh(self) -> dict[str, int]:
        """Read the live versions and load those not loaded yet; returns the live versions."""
        with self._refresh_lock:
            versions = self.ws.live_versions()
            live, failed, fallbacks = {}, {}, {}
            for name, version in versions.items():
                current = self._live.get(name)
                if current is not None and current.version == version:
                    live[name] = current
                    continue
                try:
                    live[name] = self._load(name, version)
                except PexError as exc:  # e.g. the fit's files are gone: this policy is not ready, the rest are
                    failed[name] = f"version {version}: {exc.message}"
                    log.error("cannot load live policy %s version %s: %s", name, version, exc.message)
                    if current is not None:
                        live[name] = current
                    elif (fallback := self._fallback(name, version)) is not None:
                        fallbacks[name] = fallback
            self._live, self._failed, self._fallbacks = live, failed, fallbacks
            self.refreshed_at = time.monotonic()
            return versions

    def _load(self, name: str, version: int) -> Policy:
        record = self.ws.get_policy(name, version)
        return Policy.from_document(record.document, lambda vm: effect_model_by_id(self.ws, vm["fit"]))

    def _fallback(self, name: str, version: int) -> Fallback | None:
        """The fallback of a version that cannot be loaded, from its document; None when that cannot be read either."""
        try:
            record = self.ws.get_policy(name, version)
            _arms, arm = fallback_of(record.document)
        except PexError as exc:
            log.error("policy %s version %s has no readable fallback arm either: %s", name, version, exc.message)
            return None
        log.warning("serving policy %s version %s's fallback arm %r until the version can be loaded", name, version, arm)
        return Fallback(name, version, record.experiment or None, arm)

    def live(self) -> dict[str, Policy]:
        """The loaded live policies by name."""
        return dict(self._live)

    def readiness(self) -> dict[str, Any]:
        """Whether this process can serve: the store answers and is still the workspace's, the decision log is
        being written (:meth:`DecisionLog.trouble`), and every live version is loaded."""
        store_ok, detail = True, "ok"
        try:
            self.ws.check_identity()
            self.ws.live_versions()
        except PexError as exc:
            store_ok, detail = False, exc.message
        trouble = self.decision_log.trouble()
        return {"ok": store_ok and trouble is None and not self._failed, "store": detail,
                "decision_log": trouble or "ok",
                "policies": {n: p.version for n, p in sorted(self._live.items())},
                "failed": dict(self._failed)}

    def policy(self, name: str) -> Policy:
        """The live version of policy ``name``."""
        found = self._live.get(name)
        if found is None:
            live = sorted(self._live)
            raise NotFoundError(f"policy {name!r} is not live on this server",
                                f"publish it with `pex publish {name}`" + (f"; live: {', '.join(live[:8])}" if live else ""))
        return found

    # -- decisions -----------------------------------------------------------------------

    def decide(self, name: str, body: Any) -> dict[str, Any]:
        """One unit's decision from a ``{"unit", "features"}`` body."""
        fallback = self._fallbacks.get(name) if name not in self._live else None
        if fallback is not None:
            return self._serve_fallback(fallback, [body], "body", single=True)[0]
        policy = self.policy(name)
        self.decision_log.admit(1)  # a decision that could not be logged is not answered (503)
        if not isinstance(body, Mapping):
            raise DataError("the request body must be a JSON object", 'send {"unit": "u1", "features": {...}}')
        unit = _unit_id(body.get("unit"), "unit")
        record = check_record(policy, body.get("features", {}), "features")
        arm, propensity = policy.decide_one(record, unit)
        decision_id = self._ids.take(1)[0]
        route = policy.route_names([unit])[0]
        self.decision_log.record([self._row(policy, decision_id, datetime.now(UTC), unit, arm, propensity, record, route)])
        return {"arm": arm, "policy": policy.name, "version": policy.version, "propensity": propensity,
                "decision_id": decision_id}

    def decide_batch(self, name: str, body: Any) -> dict[str, Any]:
        """Decisions for ``{"units": [{"unit", "features"}, ...]}``, up to ``max_batch`` units, in order."""
        fallback = self._fallbacks.get(name) if name not in self._live else None
        policy = self.policy(name) if fallback is None else None
        units = body.get("units") if isinstance(body, Mapping) else None
        if not isinstance(units, list) or not units:
            raise DataError("the request body must be an object with a non-empty list 'units'",
                            'send {"units": [{"unit": "u1", "features": {...}}, ...]}')
        if len(units) > self.max_batch:
            raise DataError(f"{len(units)} units in one batch; at most {self.max_batch} are allowed",
                            f"split the request into batches of {self.max_batch}")
        if policy is None:
            return {"decisions": self._serve_fallback(fallback, units, "units")}
        self.decision_log.admit(len(units))
        return {"decisions": self._serve(policy, units, "units").rows()}

    def _serve_fallback(self, fallback: Fallback, items: list, where: str, *, single: bool = False) -> list[dict[str, Any]]:
        """Every unit gets the fallback arm with propensity 1 (no draw: nothing else is served); logged as such. The
        features are not read (the policy that would read them is not loaded), so none are logged."""
        self.decision_log.admit(len(items))
        units = []
        for i, item in enumerate(items):
            at = where if single else f"{where}[{i}]"
            if not isinstance(item, Mapping):
                raise DataError(f"{at} must be an object with 'unit' and 'features'", '{"unit": "u1", "features": {...}}')
            units.append(_unit_id(item.get("unit"), "unit" if single else f"{at}.unit"))
        ids = self._ids.take(len(units))
        now = datetime.now(UTC)
        self.decision_log.record([
            {"decision_id": d, "decided_at": now, "experiment": fallback.experiment, "policy": fallback.name,
             "version": fallback.version, "unit": u, "arm": fallback.arm, "propensity": 1.0, "features": {},
             "route": None, "fallback": True} for d, u in zip(ids, units)])
        return [{"arm": fallback.arm, "policy": fallback.name, "version": fallback.version, "propensity": 1.0,
                 "decision_id": d, "fallback": True} | ({} if single else {"unit": u}) for d, u in zip(ids, units)]

    def _serve(self, policy: Policy, items: list, where: str) -> Served:
        units, records = [], []
        for i, item in enumerate(items):
            at = f"{where}[{i}]."
            if not isinstance(item, Mapping):
                raise DataError(f"{where}[{i}] must be an object with 'unit' and 'features'", '{"unit": "u1", "features": {...}}')
            units.append(_unit_id(item.get("unit"), f"{at}unit"))
            records.append(check_record(policy, item.get("features", {}), f"{at}features"))
        arms, propensities = policy.decide_records(records, units)
        ids = self._ids.take(len(units))
        now = datetime.now(UTC)
        routes = policy.route_names(units)
        self.decision_log.record([self._row(policy, d, now, u, a, p, r, route) for d, u, a, p, r, route
                                  in zip(ids, units, arms.tolist(), propensities.tolist(), records, routes)])
        return Served(policy, units, arms, propensities, ids)

    @staticmethod
    def _row(policy: Policy, decision_id: str, now: datetime, unit: str, arm: str, propensity: float,
             record: dict[str, Any], route: str | None) -> dict[str, Any]:
        """One row of the decision log (the columns of ``decisions``)."""
        return {"decision_id": decision_id, "decided_at": now, "experiment": policy.experiment or None,
                "policy": policy.name, "version": policy.version, "unit": unit, "arm": arm,
                "propensity": propensity, "features": record, "route": route}

    def close(self) -> None:
        """Stop refreshing and write every buffered decision (a graceful stop loses none)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.decision_log.close()


def _unit_id(value: Any, where: str) -> str:
    """A unit id as text: a non-empty string or an integer (the same unit as its digits)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where} must be a string or an integer, got {type(value).__name__ if value is not None else 'null'}",
                        'send the unit id, e.g. "unit": "u123"')
    text = str(value)
    if not text:
        raise DataError(f"{where} must have 1 to {MAX_UNIT_CHARS} characters, got 0", "send the unit's id")
    # a row the store refuses (NUL, a lone surrogate) must be refused here, before the decision is answered
    return check_text(text, where, MAX_UNIT_CHARS, "send the unit's id", opaque=True)
