"""Hostile and unlucky requests (issue 24): every bad body, path or header is a 4xx in the error shape, never a 5xx;
readiness says only ready or not unless asked with an admin token; no answer names a path or a database URL;
outcome values must suit their metric's kind."""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.test import EnvironBuilder, run_wsgi_app

from pex.store.workspace import Workspace
from tests.gunicorn import free_port, serve, wait_ready
from tests.shared import Served
from web import create_app
from web.errors import STORE_UNAVAILABLE

SHAPE = {"ok", "error", "hint", "status"}
DEEP = 100_000


def _deep(inner: str = "") -> str:
    """JSON nested ``DEEP`` levels: the json module recurses once per level."""
    return "[" * DEEP + inner + "]" * DEEP


def _config(served: Served, **extra) -> dict:
    return {"HOME": str(served.home), "REFRESH_SECONDS": 0.2, "FLUSH_SECONDS": 0.2, **extra}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, serving_home):
    """One server for the whole table of bad requests (none of them may change anything): its app and workspace."""
    home = tmp_path_factory.mktemp("hostile") / "ws"
    shutil.copytree(serving_home, home)
    served = Served(home)
    app = create_app(_config(served))
    yield served, app
    app.extensions["pex"].close()


def _tree(s: Served) -> str:
    return f"/api/v1/policies/{s.tree}"


def _outcome(**record) -> dict:
    return {"experiment": "exp", "records": [{"unit": "u1", "metric": "sessions", "value": 1, **record}]}


