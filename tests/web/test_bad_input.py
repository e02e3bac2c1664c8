"""Hostile and broken requests on every route: each is a 4xx in the error shape, never a 5xx, and no decision is lost.

Most cases go through Flask's test client of ``web.create_app`` (the WSGI stack `pex serve` runs, fast decide path
included); the few that only the real HTTP server can see (a chunked body over the limit, an over-long request
line, huge headers) go to `pex serve` under gunicorn over raw sockets.

The cases share one app on a private workspace copy while they pass (a failed case leaves it for a fresh app, so
that what it broke does not fail the next case). Each sends good decisions before and after its bad request and
ends by writing the decision log: every decision the app answered 200 so far (earlier cases' too, and the bad
request's own, should it wrongly be answered) must be in the log. A bad request that poisons the log (issue 24:
one lone surrogate stopped every later flush of a worker) fails there even when its own answer looked right.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from pex.policy.base import Policy
from pex.services.models import effect_model_by_id
from pex.store.workspace import Workspace
from tests.gunicorn import call, free_port, serve, wait_ready
from tests.shared import Served
from web import create_app

MiB = 1024 * 1024
OVER_LIMIT = 5 * MiB  # the default body limit is about 4 MiB
DEEP = 100_000  # nesting levels: deeper than Python's recursion limit
SHAPE = {"ok", "error", "hint", "status"}
INVALID = (400, 422)  # "not JSON" or "JSON that is not a valid request": the issue allows either where both fit
NOT_JSON_TYPE = (400, 415)  # a body of another media type: "not JSON", or "unsupported media type" (web.errors has a hint)

# placeholders in a case's path and body, filled in per workspace
TREE, VALUE, CONSTANT, ROUTING = "{tree}", "{value}", "{constant}", "{routing}"
NUMERIC, LABEL = "@numeric@", "@label@"  # a numeric / categorical feature of the value policy


@dataclass(frozen=True)
class Case:
    """One bad request: ``body`` is sent as JSON, ``raw`` as bytes (for what JSON encoders will not write);
    ``auth`` is a token scope, None for no header, or ``header:VALUE`` for that literal Authorization header."""

    id: str
    method: str
    path: str
    status: tuple[int, ...]
    body: Any = None
    raw: bytes | None = None
    auth: str | None = "decide"
    content_type: str = "application/json"


def deep(levels: int = DEEP) -> bytes:
    return b"[" * levels + b"]" * levels


DECIDE, BATCH, OUTCOMES = f"/api/v1/policies/{TREE}/decide", f"/api/v1/policies/{TREE}/decide-batch", "/api/v1/outcomes"
VDECIDE = f"/api/v1/policies/{VALUE}/decide"
PUBLISH, ROLLBACK, RELEASES = (f"/api/v1/policies/{TREE}/{r}" for r in ("publish", "rollback", "releases"))


def record(**over: Any) -> dict:
    return {"unit": "u1", "metric": "sessions", "value": 3, **over}


def outcomes(*records: dict, experiment: Any = "exp") -> dict:
    return {"experiment": experiment, "records": list(records)}


CASES = [
    # -- decide: bodies that are not a request -------------------------------------------------------------------
    Case("decide-not-json", "POST", DECIDE, (400,), raw=b"{not json"),
    Case("decide-empty-body", "POST", DECIDE, INVALID, raw=b""),
    Case("decide-json-array", "POST", DECIDE, (422,), body=[1, 2]),
    Case("decide-json-number", "POST", DECIDE, (422,), raw=b"42"),
    Case("decide-json-string", "POST", DECIDE, (422,), raw=b'"u1"'),
    Case("decide-json-null", "POST", DECIDE, (422,), raw=b"null"),
    Case("decide-json-true", "POST", DECIDE, (422,), raw=b"true"),
    Case("decide-100k-deep-array", "POST", DECIDE, INVALID, raw=deep()),
    Case("decide-100k-deep-in-features", "POST", DECIDE, INVALID,
         raw=b'{"unit": "u1", "features": {"x": ' + deep() + b"}}"),
    Case("decide-duplicate-unit-key", "POST", DECIDE, INVALID, raw=b'{"unit": "u1", "unit": "u2", "features": {}}'),
    Case("decide-binary-garbage", "POST", DECIDE, NOT_JSON_TYPE, raw=bytes(range(256)) * 4, content_type="application/octet-stream"),
    Case("decide-invalid-utf8", "POST", DECIDE, (400,), raw=b'{"unit": "u\xff\xfe1", "features": {}}'),
    Case("decide-surrogate-as-utf8-bytes", "POST", DECIDE, INVALID, raw=b'{"unit": "u\xed\xa0\x801", "features": {}}'),
    Case("decide-latin1-charset-claimed", "POST", DECIDE, (400,), raw=b'{"unit": "caf\xe9", "features": {}}',
         content_type="application/json; charset=latin-1"),
    Case("decide-form-urlencoded", "POST", DECIDE, NOT_JSON_TYPE, raw=b"unit=u1&features=x",
         content_type="application/x-www-form-urlencoded"),
    Case("decide-multipart", "POST", DECIDE, NOT_JSON_TYPE,
         raw=b'--b\r\nContent-Disposition: form-data; name="unit"\r\n\r\nu1\r\n--b--\r\n',
         content_type="multipart/form-data; boundary=b"),
    Case("decide-text-plain-prose", "POST", DECIDE, NOT_JSON_TYPE, raw=b"please decide for u1", content_type="text/plain"),
    Case("decide-body-over-4mib", "POST", DECIDE, (413,), body={"unit": "u1", "features": {"pad": "x" * OVER_LIMIT}}),
    # -- decide: the unit id -------------------------------------------------------------------------------------
    Case("decide-unit-missing", "POST", DECIDE, (422,), body={"features": {}}),
    Case("decide-unit-null", "POST", DECIDE, (422,), body={"unit": None, "features": {}}),
    Case("decide-unit-bool", "POST", DECIDE, (422,), body={"unit": True, "features": {}}),
    Case("decide-unit-float", "POST", DECIDE, (422,), body={"unit": 1.5, "features": {}}),
    Case("decide-unit-object", "POST", DECIDE, (422,), body={"unit": {"id": 1}, "features": {}}),
    Case("decide-unit-empty", "POST", DECIDE, (422,), body={"unit": "", "features": {}}),
    Case("decide-unit-100k-chars", "POST", DECIDE, (422,), body={"unit": "u" * 100_000, "features": {}}),
    Case("decide-unit-nul", "POST", DECIDE, (422,), body={"unit": "u\x001", "features": {}}),
    Case("decide-unit-5000-digit-integer", "POST", DECIDE, INVALID, raw=b'{"unit": 1' + b"0" * 5000 + b', "features": {}}'),
    *[Case(f"decide-unit-lone-surrogate-{kind}", "POST", f"/api/v1/policies/{{{kind}}}/decide", (422,),
           body={"unit": "u\ud8001", "features": {}}) for kind in ("tree", "value", "constant", "routing")],
    Case("decide-unit-lone-low-surrogate", "POST", DECIDE, (422,), body={"unit": "\udfff", "features": {}}),
    # -- decide: the features ------------------------------------------------------------------------------------
    Case("decide-features-array", "POST", DECIDE, (422,), body={"unit": "u1", "features": [1]}),
    Case("decide-features-string", "POST", DECIDE, (422,), body={"unit": "u1", "features": "age=3"}),
    Case("decide-numeric-feature-text", "POST", VDECIDE, (422,), body={"unit": "u1", "features": {NUMERIC: "abc"}}),
    Case("decide-numeric-feature-bool", "POST", VDECIDE, (422,), body={"unit": "u1", "features": {NUMERIC: True}}),
    Case("decide-numeric-feature-NaN-token", "POST", VDECIDE, INVALID,
         raw=b'{"unit": "u1", "features": {"@numeric@": NaN}}'),
    Case("decide-numeric-feature-Infinity-token", "POST", VDECIDE, INVALID,
         raw=b'{"unit": "u1", "features": {"@numeric@": Infinity}}'),
    Case("decide-numeric-feature-minus-Infinity", "POST", VDECIDE, INVALID,
         raw=b'{"unit": "u1", "features": {"@numeric@": -Infinity}}'),
    Case("decide-numeric-feature-1e999", "POST", VDECIDE, INVALID, raw=b'{"unit": "u1", "features": {"@numeric@": 1e999}}'),
    Case("decide-label-feature-object", "POST", VDECIDE, (422,), body={"unit": "u1", "features": {LABEL: {"a": 1}}}),
    Case("decide-label-feature-lone-surrogate", "POST", VDECIDE, (422,), body={"unit": "u1", "features": {LABEL: "\ud800"}}),
    Case("decide-label-feature-nul", "POST", VDECIDE, (422,), body={"unit": "u1", "features": {LABEL: "ios\x00"}}),
    Case("decide-label-feature-1m-chars", "POST", VDECIDE, (422,), body={"unit": "u1", "features": {LABEL: "x" * MiB}}),
    # -- decide: tokens, policy names, methods --------------------------------------------------------------------
    Case("decide-no-token", "POST", DECIDE, (401,), body={"unit": "u1"}, auth=None),
    Case("decide-bearer-without-token", "POST", DECIDE, (401,), body={"unit": "u1"}, auth="header:Bearer"),
    Case("decide-bearer-unknown-token", "POST", DECIDE, (401,), body={"unit": "u1"}, auth="header:Bearer pex_not_a_token"),
    Case("decide-basic-auth", "POST", DECIDE, (401,), body={"unit": "u1"}, auth="header:Basic dXNlcjpwYXNz"),
    Case("decide-token-without-scheme", "POST", DECIDE, (401,), body={"unit": "u1"}, auth="header:@decide-token@"),
    Case("decide-bearer-latin1-garble", "POST", DECIDE, (401,), body={"unit": "u1"}, auth="header:Bearer pex_\xe9\xff\xe9"),
    Case("decide-bearer-20k-chars", "POST", DECIDE, (401,), body={"unit": "u1"}, auth="header:Bearer " + "a" * 20_000),
    Case("decide-unknown-policy", "POST", "/api/v1/policies/no-such-policy/decide", (404,), body={"unit": "u1"}),
    Case("decide-policy-name-percent-ff", "POST", "/api/v1/policies/%FF%FE/decide", (404, 422), body={"unit": "u1"}),
    Case("decide-policy-name-percent-nul", "POST", "/api/v1/policies/a%00b/decide", (404, 422), body={"unit": "u1"}),
    Case("decide-policy-name-percent-surrogate", "POST", "/api/v1/policies/%ED%A0%80/decide", (404, 422),
         body={"unit": "u1"}),
    Case("decide-policy-name-percent-crlf", "POST", "/api/v1/policies/a%0D%0Ab/decide", (404, 422), body={"unit": "u1"}),
    Case("decide-policy-name-5000-chars", "POST", f"/api/v1/policies/{'p' * 5000}/decide", (404, 414, 422),
         body={"unit": "u1"}),
    Case("decide-get", "GET", DECIDE, (405,)),
    # -- decide-batch ---------------------------------------------------------------------------------------------
    Case("batch-not-json", "POST", BATCH, (400,), raw=b"units: [u1]"),
    Case("batch-json-null", "POST", BATCH, (422,), raw=b"null"),
    Case("batch-no-units", "POST", BATCH, (422,), body={}),
    Case("batch-units-string", "POST", BATCH, (422,), body={"units": "u1,u2"}),
    Case("batch-units-empty", "POST", BATCH, (422,), body={"units": []}),
    Case("batch-unit-item-number", "POST", BATCH, (422,), body={"units": [{"unit": "a"}, 7]}),
    Case("batch-10001-units", "POST", BATCH, (413, 422), body={"units": [{"unit": str(i)} for i in range(10_001)]}),
    Case("batch-lone-surrogate-in-second-unit", "POST", BATCH, (422,),
         body={"units": [{"unit": "a"}, {"unit": "b\ud800"}, {"unit": "c"}]}),
    Case("batch-nul-in-unit", "POST", BATCH, (422,), body={"units": [{"unit": "a"}, {"unit": "b\x00"}]}),
    Case("batch-feature-NaN-token", "POST", f"/api/v1/policies/{VALUE}/decide-batch", INVALID,
         raw=b'{"units": [{"unit": "a", "features": {"@numeric@": NaN}}]}'),
    Case("batch-100k-deep", "POST", BATCH, INVALID, raw=b'{"units": ' + deep() + b"}"),
    Case("batch-body-over-4mib", "POST", BATCH, (413,),
         body={"units": [{"unit": f"u{i}", "features": {"pad": "x" * 1000}} for i in range(5200)]}),
    Case("batch-no-token", "POST", BATCH, (401,), body={"units": [{"unit": "a"}]}, auth=None),
    Case("batch-unknown-policy", "POST", "/api/v1/policies/ghost/decide-batch", (404,), body={"units": [{"unit": "a"}]}),
    Case("batch-put", "PUT", BATCH, (405,), body={"units": [{"unit": "a"}]}),
    # -- outcomes -------------------------------------------------------------------------------------------------
    Case("outcomes-not-json", "POST", OUTCOMES, (400,), raw=b"exp,u1,sessions,3"),
    Case("outcomes-json-array", "POST", OUTCOMES, (422,), body=[record()]),
    Case("outcomes-json-null", "POST", OUTCOMES, (422,), raw=b"null"),
    Case("outcomes-no-experiment", "POST", OUTCOMES, (422,), body={"records": [record()]}),
    Case("outcomes-experiment-number", "POST", OUTCOMES, (422,), body=outcomes(record(), experiment=3)),
    Case("outcomes-records-object", "POST", OUTCOMES, (422,), body={"experiment": "exp", "records": record()}),
    Case("outcomes-record-without-value", "POST", OUTCOMES, (422,), body=outcomes({"unit": "u1", "metric": "sessions"})),
    Case("outcomes-unknown-metric", "POST", OUTCOMES, (422,), body=outcomes(record(metric="revenue"))),
    Case("outcomes-value-text", "POST", OUTCOMES, (422,), body=outcomes(record(value="3"))),
    Case("outcomes-value-bool", "POST", OUTCOMES, (422,), body=outcomes(record(value=True))),
    Case("outcomes-value-NaN-token", "POST", OUTCOMES, INVALID,
         raw=b'{"experiment": "exp", "records": [{"unit": "u1", "metric": "sessions", "value": NaN}]}'),
    Case("outcomes-value-Infinity-token", "POST", OUTCOMES, INVALID,
         raw=b'{"experiment": "exp", "records": [{"unit": "u1", "metric": "sessions", "value": Infinity}]}'),
    Case("outcomes-binary-metric-minus-5", "POST", OUTCOMES, (422,), body=outcomes(record(metric="converted", value=-5))),
    Case("outcomes-binary-metric-half", "POST", OUTCOMES, (422,), body=outcomes(record(metric="converted", value=0.5))),
    Case("outcomes-unit-lone-surrogate", "POST", OUTCOMES, (422,), body=outcomes(record(), record(unit="u\ud800"))),
    Case("outcomes-unit-nul", "POST", OUTCOMES, (422,), body=outcomes(record(unit="u\x00"))),
    Case("outcomes-metric-lone-surrogate", "POST", OUTCOMES, (422,), body=outcomes(record(metric="sessions\udc00"))),
    Case("outcomes-experiment-lone-surrogate", "POST", OUTCOMES, (404, 422), body=outcomes(record(), experiment="exp\ud800")),
    Case("outcomes-experiment-nul", "POST", OUTCOMES, (404, 422), body=outcomes(record(), experiment="exp\x00")),
    Case("outcomes-experiment-newline", "POST", OUTCOMES, (404, 422), body=outcomes(record(), experiment="exp\n--")),
    Case("outcomes-experiment-100k-chars", "POST", OUTCOMES, (404, 422), body=outcomes(record(), experiment="e" * 100_000)),
    Case("outcomes-unknown-experiment", "POST", OUTCOMES, (404,), body=outcomes(record(), experiment="ghost")),
    Case("outcomes-100k-deep", "POST", OUTCOMES, INVALID, raw=b'{"experiment": "exp", "records": ' + deep() + b"}"),
    Case("outcomes-duplicate-experiment-key", "POST", OUTCOMES, INVALID,
         raw=b'{"experiment": "exp", "experiment": "ghost", "records": [{"unit": "u1", "metric": "sessions", "value": 1}]}'),
    Case("outcomes-body-over-4mib", "POST", OUTCOMES, (413,), body={**outcomes(record()), "pad": "x" * OVER_LIMIT}),
    Case("outcomes-no-token", "POST", OUTCOMES, (401,), body=outcomes(record()), auth=None),
    Case("outcomes-get", "GET", OUTCOMES, (405,)),
    # -- publish, rollback, releases (admin) ---------------------------------------------------------------------
    Case("publish-version-2-to-the-31", "POST", PUBLISH, (422,), body={"version": 2**31}, auth="admin"),
    Case("publish-version-400-digits", "POST", PUBLISH, (422,), raw=b'{"version": 1' + b"0" * 400 + b"}", auth="admin"),
    Case("publish-version-negative", "POST", PUBLISH, (422,), body={"version": -1}, auth="admin"),
    Case("publish-version-zero", "POST", PUBLISH, (422,), body={"version": 0}, auth="admin"),
    Case("publish-version-float", "POST", PUBLISH, (422,), body={"version": 1.5}, auth="admin"),
    Case("publish-version-bool", "POST", PUBLISH, (422,), body={"version": True}, auth="admin"),
    Case("publish-version-text", "POST", PUBLISH, (422,), body={"version": "3"}, auth="admin"),
    Case("publish-version-NaN-token", "POST", PUBLISH, INVALID, raw=b'{"version": NaN}', auth="admin"),
    Case("publish-version-1e999", "POST", PUBLISH, INVALID, raw=b'{"version": 1e999}', auth="admin"),
    Case("publish-json-array", "POST", PUBLISH, (422,), body=[1], auth="admin"),
    Case("publish-not-json", "POST", PUBLISH, (400,), raw=b"version=3", auth="admin"),
    Case("publish-100k-deep", "POST", PUBLISH, INVALID, raw=deep(), auth="admin"),
    Case("publish-unknown-version", "POST", PUBLISH, (404,), body={"version": 999}, auth="admin"),
    Case("publish-unknown-policy", "POST", "/api/v1/policies/ghost/publish", (404,), body={}, auth="admin"),
    Case("publish-policy-name-percent-surrogate", "POST", "/api/v1/policies/%ED%A0%80/publish", (404, 422), body={},
         auth="admin"),
    Case("publish-policy-name-percent-nul", "POST", "/api/v1/policies/x%00y/publish", (404, 422), body={}, auth="admin"),
    Case("publish-decide-scope", "POST", PUBLISH, (403,), body={}, auth="decide"),
    Case("publish-no-token", "POST", PUBLISH, (401,), body={}, auth=None),
    Case("rollback-unknown-policy", "POST", "/api/v1/policies/ghost/rollback", (404,), auth="admin"),
    Case("rollback-with-nothing-before", "POST", f"/api/v1/policies/{CONSTANT}/rollback", (400, 404, 409, 422), auth="admin"),
    Case("rollback-policy-name-percent-ff", "POST", "/api/v1/policies/%FF/rollback", (404, 422), auth="admin"),
    Case("rollback-decide-scope", "POST", ROLLBACK, (403,), auth="decide"),
    Case("rollback-get", "GET", ROLLBACK, (405,), auth="admin"),
    Case("releases-decide-scope", "GET", RELEASES, (403,), auth="decide"),
    Case("releases-garbled-auth", "GET", RELEASES, (401,), auth="header:Bearer \x01\x02"),
    Case("releases-post", "POST", RELEASES, (405,), auth="admin"),
    # -- the read-only routes -------------------------------------------------------------------------------------
    Case("policies-no-token", "GET", "/api/v1/policies", (401,), auth=None),
    Case("policies-decide-scope", "GET", "/api/v1/policies", (403,), auth="decide"),
    Case("policies-post", "POST", "/api/v1/policies", (405,), body={}, auth="admin"),
    Case("openapi-no-token", "GET", "/api/v1/openapi.json", (401,), auth=None),
    Case("openapi-decide-scope", "GET", "/api/v1/openapi.json", (403,), auth="decide"),
    Case("openapi-post", "POST", "/api/v1/openapi.json", (405,), auth="admin"),
    Case("metrics-no-token", "GET", "/metrics", (401,), auth=None),
    Case("metrics-decide-scope", "GET", "/metrics", (403,), auth="decide"),
    Case("metrics-delete", "DELETE", "/metrics", (405,), auth="admin"),
    Case("healthz-post", "POST", "/healthz", (405,), body={}),
    Case("readyz-delete", "DELETE", "/readyz", (405,)),
    Case("unknown-route", "GET", "/api/v1/nothing-here", (404,)),
    Case("unknown-api-version", "POST", "/api/v2/policies/x/decide", (404,), body={"unit": "u1"}),
    Case("path-percent-garbage", "GET", "/%FF%FE%00", (404,)),
]


class Harness:
    """The app on a private workspace copy, shared by the cases while they pass (a failed case leaves it for a fresh
    one: what it broke must not fail the next case), and every decision it answered 200."""

    def __init__(self, served: Any, numeric: str, label: str) -> None:
        self.served, self.numeric, self.label = served, numeric, label
        self.app = create_app({"HOME": str(served.home), "REFRESH_SECONDS": 0.2, "FLUSH_SECONDS": 0.2})
        self.client = self.app.test_client()
        self.answered: list[str] = []
        self.names = {TREE: served.tree, VALUE: served.value, CONSTANT: served.constant, ROUTING: served.routing}
        self.broken = False

    def fill(self, text: str) -> str:
        for key, name in self.names.items():
            text = text.replace(key, name)
        return text.replace(NUMERIC, self.numeric).replace(LABEL, self.label)

    def fill_body(self, body: Any) -> Any:
        if isinstance(body, dict):
            return {self.fill(k): self.fill_body(v) for k, v in body.items()}
        if isinstance(body, list):
            return [self.fill_body(v) for v in body]
        return body

    def request(self, case: Case) -> Any:
        headers: dict[str, str] = {}
        if case.auth is not None and case.auth.startswith("header:"):
            headers["Authorization"] = case.auth.removeprefix("header:").replace("@decide-token@", self.served.decide)
        elif case.auth is not None:
            headers.update(self.served.headers(case.auth))
        if case.raw is not None:
            data = case.raw.replace(NUMERIC.encode(), self.numeric.encode())
        elif case.body is not None:
            # ensure_ascii (the default) writes lone surrogates and NUL as \u escapes, as a hostile client would
            data = json.dumps(self.fill_body(case.body)).encode()
        else:
            data = None
        if data is not None:
            headers["Content-Type"] = case.content_type
        response = self.client.open(self.fill(case.path), method=case.method, data=data, headers=headers)
        self.count(response)
        return response

    def count(self, response: Any) -> None:
        """Remember the decisions an answer carries: each must be in the log afterwards."""
        if response.status_code == 200 and response.is_json:
            answer = response.get_json()
            if isinstance(answer, dict):
                self.answered += [d["decision_id"] for d in answer.get("decisions", []) if "decision_id" in d]
                if "decision_id" in answer:
                    self.answered.append(answer["decision_id"])

    def good_decisions(self, tag: str) -> None:
        """Ordinary decides on the fast path, through Flask (a batch) and on the value policy."""
        h = self.served.headers()
        for path, body in ((f"/api/v1/policies/{self.served.tree}/decide", {"unit": f"{tag}-1", "features": {}}),
                           (f"/api/v1/policies/{self.served.tree}/decide-batch",
                            {"units": [{"unit": f"{tag}-2"}, {"unit": f"{tag}-3", "features": {}}]}),
                           (f"/api/v1/policies/{self.served.value}/decide", {"unit": f"{tag}-4", "features": {}})):
            r = self.client.post(path, json=body, headers=h)
            assert r.status_code == 200, (tag, r.get_json())
            self.count(r)

    def logged(self) -> list[str]:
        """Write what the decision log buffered now, then read the log back (a flush that fails is a failure)."""
        try:
            self.app.extensions["pex"].server.decision_log.flush()
        except Exception as exc:
            raise AssertionError(f"the decision log cannot be written any more: {exc!r}") from exc
        # the server's own workspace: opening another checks the schema each time, which dominated this suite's time
        return list(self.app.extensions["pex"].ws.read_decisions()["decision_id"])

    def close(self) -> None:
        self.app.extensions["pex"].close()


class Shared:
    """A prepared workspace (policies published, tokens made) to copy, and the harness the cases share."""

    def __init__(self, template: Any, base: Path) -> None:
        self.template, self.base = template, base
        ws = Workspace(template.home, create=False)
        try:
            record = ws.get_policy(template.value)
            policy = Policy.from_document(record.document, lambda vm: effect_model_by_id(ws, vm["fit"]))
        finally:
            ws.close()
        kinds = policy.feature_kinds()
        self.numeric = next(f for f, k in kinds.items() if k == "numeric")
        self.label = next(f for f, k in kinds.items() if k == "categorical")
        self.current: Harness | None = None
        self.made = 0

    def harness(self) -> Harness:
        if self.current is None or self.current.broken:
            if self.current is not None:
                self.current.close()
            self.made += 1
            served = copy.copy(self.template)
            served.home = self.base / f"ws{self.made}"
            shutil.copytree(self.template.home, served.home)
            self.current = Harness(served, self.numeric, self.label)
        return self.current


@pytest.fixture(scope="module")
def shared(tmp_path_factory, serving_home):
    base = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(serving_home, base / "template")
    s = Shared(Served(base / "template"), base)
    yield s
    if s.current is not None:
        s.current.close()


@pytest.fixture
def harness(shared):
    return shared.harness()


def check_shape(response: Any, statuses: tuple[int, ...], home: Any) -> None:
    """A 4xx among ``statuses`` in the error shape, saying what is wrong and how to fix it, naming no local path."""
    text = response.get_data(as_text=True)
    assert response.status_code in statuses, (response.status_code, text[:500])
    assert response.is_json, (response.status_code, response.content_type, text[:300])
    body = response.get_json()
    assert set(body) == SHAPE, body
    assert body["ok"] is False and body["status"] == response.status_code, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["hint"], str) and body["hint"], body
    assert str(home) not in text and str(home.parent) not in text, body  # no path of the server in an error body
    if response.status_code == 403:
        assert "'admin' or 'admin'" not in body["hint"], body


def test_the_suite_covers_every_route_with_at_least_60_cases(served):
    app = create_app({"HOME": str(served.home)})
    try:
        rules = {r.rule for r in app.url_map.iter_rules() if r.endpoint != "static"}
        adapter = app.url_map.bind("localhost")
        covered = set()
        for case in CASES:
            path = case.path.replace(TREE, "x").replace(VALUE, "x").replace(CONSTANT, "x").replace(ROUTING, "x")
            try:
                rule, _ = adapter.match(path, method=case.method, return_rule=True)
            except MethodNotAllowed as exc:  # a wrong method on the route still covers it
                rule, _ = adapter.match(path, method=sorted(exc.valid_methods or ["GET"])[0], return_rule=True)
            except NotFound:
                continue
            covered.add(rule.rule)
    finally:
        app.extensions["pex"].close()
    assert rules <= covered, rules - covered
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_is_a_4xx_in_the_error_shape_and_the_log_stays_whole(harness, case):
    harness.broken = True  # until every check passed: then the next case may go on with this app
    response = harness.request(case)  # the previous case's good decisions came just before it
    harness.good_decisions("after")
    check_shape(response, case.status, harness.served.home)
    logged = harness.logged()  # every decision answered by this app so far, earlier cases' included
    assert sorted(logged) == sorted(harness.answered), (
        f"{len(harness.answered)} decisions answered, {len(logged)} logged; "
        f"missing {len(set(harness.answered) - set(logged))}")
    harness.broken = False


# -- over real HTTP: what only the server in front of the app sees ------------------------------------------------


def raw_exchange(port: int, payload: bytes | list[bytes], timeout: float = 30) -> tuple[int, str, bytes]:
    """Send ``payload`` (parts sent one after another, for a chunked body) on a fresh socket and read the answer
    until the server closes; (status, Content-Type, body). The server may answer and close before the whole
    payload is sent: a broken pipe then is the expected end, not an error."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            for part in [payload] if isinstance(payload, bytes) else payload:
                s.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and _complete(data):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/"), data[:300]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def http_head(method: str, path: str, port: int, extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{extra}".encode()


