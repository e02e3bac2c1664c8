"""The API against its own OpenAPI document.

* schemathesis fuzzes every operation through the WSGI app (schema-valid and, where there is a body, schema-invalid
  requests) and finds no 5xx, no undocumented status and no response off its documented schema;
* the document describes exactly the app's routes, and says so loudly when a route is added without it;
* real answers of every kind (decisions, errors, releases, readiness) validate against the documented schema.
"""

from __future__ import annotations

import collections
import json

import jsonschema
import pytest
import referencing
import schemathesis
from flask import Flask, abort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import ServerError
from schemathesis.openapi.checks import JsonSchemaError, UndefinedStatusCode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pex.errors import StoreError
from pex.services import publishing
from pex.store.workspace import Workspace
from web import create_app
from web.openapi import OPERATIONS, document

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
# derandomize: the same cases on every run (a failure reproduces); no example database for the same reason
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
WITH_BODY = sorted(key for key, op in OPERATIONS.items() if "requestBody" in op)
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE


def _app(served) -> Flask:
    return create_app({"HOME": str(served.home), "REFRESH_SECONDS": 0.2, "FLUSH_SECONDS": 0.2})


@pytest.fixture
def app(served):
    app = _app(served)
    yield app
    app.extensions["pex"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def _second_version(served, name: str) -> int:
    """Store a second version of policy ``name`` (more exploration) and return its number; not published."""
    with Workspace(served.home) as ws:
        record = ws.get_policy(name)
        ws.put_policies("exp", [({**record.document, "exploration": 0.5}, None)], fit_id=record.fit_id)
        return record.version + 1


@pytest.fixture
def fuzzed(served):
    """An app whose tree policy has had two versions live (rollback can succeed) and whose value policy has a newer
    version stored than the live one (publish can succeed)."""
    version = _second_version(served, served.tree)
    with Workspace(served.home) as ws:
        ws.publish(served.tree, version, "tests")
    _second_version(served, served.value)
    app = _app(served)
    yield app
    app.extensions["pex"].close()


def _metrics(served) -> list[str]:
    with Workspace(served.home, create=False) as ws:
        return list(ws.load_dataset_spec(ws.dataset_version("exp").id).metrics)


# -- schemathesis ------------------------------------------------------------------------------------------------


def _schema(app, served):
    # loaded through the app: /openapi.json is an admin route, so this also proves that it serves the document
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, headers=served.headers("admin"))
    # the bearer scheme is not fuzzed: every call carries the admin token (tests/web/test_web.py has the auth matrix)
    schema.config.generation.update(with_security_parameters=False)
    return schema


def _strategy(app, served, path: str, method: str, mode):
    operation = _schema(app, served)[path][method.upper()]
    strategy = operation.as_strategy(generation_mode=mode)
    if "{name}" in path:  # random names are all 404s: real ones reach the decision and release code
        strategy = st.one_of(strategy, *(operation.as_strategy(generation_mode=mode, path_parameters={"name": n})
                                         for n in (served.tree, served.value, served.constant, served.routing)))
    if path == "/api/v1/outcomes":  # likewise a random experiment or metric: half the cases name real ones
        metrics = _metrics(served)

        def real_names(case):
            if isinstance(case.body, dict) and isinstance(case.body.get("records"), list):
                case.body["experiment"] = "exp"
                for i, record in enumerate(case.body["records"]):
                    if isinstance(record, dict):
                        record["metric"] = metrics[i % len(metrics)]
            return case

        strategy = st.one_of(strategy, strategy.map(real_names))
    return strategy


def _fuzz(app, served, path: str, method: str, mode, fuzz: settings = FUZZ) -> collections.Counter[int]:
    """Run schemathesis' cases of one operation through the app with the checks; the statuses seen."""
    statuses: collections.Counter[int] = collections.Counter()

    @fuzz
    @given(case=_strategy(app, served, path, method, mode))
    def run(case):
        response = case.call_and_validate(headers=served.headers("admin"), checks=CHECKS)
        statuses[response.status_code] += 1

    run()
    assert not statuses.keys() & {401, 403}, statuses  # every case went past the token check
    return statuses


@pytest.mark.parametrize(("path", "method"), sorted(OPERATIONS))
def test_schema_valid_requests_get_no_5xx_and_only_documented_answers(served, fuzzed, path, method):
    statuses = _fuzz(fuzzed, served, path, method, POSITIVE)
    # the cases reached the code behind the checks: each operation answered 200 at least once
    assert statuses[200] > 0, statuses
    if "parameters" in OPERATIONS[path, method] or "requestBody" in OPERATIONS[path, method]:
        assert sum(statuses.values()) >= 40, statuses  # (an operation without inputs has one case to send)