BIG_INT = "9" * 5_000  # past Python's 4,300-digit limit on int(): json refuses to read it
# (method, path (``{tree}``: the live tree policy's route prefix), body: raw text or bytes, a JSON value, or None;
#  the token's scope, or a raw Authorization header; the status wanted)
CASES = [
    # -- decide: bodies the parser cannot read, or reads and the route refuses
    ("POST", "{tree}/decide", _deep(), "decide", 400),
    ("POST", "{tree}/decide", '{"a":' * DEEP + "1" + "}" * DEEP, "decide", 400),
    ("POST", "{tree}/decide", '{"unit": ' + _deep() + "}", "decide", 400),
    ("POST", "{tree}/decide", '{"unit": "u1", "features": {"age": ' + _deep() + "}}", "decide", 400),
    ("POST", "{tree}/decide", "{not json", "decide", 400),
    ("POST", "{tree}/decide", b'{"unit": "\xff\xfe"}', "decide", 400),
    ("POST", "{tree}/decide", '{"unit": "u1"} trailing', "decide", 400),
    ("POST", "{tree}/decide", '{"unit": ' + BIG_INT + "}", "decide", 400),
    ("POST", "{tree}/decide", {"unit": "u1", "features": [float("nan")]}, "decide", 400),  # NaN: not JSON
    ("POST", "{tree}/decide", {"unit": "u" * 257}, "decide", 422),
    ("POST", "{tree}/decide", {"unit": 10**300}, "decide", 422),
    ("POST", "{tree}/decide", [1, 2, 3], "decide", 422),
    ("POST", "/api/v1/policies/a%00b/decide", {"unit": "u1"}, "decide", 422),
    ("POST", "/api/v1/policies/a%0Ab/decide", {"unit": "u1"}, "decide", 422),
    ("POST", "/api/v1/policies/" + "p" * 129 + "/decide", {"unit": "u1"}, "decide", 422),
    ("POST", "/api/v1/policies/%ED%A0%80/decide", {"unit": "u1"}, "decide", 404),  # undecodable: U+FFFD, unknown
    ("GET", "{tree}/decide", None, "decide", 405),
    # -- decide-batch
    ("POST", "{tree}/decide-batch", _deep(), "decide", 400),
    ("POST", "{tree}/decide-batch", '{"units": ' + _deep() + "}", "decide", 400),
    ("POST", "{tree}/decide-batch", '{"units": [{"unit": "a", "features": ' + _deep() + "}]}", "decide", 400),
    ("POST", "{tree}/decide-batch", {"units": [{"unit": "a"}, {"unit": "\x00"}]}, "decide", 422),
    ("POST", "{tree}/decide-batch", {"units": {"unit": "a"}}, "decide", 422),
    ("POST", "/api/v1/policies/a%1Bb/decide-batch", {"units": [{"unit": "a"}]}, "decide", 422),
    # -- outcomes: the body, the experiment name, each record's unit, metric and value
    ("POST", "/api/v1/outcomes", _deep(), "decide", 400),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": ' + _deep() + "}", "decide", 400),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "u", "metric": ' + _deep() + ', "value": 1}]}',
     "decide", 400),
    ("POST", "/api/v1/outcomes", b'{"experiment": "\xc3\x28", "records": []}', "decide", 400),
    ("POST", "/api/v1/outcomes", '{"experiment": "\\ud800", "records": [{"unit": "u1", "metric": "sessions", "value": 1}]}',
     "decide", 422),
    ("POST", "/api/v1/outcomes", {**_outcome(), "experiment": "exp\x00"}, "decide", 422),
    ("POST", "/api/v1/outcomes", {**_outcome(), "experiment": "exp\nDROP TABLE outcomes"}, "decide", 422),
    ("POST", "/api/v1/outcomes", {**_outcome(), "experiment": "e" * 1_000_000}, "decide", 422),
    ("POST", "/api/v1/outcomes", {**_outcome(), "experiment": "no-such"}, "decide", 404),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "\\udc00", "metric": "sessions", "value": 1}]}',
     "decide", 422),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "u\\ud800x", "metric": "sessions", "value": 1}]}',
     "decide", 422),
    ("POST", "/api/v1/outcomes", _outcome(unit="u\x00"), "decide", 422),
    ("POST", "/api/v1/outcomes", _outcome(unit="u" * 257), "decide", 422),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "u1", "metric": "\\ud800", "value": 1}]}',
     "decide", 422),
    ("POST", "/api/v1/outcomes", _outcome(metric="m" * 100_000), "decide", 422),
    ("POST", "/api/v1/outcomes", _outcome(metric="converted", value=-5), "decide", 422),
    ("POST", "/api/v1/outcomes", _outcome(metric="converted", value=0.5), "decide", 422),
    ("POST", "/api/v1/outcomes", _outcome(metric="unsubscribes", value=2), "decide", 422),
    ("POST", "/api/v1/outcomes", _outcome(metric="converted", value=True), "decide", 422),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "u1", "metric": "sessions", "value": NaN}]}',
     "decide", 400),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "u1", "metric": "sessions", "value": '
     "-Infinity}]}", "decide", 400),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "u1", "metric": "sessions", "value": 1e400}]}',
     "decide", 422),
    ("POST", "/api/v1/outcomes", '{"experiment": "exp", "records": [{"unit": "u1", "metric": "sessions", "value": '
     + "9" * 4_000 + "}]}", "decide", 422),
    ("POST", "/api/v1/outcomes", {"experiment": "exp", "records": {"unit": "u1"}}, "decide", 422),
    ("PUT", "/api/v1/outcomes", _outcome(), "decide", 405),
    # -- publish, rollback, releases: bodies and names in the path
    ("POST", "{tree}/publish", _deep(), "admin", 400),
    ("POST", "{tree}/publish", '{"version": ' + _deep() + "}", "admin", 400),
    ("POST", "{tree}/publish", b"\xff", "admin", 400),
    ("POST", "{tree}/publish", '{"version": "\\ud800"}', "admin", 422),
    ("POST", "{tree}/publish", '{"version": 1e400}', "admin", 422),
    ("POST", "{tree}/publish", '{"version": ' + "9" * 4_000 + "}", "admin", 422),
    ("POST", "/api/v1/policies/a%00/publish", None, "admin", 422),
    ("POST", "/api/v1/policies/" + "p" * 10_000 + "/publish", None, "admin", 422),
    ("POST", "/api/v1/policies/a%7Fb/rollback", None, "admin", 422),
    ("POST", "/api/v1/policies/" + "p" * 129 + "/rollback", None, "admin", 422),
    ("POST", "/api/v1/policies/%ED%A0%80/rollback", None, "admin", 404),
    ("GET", "/api/v1/policies/a%00b/releases", None, "admin", 422),
    ("GET", "/api/v1/policies/a%09b/releases", None, "admin", 422),
    ("GET", "/api/v1/policies/" + "p" * 129 + "/releases", None, "admin", 422),
    ("POST", "{tree}/publish", {"version": 1}, "decide", 403),
    # -- tokens: made-up, over-long or odd Authorization headers are a 401, not a look-up
    ("POST", "{tree}/decide", {"unit": "u1"}, "Bearer " + "x" * 8_000, 401),
    ("POST", "{tree}/decide", {"unit": "u1"}, "Bearer pex_00_" + "s" * 500, 401),
    ("POST", "{tree}/decide", {"unit": "u1"}, "Bearer pex_zz_secret", 401),
    ("POST", "{tree}/decide", {"unit": "u1"}, "Bearer pex_\u00e9\u00e9_secret", 401),
    ("GET", "/api/v1/policies", None, "Bearer", 401),
    # -- anything else
    ("GET", "/api/v1/%ED%A0%80", None, "admin", 404),
    ("GET", "/api/v1/policies/x/y/z", None, "admin", 404),
    ("POST", "/healthz", None, None, 405),
    ("DELETE", "/readyz", None, None, 405),
]


