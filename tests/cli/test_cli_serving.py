"""`pex publish`, `rollback`, `releases` and `token` from the command line: output, exit codes, nothing half-done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pex.store.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "notification_cadence-tree-example.json"
NAME = "notification_cadence-tree-example"


@pytest.fixture
def stored(run, exp_dir, home):
    assert run("ingest", exp_dir / "exp.toml").code == 0
    doc = {**json.loads(EXAMPLE.read_text()), "experiment": "exp"}
    with Workspace(home) as ws:
        ws.put_policies("exp", [(doc, None), (doc, None)])
    return home


def test_publish_rollback_and_releases(run, stored):
    forced = ("--force", "--reason", "an example policy")  # hand-made versions: no run certified them
    r = run("publish", NAME, "--version", "1")
    assert r.code == 2 and "not certified" in r.err and "--force" in r.err
    r = run("publish", NAME, "--version", "1", *forced)
    assert r.code == 0 and "v1 is live (was nothing live)" in r.out
    r = run("publish", NAME, *forced)
    assert r.code == 0 and "v2 is live (was v1)" in r.out
    r = run("rollback", NAME, "--json")
    assert r.code == 0 and json.loads(r.out)["to_version"] == 1
    r = run("releases", NAME)
    assert r.code == 0 and len(r.out.strip().splitlines()) == 3 and "rollback" in r.out and "@" in r.out
    assert run("rollback", NAME).code == 2  # v1 was the first: nothing before it
    r = run("publish", NAME, "--version", "7", *forced)
    assert r.code == 2 and "version 7" in r.err and "hint:" in r.err
    assert run("publish", "nope", *forced).code == 2
    with Workspace(stored, create=False) as ws:
        assert ws.live_versions() == {NAME: 1} and len(ws.releases()) == 3


def test_tokens_are_shown_once_listed_without_secret_and_revoked(run, stored):
    r = run("token", "create", "--scope", "decide", "--name", "svc")
    assert r.code == 0
    token = r.out.strip()
    assert token.startswith("pex_") and "shown only now" in r.err
    listed = run("token", "list", "--json")
    assert listed.code == 0 and token.split("_", 2)[2] not in listed.out
    assert [(t["name"], t["scope"], t["revoked_at"]) for t in json.loads(listed.out)] == [("svc", "decide", None)]
    assert run("token", "revoke", "svc").code == 0
    assert "revoked" in run("token", "list").out
    assert run("token", "revoke", "nobody").code == 2
    assert run("token", "create", "--scope", "root").code == 2
    with Workspace(stored, create=False) as ws:
        assert ws.verify_token(token) is None