# operations without a body have nothing schemathesis can make invalid (their one parameter is any string)
@pytest.mark.parametrize(("path", "method"), WITH_BODY)
def test_schema_invalid_requests_get_4xx_and_only_documented_answers(served, fuzzed, path, method):
    statuses = _fuzz(fuzzed, served, path, method, NEGATIVE)
    assert any(400 <= s < 500 for s in statuses), statuses


def _failures(exc: BaseException) -> set[type]:
    if isinstance(exc, BaseExceptionGroup):
        return set().union(*(_failures(e) for e in exc.exceptions))
    return {type(exc)}


DECIDE = ("/api/v1/policies/{name}/decide", "post")


@pytest.mark.parametrize(("operation", "sabotage", "failure"), [
    (DECIDE, lambda name, body: 1 / 0, ServerError),
    (DECIDE, lambda name, body: abort(418), UndefinedStatusCode),
    (DECIDE, lambda name, body: {"arm": "control", "policy": name, "version": 1, "propensity": 1.5, "decision_id": "d1"},
     JsonSchemaError),
    # an operation that changes state is fuzzed by the same harness: a 5xx there fails it too
    (("/api/v1/policies/{name}/publish", "post"), lambda *args: 1 / 0, ServerError),
])
def test_the_fuzzing_fails_on_a_5xx_an_undocumented_status_or_a_response_off_its_schema(
        served, app, monkeypatch, operation, sabotage, failure):
    if operation == DECIDE:
        monkeypatch.setattr(app.extensions["pex"].server, "decide", sabotage)
    else:
        monkeypatch.setattr(publishing, "publish_checked", sabotage)
    quick = settings(FUZZ, max_examples=10, report_multiple_bugs=False)
    with pytest.raises(BaseException) as caught:  # a FailureGroup, or hypothesis' own group: its members are checked
        _fuzz(app, served, *operation, POSITIVE, quick)
    assert failure in _failures(caught.value), caught.value


# -- the document covers the routes ------------------------------------------------------------------------------