def _call(client, served: Served, method: str, path: str, body, auth):
    headers = {}
    if auth in ("decide", "admin"):
        headers = served.headers(auth)
    elif auth is not None:
        headers = {"Authorization": auth}
    kwargs = {"data": body, "content_type": "application/json"} if isinstance(body, (str, bytes)) else (
        {"json": body} if body is not None else {})
    return client.open(path.replace("{tree}", _tree(served)), method=method, headers=headers, **kwargs)


@pytest.mark.parametrize(("method", "path", "body", "auth", "status"), CASES,
                         ids=[f"{i}-{m}-{p[:40]}" for i, (m, p, *_rest) in enumerate(CASES)])
def test_a_bad_request_is_a_4xx_in_the_error_shape(hostile, method, path, body, auth, status):
    served, app = hostile
    r = _call(app.test_client(), served, method, path, body, auth)
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:500])
    assert set(r.json) == SHAPE and r.json["ok"] is False and r.json["status"] == status, r.json
    assert r.json["error"] and (r.json["hint"] or status == 405)
    assert len(r.get_data()) < 2_000  # the answer never echoes the body (or the path) back whole


def test_between_bad_requests_good_decides_are_served_and_the_log_holds_exactly_them(served):
    app = create_app(_config(served))
    client = app.test_client()
    try:
        good = []
        for i, (method, path, body, auth, status) in enumerate(CASES):
            assert _call(client, served, method, path, body, auth).status_code == status, (i, path[:60])
            r = client.post(f"{_tree(served)}/decide", json={"unit": f"good-{i}"}, headers=served.headers())
            assert r.status_code == 200, r.json
            good.append(r.json["decision_id"])
    finally:
        app.extensions["pex"].close()  # writes the buffered decisions
    with Workspace(served.home, create=False) as ws:
        logged = ws.read_decisions()
        assert list(logged["decision_id"]) == good and set(logged["policy"]) == {served.tree}  # no bad one logged
        assert ws.read_outcomes("exp").empty  # no bad outcome record, and none of a refused call's good ones
        assert [r.action for r in ws.releases(served.tree)] == ["publish"]  # nor a publish or rollback


def test_the_table_covers_every_route(hostile):
    _served, app = hostile
    assert len(CASES) >= 60
    routes = {(rule.rule, method) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    patterns = {(rule, m): re.compile(re.escape(rule).replace(re.escape("<name>"), "[^/]+")) for rule, m in routes}
    hit = {route for method, path, *_rest in CASES for route, pattern in patterns.items()
           if route[1] == method and pattern.fullmatch(path.replace("{tree}", "/api/v1/policies/x"))}
    body_routes = {r for r in routes if r[1] == "POST"} | {("/api/v1/policies/<name>/releases", "GET")}
    assert body_routes <= hit, body_routes - hit


# -- recursion and encoding errors past the routes' own checks ---------------------------------------------------


@pytest.fixture
def app(served):
    app = create_app(_config(served, TOKEN_TTL_SECONDS=300.0))
    yield app
    app.extensions["pex"].close()


@pytest.mark.parametrize(("error", "status", "words"), [
    (RecursionError("maximum recursion depth exceeded while getting the repr of an object"), 400, "nested too deeply"),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), 422, "not valid Unicode"),
])
def test_a_recursion_or_encoding_error_that_slips_past_validation_is_the_clients_4xx(served, app, monkeypatch, caplog,
                                                                                      error, status, words):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(app.extensions["pex"].server, "decide", fail)
    with caplog.at_level(logging.WARNING, logger="pex.web"):
        r = app.test_client().post(f"/api/v1/policies/{served.tree}/decide", json={"unit": "u1"}, headers=served.headers())
    assert r.status_code == status and set(r.json) == SHAPE and words in r.json["error"], r.json
    assert str(error) in caplog.text  # logged: the check that missed it can be found


# -- readiness ---------------------------------------------------------------------------------------------------