def over_http_cases(port: int, tree: str, token: str) -> dict[str, tuple[tuple[int, ...], bytes | list[bytes]]]:
    """Label -> (allowed statuses, the bytes sent)."""
    auth = f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    path = f"/api/v1/policies/{tree}/decide-batch"
    piece = b"x" * MiB
    chunks = [http_head("POST", path, port, auth + "Transfer-Encoding: chunked\r\n\r\n")]
    chunks += [f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(OVER_LIMIT // MiB + 1)] + [b"0\r\n\r\n"]
    body = b"x" * OVER_LIMIT
    return {
        "chunked-body-over-4mib": ((413,), chunks),
        "content-length-body-over-4mib": ((413,), http_head("POST", path, port, auth + f"Content-Length: {len(body)}\r\n\r\n")
                                          + body),
        "request-line-10k-chars": ((414,), http_head("GET", "/healthz?" + "q" * 10_000, port, "\r\n")),
        "one-header-20k-chars": ((431,), http_head("GET", "/healthz", port, "X-Big: " + "h" * 20_000 + "\r\n\r\n")),
        "200-headers": ((431,), http_head("GET", "/healthz", port, "".join(f"X-H{i}: v\r\n" for i in range(200)) + "\r\n")),
    }


@pytest.mark.slow  # a server of its own; tests/web/test_bodies.py covers the same answers in make test
def test_over_http_oversized_bodies_lines_and_headers_get_the_error_shape(tmp_path, served):
    port = free_port()
    answered = 0
    failures = {}
    with serve(served.home, port, tmp_path) as server:
        wait_ready(port, server)

        def good() -> None:
            nonlocal answered
            status, body = call(port, "POST", f"/api/v1/policies/{served.tree}/decide",
                                {"unit": f"good-{answered}", "features": {}}, served.decide)
            assert status == 200, body
            answered += 1

        good()
        for label, (statuses, payload) in over_http_cases(port, served.tree, served.decide).items():
            status, content_type, body = raw_exchange(port, payload)
            try:
                answer = json.loads(body) if content_type.startswith("application/json") else None
            except ValueError:
                answer = None
            shaped = (isinstance(answer, dict) and set(answer) == SHAPE and answer["ok"] is False
                      and answer["status"] == status and bool(answer["error"]) and bool(answer["hint"]))
            if status not in statuses or not shaped:
                failures[label] = (status, content_type, body[:200])
            good()
        assert server.signal_and_wait(signal.SIGTERM, timeout=60) == 0
    with Workspace(served.home, create=False) as ws:
        assert ws.count_decisions(served.tree) == answered
    assert not failures, "\n".join(f"{label}: {status} {kind!r} {body[:160]!r}" for label, (status, kind, body)
                                    in failures.items())
