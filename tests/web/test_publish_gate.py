"""The API's publish route behind the publish gate: an uncertified version is a 409 with the why; with
``"force": true`` and a reason it goes live and the release history records the override (issue 26, item 1)."""

from __future__ import annotations

import pytest

from pex.store.workspace import Workspace
from web import create_app


@pytest.fixture
def client(served):
    app = create_app({"HOME": str(served.home), "REFRESH_SECONDS": 0.2, "FLUSH_SECONDS": 0.2})
    yield app.test_client()
    app.extensions["pex"].close()


def _uncertified(served) -> tuple[str, int]:
    """A stored version of the run's tree policy no run tested (a copy with more exploration), not live."""
    with Workspace(served.home) as ws:
        record = ws.get_policy(served.routing)
        [copy] = ws.put_policies("exp", [({**record.document, "exploration": 0.5}, None)], fit_id=record.fit_id)
    return copy.name, copy.version


def test_an_uncertified_version_is_409_with_the_why_and_forced_with_a_reason_it_is_recorded(served, client):
    name, version = _uncertified(served)
    url, admin = f"/api/v1/policies/{name}/publish", served.headers("admin")
    refused = client.post(url, json={"version": version}, headers=admin)
    assert refused.status_code == 409
    body = refused.json
    assert (body["ok"], body["status"]) == (False, 409)
    assert f"policy {name} v{version} is not certified to keep its guardrails: never tested" in body["error"]
    assert "--force --reason" in body["hint"]
    for bad in ({"version": version, "force": True}, {"version": version, "reason": "why"},
                {"version": version, "force": False, "reason": "why"}, {"version": version, "force": "yes", "reason": "x"},
                {"version": version, "force": True, "reason": "  "}, {"version": version, "force": True, "reason": 3}):
        assert client.post(url, json=bad, headers=admin).status_code == 422, bad
    with Workspace(served.home, create=False) as ws:
        assert ws.live_versions()[name] == version - 1  # nothing changed
    done = client.post(url, json={"version": version, "force": True, "reason": "load test of the new version"},
                       headers=admin)
    assert done.status_code == 200, done.json
    assert (done.json["to_version"], done.json["forced"], done.json["note"]) == (
        version, True, "forced: load test of the new version")
    history = client.get(f"/api/v1/policies/{name}/releases", headers=admin).json["releases"]
    assert (history[-1]["action"], history[-1]["forced"], history[-1]["actor"]) == ("publish", True, "token:test-admin")


def test_a_certified_version_publishes_without_force_and_records_no_note(served, client):
    with Workspace(served.home, create=False) as ws:
        certified = ws.latest_run("exp")["recommendation"]["certification"]["certified"]
        assert certified, "small_run certifies a policy"
        name = certified[0]
        live = ws.live_versions().get(name)
    assert live is None  # served publishes the tree, value, constant and routing-tree policies, not this one
    url = f"/api/v1/policies/{name}/publish"
    done = client.post(url, json={}, headers=served.headers("admin"))
    assert done.status_code == 200, done.json
    assert (done.json["forced"], done.json["note"]) == (False, None)
