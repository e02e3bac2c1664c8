"""The JSON API under ``/api/v1``: decisions, outcomes, publishing, and the OpenAPI document."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from pex.errors import DataError, PexError
from pex.names import check_text
from pex.services import publishing
from web import jsonbody, metrics
from web.auth import requires

api = Blueprint("api", __name__)
MAX_VERSION = 2**31 - 1  # the store's version columns are 32-bit integers on PostgreSQL (larger ones overflow the driver)
MAX_NAME = 128  # the width of the store's policy name columns


def _state():
    return current_app.extensions["pex"]


def _data() -> bytes:
    """The request's body; a 413 when it is over the limit (``MAX_CONTENT_LENGTH``), chunked ones included: the
    WSGI wrapper (web/fast.py) has read every body and given it a length, which werkzeug checks."""
    return request.get_data(cache=True)


def _body() -> Any:
    """The request's JSON body (strict JSON, :mod:`web.jsonbody`), whatever its Content-Type claims; a 400 when it is
    not JSON or nested too deeply for the parser (``[[[...]]]`` 100,000 deep: the json module recurses per level)."""
    data = _data()
    try:
        return jsonbody.loads(data)
    except RecursionError:
        raise PexError("the request body is nested too deeply to read",
                       "send a JSON object nested a few levels deep, as the OpenAPI document shows") from None
    except ValueError as exc:  # JSONDecodeError, a repeated key, NaN, bytes that are not UTF-8 text
        raise PexError(f"the request body is not valid JSON: {str(exc)[:200]}",
                       "send a JSON object with Content-Type: application/json") from None


def _name(name: str) -> str:
    """A policy name from the path, refused (422) when no policy can have it: the store never sees a lone
    surrogate, a control character or an over-long name (a plain unknown name is the 404 of the route)."""
    return check_text(name, "the policy name in the path", MAX_NAME, "use the name `pex policies EXPERIMENT` lists")


def _count(decisions: list[dict[str, Any]]) -> None:
    if len(decisions) == 1:
        d = decisions[0]
        metrics.decisions(d["policy"], d["version"], d["arm"]).inc()
        return
    for arm, count in Counter(d["arm"] for d in decisions).items():
        metrics.decisions(decisions[0]["policy"], decisions[0]["version"], arm).inc(count)


@api.post("/policies/<name>/decide")
@requires("decide")
def decide(name: str):
    """The arm for one unit: ``{"unit", "features"}`` -> ``{"arm", "policy", "version", "propensity", "decision_id"}``."""
    decision = _state().server.decide(_name(name), _body())
    _count([decision])
    return jsonify(decision)


@api.post("/policies/<name>/decide-batch")
@requires("decide")
def decide_batch(name: str):
    """Arms for up to 10,000 units: ``{"units": [{"unit", "features"}]}`` -> ``{"decisions": [...]}``, in order."""
    answer = _state().server.decide_batch(_name(name), _body())
    _count(answer["decisions"])
    return jsonify(answer)


@api.post("/outcomes")
@requires("decide")
def outcomes():
    """Metric values for units: ``{"experiment", "records": [{"unit", "metric", "value"}]}``, all or none stored."""
    body = _body()
    if not isinstance(body, Mapping) or not isinstance(body.get("experiment"), str):
        raise DataError("the request body must be an object with 'experiment' (a name) and 'records' (a list)",
                        'send {"experiment": "notification_cadence", "records": [{"unit": "u1", "metric": "sessions", '
                        '"value": 3}]}')
    from pex.services.outcomes import record_outcomes

    n = record_outcomes(_state().ws, body["experiment"], body.get("records"))
    return jsonify({"ok": True, "experiment": body["experiment"], "recorded": n})


@api.get("/policies")
@requires("admin")
def live_policies():
    """The live version of every published policy on this server."""
    live = _state().server.live()
    return jsonify({"policies": [{"name": n, "version": p.version, "kind": p.kind, "experiment": p.experiment,
                                  "arms": list(p.arms), "exploration": p.exploration} for n, p in sorted(live.items())]})


def _actor() -> str:
    return f"token:{g.token.name}"


@api.post("/policies/<name>/publish")
@requires("admin")
def publish(name: str):
    """Make a version live through the publish gate: ``{"version": V}`` (default: the version
    :func:`pex.services.publishing.publish` picks); a version the gate does not pass is a 409 with the why, unless
    the body says ``"force": true`` with a ``"reason"``, which the release history records as a forced publish."""
    body = _body() if _data() else {}
    version = body.get("version") if isinstance(body, Mapping) else None
    if isinstance(version, float) and version.is_integer():  # 3.0 is an integer to JSON (and to the document)
        version = int(version)
    if not isinstance(body, Mapping) or (version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION)):
        raise DataError(f"the request body must be empty or an object with an integer 'version' from 1 to {MAX_VERSION}",
                        'send {"version": 3}')
    force, reason = body.get("force", False), body.get("reason")
    if not isinstance(force, bool):
        raise DataError("'force' must be true or false", 'send {"version": 3, "force": true, "reason": "..."}')
    if force != (reason is not None):
        raise DataError("'force': true and a 'reason' go together", 'send {"version": 3, "force": true, "reason": '
                                                                    '"why it goes live without a certificate"}')
    release = publishing.publish_checked(_state().ws, _name(name), version, _actor(),
                                         force_reason=reason if force else None)
    return jsonify({"ok": True, **release.to_dict()})


@api.post("/policies/<name>/rollback")
@requires("admin")
def rollback(name: str):
    """Return to the version live before the current one."""
    release = publishing.rollback(_state().ws, _name(name), _actor())
    return jsonify({"ok": True, **release.to_dict()})


@api.get("/policies/<name>/releases")
@requires("admin")
def releases(name: str):
    """Every publish and rollback of a policy, oldest first."""
    return jsonify({"releases": [r.to_dict() for r in _state().ws.releases(_name(name))]})


@api.get("/openapi.json")
@requires("admin")
def openapi():
    """The OpenAPI 3 document of every route."""
    from web.openapi import document

    return jsonify(document(current_app))
