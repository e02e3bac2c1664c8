"""The OpenAPI 3.1 document of the API, checked against the app's routes (every route is described)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from pex.version import __version__

ERROR = {"type": "object", "required": ["ok", "error", "hint", "status"], "properties": {
    "ok": {"const": False}, "error": {"type": "string"}, "hint": {"type": "string"}, "status": {"type": "integer"}}}
FEATURE_VALUE = {"type": ["number", "string", "null"]}
UNIT = {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000]*$"}, {"type": "integer"}]}
DECISION = {"type": "object", "required": ["arm", "policy", "version", "propensity", "decision_id"], "properties": {
    "arm": {"type": "string"}, "policy": {"type": "string"}, "version": {"type": "integer"},
    "propensity": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "decision_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    # present (true) only when the live version could not be loaded and the policy's fallback arm was served
    "fallback": {"type": "boolean"}}}
DECIDE_REQUEST = {"type": "object", "required": ["unit"], "properties": {
    "unit": UNIT, "features": {"type": "object", "additionalProperties": FEATURE_VALUE,
                               "description": "Feature values; absent or null is missing and follows the policy's "
                                              "declared path. Numeric features take numbers, categorical ones labels."}}}
RELEASE_EVENT = {"type": "object", "required": ["policy", "action", "from_version", "to_version", "actor", "created_at"],
                 "properties": {"policy": {"type": "string"}, "action": {"enum": ["publish", "rollback", "canary", "ramp", "complete",
                                                                                "auto-rollback"]},
                                "from_version": {"type": ["integer", "null"]}, "to_version": {"type": "integer"},
                                "actor": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                                # why a release happened outside the normal rule: a forced publish's "forced: <reason>",
                                # a rollout step's why
                                "note": {"type": ["string", "null"]},
                                "forced": {"type": "boolean", "description": "a publish of a version the gate did not "
                                                                             "pass, with the reason in its note"},
                                "details": {"type": ["object", "null"], "description": "the figures behind an "
                                                                                       "automatic rollout step"}}}
SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "DecideRequest": DECIDE_REQUEST,
    "Decision": DECISION,
    "BatchRequest": {"type": "object", "required": ["units"], "properties": {
        "units": {"type": "array", "minItems": 1, "maxItems": 10_000, "items": {"$ref": "#/components/schemas/DecideRequest"}}}},
    "BatchResponse": {"type": "object", "required": ["decisions"], "properties": {"decisions": {"type": "array", "items": {
        "allOf": [{"$ref": "#/components/schemas/Decision"}, {"type": "object", "required": ["unit"],
                                                               "properties": {"unit": {"type": "string"}}}]}}}},
    "OutcomesRequest": {"type": "object", "required": ["experiment", "records"], "properties": {
        "experiment": {"type": "string", "minLength": 1, "maxLength": 64},
        "records": {"type": "array", "minItems": 1, "maxItems": 100_000, "items": {
            "type": "object", "required": ["unit", "metric", "value"],
            "properties": {"unit": UNIT, "metric": {"type": "string"}, "value": {
                "type": "number", "description": "a finite number; 0 or 1 for a binary metric (one whose every value "
                                                 "was 0 or 1 in the ingested experiment)"}}}}}},
    "OutcomesResponse": {"type": "object", "required": ["ok", "experiment", "recorded"], "properties": {
        "ok": {"const": True}, "experiment": {"type": "string"}, "recorded": {"type": "integer"}}},
    "PublishRequest": {"type": "object", "properties": {
        "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "force": {"type": "boolean", "description": "publish a version the gate does not pass (with 'reason')"},
        "reason": {"type": "string", "minLength": 1, "maxLength": 500,
                   "pattern": "\\S", "description": "why a forced publish is made (text without control "
                                                      "characters); recorded as the release note 'forced: <reason>'"}},
        # a reason comes with "force": true and only with it
        "if": {"required": ["force"], "properties": {"force": {"const": True}}},
        "then": {"required": ["reason"]}, "else": {"not": {"required": ["reason"]}}},
    "ReleaseEvent": RELEASE_EVENT,
    "Release": {"allOf": [{"$ref": "#/components/schemas/ReleaseEvent"},
                          {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}}]},
    "Releases": {"type": "object", "required": ["releases"], "properties": {
        "releases": {"type": "array", "items": {"$ref": "#/components/schemas/ReleaseEvent"}}}},
    "LivePolicies": {"type": "object", "required": ["policies"], "properties": {"policies": {"type": "array", "items": {
        "type": "object", "required": ["name", "version", "kind", "experiment", "arms", "exploration"],
        "properties": {"name": {"type": "string"}, "version": {"type": "integer"}, "kind": {"type": "string"},
                       "experiment": {"type": ["string", "null"]},
                       "arms": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                       "exploration": {"type": "number", "minimum": 0, "maximum": 1}}}}}},
    "Health": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
    # without an admin token, readiness is only ok or not; the details name the live policies and the store
    "ReadinessSummary": {"type": "object", "required": ["ok"], "additionalProperties": False,
                         "properties": {"ok": {"type": "boolean"}}},
    "ReadinessDetails": {"type": "object", "required": ["ok", "store", "policies", "failed"], "properties": {
        "ok": {"type": "boolean"}, "store": {"type": "string"},
        "policies": {"type": "object", "additionalProperties": {"type": "integer"}},
        "failed": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "Readiness": {"oneOf": [{"$ref": "#/components/schemas/ReadinessSummary"},
                            {"$ref": "#/components/schemas/ReadinessDetails"}],
                  "description": "{\"ok\"} alone, unless the request carries an admin token"},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


NAME = {"name": "name", "in": "path", "required": True, "description": "policy name (a malformed one is a 422)",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}}
# (path, method) -> operation; responses every authenticated route can give are added below
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/healthz", "get"): {"summary": "Liveness", "security": [], "responses": {"200": _json("Health", "alive")}},
    ("/readyz", "get"): {"summary": "Readiness: the store answers and the live policies are loaded; only ok or not, "
                                    "unless the request carries an admin token (then the details)", "security": [],
                         "responses": {"200": _json("Readiness", "ready"), "503": _json("Readiness", "not ready")}},
    ("/metrics", "get"): {"summary": "Prometheus metrics (text format)", "x-scope": "admin", "responses": {
        "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}},
    ("/api/v1/openapi.json", "get"): {"summary": "This document", "x-scope": "admin",
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": {"application/json": {"schema": {"type": "object"}}}}}},
    ("/api/v1/policies", "get"): {"summary": "Live policies", "x-scope": "admin",
                                  "responses": {"200": _json("LivePolicies", "live policies")}},
    ("/api/v1/policies/{name}/decide", "post"): {
        "summary": "Decide one unit's arm (the draw is a keyed hash of the unit: same unit, same version, same arm)",
        "x-scope": "decide", "parameters": [NAME],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DecideRequest")}}},
        "responses": {"200": _json("Decision", "the decision (logged)"), "404": _json("Error", "policy not live"),
                      "422": _json("Error", "malformed unit or features")}},
    ("/api/v1/policies/{name}/decide-batch", "post"): {
        "summary": "Decide up to 10,000 units' arms", "x-scope": "decide", "parameters": [NAME],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}},
        "responses": {"200": _json("BatchResponse", "the decisions, in request order (logged)"),
                      "404": _json("Error", "policy not live"), "422": _json("Error", "malformed units")}},
    ("/api/v1/outcomes", "post"): {
        "summary": "Record metric values for units (all records or none)", "x-scope": "decide",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("OutcomesRequest")}}},
        "responses": {"200": _json("OutcomesResponse", "recorded"), "404": _json("Error", "unknown experiment"),
                      "400": _json("Error", "the body is not JSON, or 'experiment' is empty"),
                      "422": _json("Error", "a malformed record or experiment name, or a value that does not suit "
                                            "its metric")}},
    ("/api/v1/policies/{name}/publish", "post"): {
        "summary": "Make a version live (default: the newest, or the recommended one when a re-run stored the newest) "
                   "when it is certified to keep its guardrails, or forced with a reason",
        "x-scope": "admin", "parameters": [NAME],
        "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("PublishRequest")}}},
        "responses": {"200": _json("Release", "published"), "404": _json("Error", "no such policy or version"),
                      "400": _json("Error", "the body is not JSON, or that version is already live"),
                      "409": _json("Error", "the version is not certified to keep its guardrails (the error says "
                                            "why); send force and a reason to override"),
                      "422": _json("Error", "the body is not an object with an integer 'version', or 'force' "
                                            "without a 'reason'")}},
    ("/api/v1/policies/{name}/rollback", "post"): {
        "summary": "Return to the version live before the current one", "x-scope": "admin", "parameters": [NAME],
        "responses": {"200": _json("Release", "rolled back"), "404": _json("Error", "never published"),
                      "422": _json("Error", "a malformed policy name"),
                      "400": _json("Error", "only one version was ever live: nothing to roll back to")}},
    ("/api/v1/policies/{name}/releases", "get"): {
        "summary": "Every publish and rollback of a policy", "x-scope": "admin", "parameters": [NAME],
        "responses": {"200": _json("Releases", "the releases, oldest first"),
                      "422": _json("Error", "a malformed policy name")}},
}


def flask_path(path: str) -> str:
    """An OpenAPI path as Flask writes its rule: ``{name}`` -> ``<name>``."""
    return path.replace("{", "<").replace("}", ">")


def document(app: Flask) -> dict[str, Any]:
    """The document; raises if a route of ``app`` is not described (or a described one does not exist)."""
    routes = {(r.rule, m.lower()) for r in app.url_map.iter_rules() if r.endpoint != "static"
              for m in r.methods - {"HEAD", "OPTIONS"}}
    described = {(flask_path(p), m) for p, m in OPERATIONS}
    if routes != described:
        raise RuntimeError(f"OpenAPI document and routes differ: undocumented {sorted(routes - described)}, "
                           f"missing {sorted(described - routes)}")
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), op in OPERATIONS.items():
        op = {**op, "responses": dict(op["responses"])}
        if op.get("security") != []:
            op["responses"].setdefault("401", _json("Error", "no valid token"))
            op["responses"].setdefault("403", _json("Error", f"the token's scope is not {op['x-scope']!r} or admin"))
        if "requestBody" in op:
            op["responses"].setdefault("400", _json("Error", "the body is not JSON, or nested too deeply to read"))
        if method == "post":  # the server's body limit (PEX_MAX_CONTENT_LENGTH) holds for every request, chunked too
            op["responses"].setdefault("413", _json("Error", "the body is larger than the server accepts"))
        if path != "/healthz":  # every other route reads the store (a token, the live versions): down, it is a 503
            op["responses"].setdefault("503", _json("Error", "the store is unavailable (the answer names no path); "
                                                             "retry later"))
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "pex", "version": __version__,
                 "description": "Decisions from published pex policies, every one logged with its propensity."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "pex token; scopes 'decide' and 'admin'"}}},
    }
