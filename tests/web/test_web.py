"""The JSON API through Flask's test client: decisions, errors, auth per route, publish/rollback, the log."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from pex.policy.base import Policy
from pex.services.models import effect_model_by_id
from pex.store.workspace import Workspace
from web import create_app


@pytest.fixture
def app(served):
    app = create_app({"HOME": str(served.home), "REFRESH_SECONDS": 0.2, "FLUSH_SECONDS": 0.2})
    yield app
    app.extensions["pex"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def _units(served, n: int) -> pd.DataFrame:
    with Workspace(served.home, create=False) as ws:
        frame = ws.load_dataset("exp")[0].frame
    return frame.iloc[:n].reset_index(drop=True)


def _policy(served, name: str) -> Policy:
    ws = Workspace(served.home, create=False)
    return Policy.from_document(ws.get_policy(name).document, lambda vm: effect_model_by_id(ws, vm["fit"]))


def _features(row: pd.Series, names: list[str]) -> dict:
    out = {}
    for f in names:
        v = row[f]
        out[f] = None if pd.isna(v) else (v.item() if isinstance(v, np.generic) else v)
    return out


@pytest.mark.parametrize("kind", ["tree", "value", "constant", "routing"])
def test_decide_gives_the_arms_and_propensities_of_pex_decide(served, client, kind):
    name = getattr(served, kind)
    policy = _policy(served, name)
    units = _units(served, 300)
    want_arms, want_p = policy.decide(units, units["user_id"])
    if kind == "routing":  # a cross-fitted policy: both halves' routes serve some of these units
        assert set(policy.route_of(units["user_id"])) == {0, 1}
    body = {"units": [{"unit": u, "features": _features(r, policy.features)} for u, (_, r) in zip(units["user_id"], units.iterrows())]}
    batch = client.post(f"/api/v1/policies/{name}/decide-batch", json=body, headers=served.headers())
    assert batch.status_code == 200, batch.json
    got = batch.json["decisions"]
    assert [d["unit"] for d in got] == list(units["user_id"])
    assert [d["arm"] for d in got] == list(want_arms)
    np.testing.assert_allclose([d["propensity"] for d in got], want_p)
    for i in (0, 1, 2):  # one at a time, the same answer as in the batch and as `pex decide`
        one = client.post(f"/api/v1/policies/{name}/decide", json=body["units"][i], headers=served.headers())
        assert one.status_code == 200
        assert set(one.json) == {"arm", "policy", "version", "propensity", "decision_id"}
        assert (one.json["arm"], one.json["policy"]) == (want_arms[i], name)
        assert one.json["decision_id"] != got[i]["decision_id"]


def test_missing_and_unknown_features_follow_the_declared_paths(served, client):
    policy = _policy(served, served.tree)
    frame = pd.DataFrame({f: np.array([np.nan] if k == "numeric" else [None], dtype=float if k == "numeric" else object)
                          for f, k in policy.feature_kinds().items()}, index=[0])
    want = policy.decide(frame, np.array(["u-missing"], dtype=object))[0][0]
    for features in ({}, {f: None for f in policy.features}, {"not_a_feature": 3}):
        r = client.post(f"/api/v1/policies/{served.tree}/decide", json={"unit": "u-missing", "features": features},
                        headers=served.headers())
        assert r.status_code == 200 and r.json["arm"] == want
    categorical = [f for f, k in policy.feature_kinds().items() if k == "categorical"]
    if categorical:
        r = client.post(f"/api/v1/policies/{served.tree}/decide",
                        json={"unit": "u-missing", "features": {categorical[0]: "never-seen-label"}}, headers=served.headers())
        assert r.status_code == 200


@pytest.mark.parametrize(("body", "status", "words"), [
    ("{not json", 400, "not valid JSON"),
    ([1, 2], 422, "JSON object"),
    ({"features": {}}, 422, "unit must be"),
    ({"unit": "", "features": {}}, 422, "1 to 256"),
    ({"unit": {"a": 1}}, 422, "unit must be"),
    ({"unit": "u1", "features": [1]}, 422, "features must be an object"),
])
def test_malformed_requests_get_4xx_with_the_error_shape(served, client, body, status, words):
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    r = client.post(f"/api/v1/policies/{served.tree}/decide", headers=served.headers(), **kwargs)
    assert r.status_code == status, r.json
    assert set(r.json) == {"ok", "error", "hint", "status"} and r.json["ok"] is False and r.json["status"] == status
    assert words in r.json["error"] and r.json["hint"]


def test_a_feature_of_the_wrong_type_is_422_and_names_the_feature(served, client):
    policy = _policy(served, served.value)
    kinds = policy.feature_kinds()
    numeric = next(f for f, k in kinds.items() if k == "numeric")
    for bad in ("abc", True, [1], {"x": 1}):
        r = client.post(f"/api/v1/policies/{served.value}/decide", json={"unit": "u1", "features": {numeric: bad}},
                        headers=served.headers())
        assert r.status_code == 422 and numeric in r.json["error"], (bad, r.json)
    r = client.post(f"/api/v1/policies/{served.value}/decide-batch",
                    json={"units": [{"unit": "a", "features": {}}, {"unit": "b", "features": {numeric: "x"}}]},
                    headers=served.headers())
    assert r.status_code == 422 and "units[1]" in r.json["error"]


def test_unknown_policy_is_404_and_a_batch_over_the_limit_422(served, client):
    r = client.post("/api/v1/policies/no-such-policy/decide", json={"unit": "u1"}, headers=served.headers())
    assert r.status_code == 404 and "pex publish" in r.json["hint"]
    r = client.post(f"/api/v1/policies/{served.tree}/decide-batch",
                    json={"units": [{"unit": str(i)} for i in range(10_001)]}, headers=served.headers())
    assert r.status_code == 422 and "10000" in r.json["error"]
    assert client.get("/no/such/route", headers=served.headers()).json["status"] == 404


def _routes(app) -> list[tuple[str, str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        scope = getattr(view, "scope", None)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.rule.replace("<name>", "x"), method, scope))
    return out


def test_auth_matrix_every_route_but_health_needs_a_token_of_its_scope(served, app, client):
    routes = _routes(app)
    assert {path for path, _, scope in routes if scope is None} == {"/healthz", "/readyz", "/static/<path:filename>"} \
        or {path for path, _, scope in routes if scope is None} == {"/healthz", "/readyz"}
    checked = 0
    for path, method, scope in routes:
        if scope is None:
            continue
        call = getattr(client, method.lower())
        assert call(path).status_code == 401, path
        assert call(path, headers={"Authorization": "Bearer pex_bogus_token"}).status_code == 401, path
        assert call(path, headers={"Authorization": "Basic abc"}).status_code == 401, path
        if scope == "admin":
            r = call(path, headers=served.headers("decide"))
            assert r.status_code == 403 and r.json["ok"] is False, path
        # the right scope passes the check (what follows may still be a 4xx about the body, never 401/403)
        for token_scope in ({"decide", "admin"} if scope == "decide" else {"admin"}):
            assert call(path, headers=served.headers(token_scope)).status_code not in (401, 403), (path, token_scope)
        checked += 1
    assert checked >= 9
    for path in ("/healthz", "/readyz"):
        assert client.get(path).status_code == 200


def test_a_revoked_token_stops_working_within_its_ttl(served, app, client):
    url = f"/api/v1/policies/{served.tree}/decide"
    assert client.post(url, json={"unit": "u1"}, headers=served.headers()).status_code == 200
    with Workspace(served.home) as ws:
        ws.revoke_token("test-decide")
    deadline = time.monotonic() + app.config["TOKEN_TTL_SECONDS"] + 2
    while client.post(url, json={"unit": "u1"}, headers=served.headers()).status_code == 200:
        assert time.monotonic() < deadline, "revoked token still accepted"
        time.sleep(0.1)
    assert client.post(url, json={"unit": "u1"}, headers=served.headers()).status_code == 401


def test_publish_and_rollback_over_http_switch_the_served_version(served, client):
    with Workspace(served.home) as ws:
        record = ws.get_policy(served.tree)
        doc = {**record.document, "exploration": 0.5}
        ws.put_policies("exp", [(doc, None)], fit_id=record.fit_id)
    url = f"/api/v1/policies/{served.tree}"
    # a hand-made version no run certified: it goes live through the gate only as a forced publish
    r = client.post(f"{url}/publish", json={"version": record.version + 1, "force": True, "reason": "switch test"},
                    headers=served.headers("admin"))
    assert r.status_code == 200 and (r.json["from_version"], r.json["to_version"]) == (record.version, record.version + 1)
    assert r.json["actor"] == "token:test-admin"

    def served_version() -> int:
        return client.post(f"{url}/decide", json={"unit": "u1"}, headers=served.headers()).json["version"]

    deadline = time.monotonic() + 5
    while served_version() != record.version + 1:
        assert time.monotonic() < deadline, "new version not served within 5 s"
        time.sleep(0.05)
    r = client.post(f"{url}/rollback", headers=served.headers("admin"))
    assert r.status_code == 200 and r.json["to_version"] == record.version
    deadline = time.monotonic() + 5
    while served_version() != record.version:
        assert time.monotonic() < deadline, "rollback not served within 5 s"
        time.sleep(0.05)
    history = client.get(f"{url}/releases", headers=served.headers("admin")).json["releases"]
    assert [(h["action"], h["from_version"], h["to_version"]) for h in history] == [
        ("publish", None, record.version), ("publish", record.version, record.version + 1),
        ("rollback", record.version + 1, record.version)]
    r = client.post(f"{url}/publish", json={"version": 999}, headers=served.headers("admin"))
    assert r.status_code == 404
    r = client.post(f"{url}/publish", json={"version": "two"}, headers=served.headers("admin"))
    assert r.status_code == 422


def test_every_decision_served_is_logged_with_its_features_after_close(served, app, client):
    name = served.tree
    policy = _policy(served, name)
    units = _units(served, 50)
    ids = []
    for u, (_, row) in zip(units["user_id"], units.iterrows()):
        r = client.post(f"/api/v1/policies/{name}/decide", json={"unit": u, "features": _features(row, policy.features)},
                        headers=served.headers())
        ids.append(r.json["decision_id"])
    body = {"units": [{"unit": f"b{i}", "features": {}} for i in range(1000)]}
    ids += [d["decision_id"] for d in client.post(f"/api/v1/policies/{name}/decide-batch", json=body,
                                                  headers=served.headers()).json["decisions"]]
    app.extensions["pex"].close()
    with Workspace(served.home, create=False) as ws:
        log = ws.read_decisions(policy=name)
    assert list(log["decision_id"]) == ids  # all of them, once each, in order
    first = log.iloc[0]
    assert first["unit"] == units["user_id"][0] and first["experiment"] == "exp" and first["version"] == policy.version
    assert set(first["features"]) == set(policy.features)
    assert 0 < first["propensity"] <= 1 and str(first["decided_at"].tz) == "UTC"


def test_readiness_metrics_and_openapi(served, client):
    assert client.get("/readyz").json == {"ok": True}  # the details need an admin token (tests/web/test_hygiene.py)
    ready = client.get("/readyz", headers=served.headers("admin")).json
    assert ready["ok"] and set(ready["policies"]) == {served.tree, served.value, served.constant, served.routing}
    client.post(f"/api/v1/policies/{served.tree}/decide", json={"unit": "u1"}, headers=served.headers())
    text = client.get("/metrics", headers=served.headers("admin")).data.decode()
    assert 'pex_decisions_total{arm=' in text and f'policy="{served.tree}"' in text
    assert "pex_http_request_seconds_bucket" in text and "pex_decision_log_buffered" in text
    doc = client.get("/api/v1/openapi.json", headers=served.headers("admin")).json
    assert doc["openapi"].startswith("3.") and "/api/v1/policies/{name}/decide" in doc["paths"]


def test_outcomes_over_http_then_the_logged_feedback_values_a_candidate(served, app, client, tmp_path):
    """The whole loop through the API: decide, report outcomes, export the log, value another policy on it."""
    from pex.cli.main import main

    policy = _policy(served, served.tree)
    units = _units(served, 400)
    body = {"units": [{"unit": u, "features": _features(r, policy.features)} for u, (_, r) in zip(units["user_id"], units.iterrows())]}
    decisions = client.post(f"/api/v1/policies/{served.tree}/decide-batch", json=body, headers=served.headers()).json["decisions"]
    records = [{"unit": d["unit"], "metric": "sessions", "value": float(i % 7)} for i, d in enumerate(decisions)]
    r = client.post("/api/v1/outcomes", json={"experiment": "exp", "records": records}, headers=served.headers())
    assert r.status_code == 200 and r.json == {"ok": True, "experiment": "exp", "recorded": 400}
    wrong = [*records[:3], {"unit": "u", "metric": "nope", "value": 1}]
    bad = client.post("/api/v1/outcomes", json={"experiment": "exp", "records": wrong}, headers=served.headers())
    assert bad.status_code == 422 and "nope" in bad.json["error"]
    assert client.post("/api/v1/outcomes", json={"experiment": "ghost", "records": records[:1]},
                       headers=served.headers()).status_code == 404
    assert client.post("/api/v1/outcomes", json={"records": []}, headers=served.headers()).status_code == 422
    app.extensions["pex"].close()
    with Workspace(served.home, create=False) as ws:
        assert len(ws.read_outcomes("exp")) == 400  # the refused calls stored nothing
    out = tmp_path / "logged.parquet"
    assert main(["--home", str(served.home), "decisions", "exp", "--policy", served.tree, "--out", str(out)]) == 0
    logged = pd.read_parquet(out)
    assert len(logged) == 400 and logged["sessions"].notna().all()
    assert main(["--home", str(served.home), "evaluate", "exp", served.constant, "--logged", str(out), "--json"]) == 0


def test_the_fast_decide_path_answers_as_the_flask_view_does(served, app):
    """web.fast answers plain decides before Flask; the view behind it must give the same answers and log once."""
    policy = _policy(served, served.value)
    units = _units(served, 40)
    bodies = [{"unit": u, "features": _features(r, policy.features)} for u, (_, r) in zip(units["user_id"], units.iterrows())]
    bodies += [{"unit": "bad", "features": {policy.features[0]: "text"}}, {"features": {}}, "not json"]
    url = f"/api/v1/policies/{served.value}/decide"
    fast = app.test_client()
    fast_wsgi = app.wsgi_app
    view, calls = app.view_functions["api.decide"], []
    app.view_functions["api.decide"] = lambda **kw: calls.append(1) or view(**kw)
    answers = {}
    for label, wsgi in (("fast", fast_wsgi), ("flask", fast_wsgi.flask)):
        app.wsgi_app = wsgi
        try:
            answers[label] = []
            for body in bodies:
                kwargs = {"data": body} if isinstance(body, str) else {"json": body}
                r = fast.post(url, headers=served.headers(), **kwargs)
                answers[label].append((r.status_code, r.headers["Content-Type"],
                                       {k: v for k, v in r.json.items() if k != "decision_id"}))
        finally:
            app.wsgi_app = fast_wsgi
        answers[f"{label} views"] = len(calls)
        calls.clear()
    assert (answers.pop("fast views"), answers.pop("flask views")) == (3, 43)  # the fast path left Flask the errors
    assert answers["fast"] == answers["flask"]
    assert [s for s, _, _ in answers["fast"]] == [200] * 40 + [422, 422, 400]
    app.extensions["pex"].close()
    with Workspace(served.home, create=False) as ws:
        assert ws.count_decisions(served.value) == 80  # each served decision logged once, errors none