def test_readiness_is_only_ok_without_an_admin_token_and_the_details_with_one(served, app):
    client = app.test_client()
    for headers in ({}, served.headers("decide"), {"Authorization": "Bearer pex_0123456789ab_made-up"},
                    {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        r = client.get("/readyz", headers=headers)
        assert r.status_code == 200 and r.json == {"ok": True}, (headers, r.json)
    r = client.get("/readyz", headers=served.headers("admin"))
    assert r.status_code == 200 and r.json["ok"] is True and r.json["store"] == "ok"
    assert set(r.json["policies"]) == {served.tree, served.value, served.constant, served.routing} and r.json["failed"] == {}


# -- a store that fails: a generic 503, the detail in the server's log ----------------------------------------------


def test_a_failing_store_is_a_503_that_names_no_path_or_url_and_the_log_has_the_detail(served, app, caplog):
    state = app.extensions["pex"]
    client = app.test_client()
    decide, admin = served.headers("decide"), served.headers("admin")
    assert client.get("/api/v1/policies", headers=admin).status_code == 200  # both tokens checked: their verdicts kept
    assert client.post("/api/v1/outcomes", json=_outcome(), headers=decide).status_code == 200
    working = state.ws.engine
    # the real failure path: the database file is gone from under the engine (the @db wrapper's StoreError)
    state.ws.engine = sa.create_engine(f"sqlite:///{served.home}/gone/pex.sqlite")
    try:
        calls = [
            client.post("/api/v1/outcomes", json=_outcome(), headers=decide),
            client.get(f"{_tree(served)}/releases", headers=admin),
            client.post(f"{_tree(served)}/rollback", headers=admin),
            client.post(f"{_tree(served)}/publish", json={"version": 1}, headers=admin),
            client.get("/api/v1/policies", headers={"Authorization": "Bearer pex_0123456789ab_not-seen-yet"}),
        ]
        with caplog.at_level(logging.ERROR, logger="pex.web"):
            calls.append(client.get(f"{_tree(served)}/releases", headers=admin))
        bare = client.get("/readyz")
        detailed = client.get("/readyz", headers=admin)
    finally:
        state.ws.engine.dispose()
        state.ws.engine = working
    for r in calls:
        assert r.status_code == 503 and set(r.json) == SHAPE and r.json["error"] == STORE_UNAVAILABLE, r.json
        text = r.get_data(as_text=True)
        assert str(served.home) not in text and "sqlite" not in text and "/tmp" not in text, text
    ref = calls[-1].json["hint"].rsplit("ref ", 1)[1].rstrip(")")
    logged = next(r.getMessage() for r in caplog.records if f"ref {ref}" in r.getMessage())
    assert "cannot read the releases" in logged and str(served.home) in logged  # the detail, server-side
    assert bare.status_code == 503 and bare.json == {"ok": False}
    # the admin's token verdict is kept, so the admin sees why
    assert detailed.status_code == 503 and detailed.json["ok"] is False and "cannot" in detailed.json["store"]


# -- the wording of a 403 ----------------------------------------------------------------------------------------


def test_a_403_names_the_scope_the_route_needs_once(served, app):
    r = app.test_client().get("/api/v1/policies", headers=served.headers("decide"))
    assert r.status_code == 403
    assert r.json["hint"] == "use a token with scope 'admin'; `pex token create --scope admin` makes one"


def test_a_malformed_token_is_refused_without_a_store_look_up(served, app, monkeypatch):
    looked_up = []
    ws = app.extensions["pex"].ws
    real = ws.verify_token
    monkeypatch.setattr(ws, "verify_token", lambda token: looked_up.append(token) or real(token))
    client = app.test_client()
    for token in ("x" * 8_000, "pex_zz_secret", "pex_0123_" + "s" * 200, "pex_0123_a\x00b"):
        assert client.get("/api/v1/policies", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert looked_up == []
    assert client.get("/api/v1/policies", headers=served.headers("admin")).status_code == 200
    assert looked_up == [served.admin]


# -- outcome values against the metric's kind --------------------------------------------------------------------


def test_a_binary_metric_takes_only_0_and_1_and_the_call_stores_nothing_when_one_record_is_off(served, app):
    client = app.test_client()
    records = [{"unit": f"u{i}", "metric": "converted", "value": i % 2} for i in range(5)]
    records.insert(3, {"unit": "u-bad", "metric": "converted", "value": -5})
    r = client.post("/api/v1/outcomes", json={"experiment": "exp", "records": records}, headers=served.headers())
    assert r.status_code == 422 and r.json["error"].startswith("record 3 has value -5 for metric 'converted', which is binary")
    good = [rec for rec in records if rec["unit"] != "u-bad"] + [{"unit": "u9", "metric": "sessions", "value": -5.5}]
    r = client.post("/api/v1/outcomes", json={"experiment": "exp", "records": good}, headers=served.headers())
    assert r.status_code == 200 and r.json["recorded"] == 6
    app.extensions["pex"].close()
    with Workspace(served.home, create=False) as ws:
        stored = ws.read_outcomes("exp")
    assert sorted(stored["unit"]) == ["u0", "u1", "u2", "u3", "u4", "u9"]  # the refused call stored none of its records


# -- bodies over the limit -------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413_chunked_or_not_and_one_at_the_limit_is_read(served):
    body = json.dumps({"units": [{"unit": f"u{i}"} for i in range(200)]}).encode()
    url = f"/api/v1/policies/{served.tree}/decide-batch"
    headers = {**served.headers(), "Content-Type": "application/json"}
    for limit, status in ((len(body), 200), (len(body) - 1, 413), (len(body) // 3, 413)):
        app = create_app(_config(served, MAX_CONTENT_LENGTH=limit))
        client = app.test_client()
        try:
            sized = client.post(url, data=body, headers=headers)
            # no Content-Length: werkzeug reads up to the limit and stops there (the rest was a 400 for cut JSON)
            environ = EnvironBuilder(path=url, method="POST", headers=headers, input_stream=io.BytesIO(body)).get_environ()
            del environ["CONTENT_LENGTH"]
            environ.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True})  # as gunicorn says it
            # straight to the app: the test client would drop wsgi.input_terminated (and so read no body at all)
            answer, code, _headers = run_wsgi_app(app, environ, buffered=True)
            chunked = (int(code.split()[0]), json.loads(b"".join(answer)))
        finally:
            app.extensions["pex"].close()
        for got in ((sized.status_code, sized.json), chunked):
            assert got[0] == status, (limit, got)
            assert status == 200 or (set(got[1]) == SHAPE and "smaller body" in got[1]["hint"])
            assert status != 200 or len(got[1]["decisions"]) == 200


# -- under gunicorn ----------------------------------------------------------------------------------------------


def _raw(port: int, method: str, path: str, body: bytes, headers: dict[str, str], chunked: bool = False
         ) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        content = iter([body[i:i + 16_384] for i in range(0, len(body), 16_384)]) if chunked else body
        conn.request(method, path, body=content, headers={"Content-Type": "application/json", **headers},
                     encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_under_gunicorn_deep_json_bad_text_and_big_bodies_are_4xx_and_the_workers_keep_serving(served, tmp_path: Path,
                                                                                                monkeypatch):
    """The depth a worker's parser reaches depends on the server's threads and stack, and how a chunked body arrives
    on the server: the same answers under gunicorn."""
    monkeypatch.setenv("PEX_MAX_CONTENT_LENGTH", "500000")  # serve() passes the environment on
    big = json.dumps({"units": [{"unit": f"unit-{i:06d}"} for i in range(30_000)]}).encode()
    assert len(big) > 500_000
    port = free_port()
    with serve(served.home, port, tmp_path) as server:
        wait_ready(port, server)
        decide = {"Authorization": f"Bearer {served.decide}"}
        sent = [
            ("POST", f"{_tree(served)}/decide", _deep().encode(), decide, 400),
            ("POST", f"{_tree(served)}/decide-batch", ('{"units": ' + _deep() + "}").encode(), decide, 400),
            ("POST", "/api/v1/outcomes", _deep().encode(), decide, 400),
            ("POST", "/api/v1/outcomes", b'{"experiment": "exp", "records": [{"unit": "\\ud800", "metric": "sessions", '
                                         b'"value": 1}]}', decide, 422),
            ("POST", "/api/v1/policies/a%00b/publish", b"", {"Authorization": f"Bearer {served.admin}"}, 422),
        ]
        for _ in range(2):  # both workers (most likely) get each case
            for method, path, body, headers, status in sent:
                code, data = _raw(port, method, path, body, headers)
                answer = json.loads(data)
                assert code == status and set(answer) == SHAPE and answer["status"] == status, (path, code, data[:300])
            for chunked in (False, True):
                code, data = _raw(port, "POST", f"{_tree(served)}/decide-batch", big, decide, chunked=chunked)
                assert code == 413 and json.loads(data)["status"] == 413, (chunked, code, data[:300])
        assert _raw(port, "GET", "/readyz", b"", {}) == (200, b'{"ok":true}\n')
        code, data = _raw(port, "POST", f"{_tree(served)}/decide", b'{"unit": "u1"}', decide)
        assert code == 200 and json.loads(data)["policy"] == served.tree
        assert server.proc.poll() is None