def test_the_document_has_every_route_with_its_methods(app):
    doc = document(app)
    documented = {(path.replace("{", "<").replace("}", ">"), method.upper())
                  for path, item in doc["paths"].items() for method in item}
    routes = {(rule.rule, method) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == documented
    assert len(routes) == len(OPERATIONS) >= 11


def test_a_route_added_without_its_description_stops_the_document(served):
    app = _app(served)
    try:
        document(app)  # as built: complete

        @app.get("/api/v1/undocumented")
        def undocumented():
            return {}

        with pytest.raises(RuntimeError, match=r"undocumented \[\('/api/v1/undocumented', 'get'\)\]"):
            document(app)
    finally:
        app.extensions["pex"].close()
    with pytest.raises(RuntimeError, match="missing"):  # and a described route the app lacks
        document(Flask("bare"))


def test_the_document_is_json_its_refs_resolve_and_its_schemas_are_draft_2020_12(app):
    doc = json.loads(json.dumps(document(app)))  # JSON through and through: jsonify will not choke on it
    assert doc["openapi"] == "3.1.0"
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"], (path, method)
            for status, response in op["responses"].items():
                assert response["description"], (path, method, status)
                for media in response.get("content", {}).values():
                    jsonschema.Draft202012Validator.check_schema(media["schema"])


# -- real answers validate ---------------------------------------------------------------------------------------


def _validate(doc: dict, path: str, method: str, response) -> None:
    """Check ``response`` against what the document says ``method path`` answers with its status."""
    documented = doc["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path} answered {status}, documented {sorted(documented)}"
    segments = ["paths", path, method, "responses", status, "content", "application/json", "schema"]
    pointer = "#/" + "/".join(segment.replace("~", "~0").replace("/", "~1") for segment in segments)
    # the document as one resource: the schemas' "#/components/..." refs resolve against it
    registry = referencing.Registry().with_resource("urn:pex:openapi", DRAFT202012.create_resource(doc))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": f"urn:pex:openapi{pointer}"}
    validator_class = jsonschema.validators.validator_for(schema)
    assert validator_class is jsonschema.Draft202012Validator
    assert response.mimetype == "application/json"
    validator_class(schema, registry=registry, format_checker=validator_class.FORMAT_CHECKER).validate(response.json)


def test_real_answers_validate_against_the_documented_schema_of_their_status(served, app, client):
    doc = document(app)
    admin, decide = served.headers("admin"), served.headers("decide")
    tree = f"/api/v1/policies/{served.tree}"
    v2 = _second_version(served, served.tree)
    metric = _metrics(served)[0]
    calls = [  # (documented path, method, status wanted, the call)
        ("/api/v1/policies/{name}/decide", "post", 200, lambda: client.post(
            f"{tree}/decide", json={"unit": "u1", "features": {}}, headers=decide)),
        ("/api/v1/policies/{name}/decide", "post", 200, lambda: client.post(
            f"/api/v1/policies/{served.value}/decide", json={"unit": 12}, headers=decide)),
        ("/api/v1/policies/{name}/decide-batch", "post", 200, lambda: client.post(
            f"{tree}/decide-batch", json={"units": [{"unit": "a"}, {"unit": 7, "features": {}}]}, headers=decide)),
        ("/api/v1/policies/{name}/decide", "post", 404, lambda: client.post(
            "/api/v1/policies/no-such/decide", json={"unit": "u1"}, headers=decide)),
        ("/api/v1/policies/{name}/decide", "post", 422, lambda: client.post(
            f"{tree}/decide", json={"unit": ""}, headers=decide)),
        ("/api/v1/policies/{name}/decide", "post", 400, lambda: client.post(
            f"{tree}/decide", data="{not json", headers=decide)),
        ("/api/v1/policies/{name}/decide", "post", 401, lambda: client.post(f"{tree}/decide", json={"unit": "u1"})),
        ("/api/v1/policies/{name}/decide-batch", "post", 422, lambda: client.post(
            f"{tree}/decide-batch", json={"units": []}, headers=decide)),
        ("/api/v1/outcomes", "post", 200, lambda: client.post("/api/v1/outcomes", json={
            "experiment": "exp", "records": [{"unit": "u1", "metric": metric, "value": 2}]}, headers=decide)),
        ("/api/v1/outcomes", "post", 404, lambda: client.post("/api/v1/outcomes", json={
            "experiment": "no-such", "records": [{"unit": "u1", "metric": metric, "value": 2}]}, headers=decide)),
        ("/api/v1/outcomes", "post", 422, lambda: client.post("/api/v1/outcomes", json={
            "experiment": "exp", "records": [{"unit": "u1", "metric": "no-such", "value": 2}]}, headers=decide)),
        ("/api/v1/policies", "get", 403, lambda: client.get("/api/v1/policies", headers=decide)),
        ("/api/v1/policies", "get", 200, lambda: client.get("/api/v1/policies", headers=admin)),
        ("/api/v1/policies/{name}/publish", "post", 409, lambda: client.post(  # a hand-made version: never certified
            f"{tree}/publish", json={"version": v2}, headers=admin)),
        ("/api/v1/policies/{name}/publish", "post", 200, lambda: client.post(
            f"{tree}/publish", json={"version": v2, "force": True, "reason": "schema test"}, headers=admin)),
        ("/api/v1/policies/{name}/publish", "post", 400, lambda: client.post(f"{tree}/publish", headers=admin)),
        ("/api/v1/policies/{name}/publish", "post", 422, lambda: client.post(
            f"{tree}/publish", json={"version": "two"}, headers=admin)),
        ("/api/v1/policies/{name}/publish", "post", 404, lambda: client.post(
            "/api/v1/policies/no-such/publish", headers=admin)),
        ("/api/v1/policies/{name}/rollback", "post", 200, lambda: client.post(f"{tree}/rollback", headers=admin)),
        ("/api/v1/policies/{name}/rollback", "post", 400, lambda: client.post(f"{tree}/rollback", headers=admin)),
        ("/api/v1/policies/{name}/rollback", "post", 404, lambda: client.post(
            "/api/v1/policies/no-such/rollback", headers=admin)),
        ("/api/v1/policies/{name}/releases", "get", 200, lambda: client.get(f"{tree}/releases", headers=admin)),
        ("/readyz", "get", 200, lambda: client.get("/readyz")),
        ("/readyz", "get", 200, lambda: client.get("/readyz", headers=admin)),
        ("/healthz", "get", 200, lambda: client.get("/healthz")),
        ("/api/v1/openapi.json", "get", 200, lambda: client.get("/api/v1/openapi.json", headers=admin)),
    ]
    for path, method, status, call in calls:
        response = call()
        assert response.status_code == status, (path, method, response.json)
        _validate(doc, path, method, response)
    history = client.get(f"{tree}/releases", headers=admin).json["releases"]
    assert [h["action"] for h in history] == ["publish", "publish", "rollback"]  # the calls above did what they say
    live = {p["name"]: p for p in client.get("/api/v1/policies", headers=admin).json["policies"]}
    assert set(live) == {served.tree, served.value, served.constant, served.routing}


def test_a_store_that_fails_gives_the_documented_503s(served, app, client, monkeypatch):
    doc = document(app)
    ws = app.extensions["pex"].ws

    def down(*args, **kwargs):
        raise StoreError("cannot read the workspace: the database is locked", "retry")

    monkeypatch.setattr(ws, "live_versions", down)
    monkeypatch.setattr(ws, "verify_token", down)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["ok"] is False
    _validate(doc, "/readyz", "get", ready)
    # a token not seen before must be checked against the store, which is down
    r = client.get("/api/v1/policies", headers={"Authorization": "Bearer pex_0123456789ab_never-seen"})
    assert r.status_code == 503
    _validate(doc, "/api/v1/policies", "get", r)


# -- what the fuzzing and the probing around it found ------------------------------------------------------------


def test_numbers_beyond_the_float_range_are_422_not_500(served, app, client):
    doc = document(app)
    decide, admin = served.headers("decide"), served.headers("admin")
    numeric = next(f for f, k in app.extensions["pex"].server.live()[served.value].feature_kinds().items()
                   if k == "numeric")
    for value in (10**400, -(10**400)):  # JSON integers have no bound; Python's float() overflows
        r = client.post(f"/api/v1/policies/{served.value}/decide", json={"unit": "u1", "features": {numeric: value}},
                        headers=decide)
        assert r.status_code == 422 and numeric in r.json["error"], r.json
        _validate(doc, "/api/v1/policies/{name}/decide", "post", r)
        r = client.post("/api/v1/outcomes", headers=decide, json={
            "experiment": "exp", "records": [{"unit": "u1", "metric": _metrics(served)[0], "value": value}]})
        assert r.status_code == 422 and "record 0" in r.json["error"], r.json
        _validate(doc, "/api/v1/outcomes", "post", r)
    for version in (2**31, 2**63, 10**30, 0, -1):  # past the store's integer column: sqlite3 overflowed
        r = client.post(f"/api/v1/policies/{served.tree}/publish", json={"version": version}, headers=admin)
        assert r.status_code == 422, (version, r.json)
        _validate(doc, "/api/v1/policies/{name}/publish", "post", r)


def test_a_whole_float_version_is_that_version(served, client):
    # JSON Schema's "integer" matches 3.0, so a client generated from the document may send it
    v2 = _second_version(served, served.tree)
    r = client.post(f"/api/v1/policies/{served.tree}/publish", json={"version": float(v2), "force": True, "reason": "test"},
                    headers=served.headers("admin"))
    assert r.status_code == 200 and r.json["to_version"] == v2, r.json
    r = client.post(f"/api/v1/policies/{served.tree}/publish", json={"version": 1.5}, headers=served.headers("admin"))
    assert r.status_code == 422


def test_a_unit_id_with_a_nul_character_is_422(served, app, client):
    # PostgreSQL refuses NUL in text: accepted, such a decision would fail its log flush and every flush after it
    doc = document(app)
    decide = served.headers("decide")
    r = client.post(f"/api/v1/policies/{served.tree}/decide", json={"unit": "u\x001"}, headers=decide)
    assert r.status_code == 422 and "NUL" in r.json["error"], r.json
    _validate(doc, "/api/v1/policies/{name}/decide", "post", r)
    r = client.post(f"/api/v1/policies/{served.tree}/decide-batch", json={"units": [{"unit": "a"}, {"unit": "\x00"}]},
                    headers=decide)
    assert r.status_code == 422 and "units[1].unit" in r.json["error"], r.json
    r = client.post("/api/v1/outcomes", headers=decide, json={
        "experiment": "exp", "records": [{"unit": "u\x001", "metric": _metrics(served)[0], "value": 1}]})
    assert r.status_code == 422 and "NUL" in r.json["error"], r.json
    app.extensions["pex"].close()
    with Workspace(served.home, create=False) as ws:
        assert ws.read_decisions(policy=served.tree).empty  # nothing of those requests was logged
