"""The policies page (/ui/experiments/<name>/policies): its twin, publish with confirmation (and the extra one for an
uncertified policy, recorded in the audit trail), rollback, and a view token that sees no buttons and may not post."""

from __future__ import annotations

import re

from pex.store.workspace import Workspace
from tests.web.ui.cell_rule import assert_cell_rule

PAGE = "/ui/experiments/exp/policies"


def _page(client) -> tuple[str, dict]:
    html = client.get(PAGE)
    twin = client.get(PAGE + ".json")
    assert html.status_code == 200 and twin.status_code == 200
    return html.get_data(as_text=True), twin.json


def _offer(twin: dict, certified: bool) -> dict:
    """A publish the page offers of a policy the run did (not) certify."""
    return next(p for p in twin["publish"] if p["needs_confirmation"] is not certified)


def _live(home) -> dict[str, int]:
    with Workspace(home, create=False) as ws:
        return ws.live_versions()


def test_the_page_equals_its_twin_and_shows_the_recommendation(ui_client):
    client = ui_client("admin")
    html, twin = _page(client)
    counts = assert_cell_rule(html, twin, expect=("comparison",))
    assert counts["comparison"] == len(twin["comparison"]) > 3
    assert html.count("<h1") == 1
    rec = twin["recommendation"]
    assert rec["headline"] in html.replace("&#39;", "'")
    # every standing in words, and the words the run gave (never a colour alone)
    assert {r["standing"] for r in twin["comparison"]} >= {"certified", "not certified"}
    if rec["cannot_certify"]:
        assert "Cannot certify" in html
    # charts are inline SVG without inline styles (the CSP forbids them)
    assert twin["charts"]["pareto"].startswith("<svg") and twin["charts"]["tree"].startswith("<svg")
    assert re.search(r"<svg[^>]*>", html)
    assert ' style="' not in html and "<style" not in html
    # the confirmation says exactly what changes
    offer = _offer(twin, certified=True)
    assert offer["confirm"].startswith(
        f"{offer['policy']}: v{offer['version']} becomes live (nothing is live now) on every server within seconds")


def test_publish_with_confirmation_goes_live_and_into_the_audit_trail(ui_client, ui_home):
    client = ui_client("admin")
    _, twin = _page(client)
    offer = _offer(twin, certified=True)
    answer = client.post_form(f"{PAGE}/{offer['policy']}/publish", {"version": offer["version"]})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/ui/experiments/exp/policies#live")
    assert _live(ui_home.home)[offer["policy"]] == offer["version"]
    html, twin = _page(client)
    assert_cell_rule(html, twin, expect=("comparison", "live", "releases"))
    event = twin["releases"][0]
    assert (event["who"], event["action"], event["name"], event["from"], event["to"], event["note"]) == (
        "token:ui-admin", "publish", offer["policy"], "nothing live", f"v{offer['version']}", "")
    assert [r["name"] for r in twin["live"]] == [offer["policy"]]
    # a live version is not offered again
    assert offer["policy"] not in [p["policy"] for p in twin["publish"]]


def test_an_uncertified_publish_needs_the_extra_confirmation_and_is_recorded_as_such(ui_client, ui_home):
    client = ui_client("admin")
    html, twin = _page(client)
    offer = _offer(twin, certified=False)
    assert "not certified" in offer["extra_confirm"] and 'data-extra-confirm="' in html
    url = f"{PAGE}/{offer['policy']}/publish"
    refused = client.post_form(url, {"version": offer["version"]})
    assert refused.status_code == 400
    text = refused.get_data(as_text=True)
    assert "is not certified" in text and "Traceback" not in text
    assert offer["policy"] not in _live(ui_home.home)
    with Workspace(ui_home.home, create=False) as ws:
        assert ws.releases(offer["policy"]) == []
    answer = client.post_form(url, {"version": offer["version"], "extra_confirmed": "yes"})
    assert answer.status_code == 302
    assert _live(ui_home.home)[offer["policy"]] == offer["version"]
    html, twin = _page(client)
    assert_cell_rule(html, twin, expect=("releases",))
    assert twin["releases"][0]["note"] == "forced: confirmed by token:ui-admin in the UI"
    assert "forced: confirmed by token:ui-admin in the UI" in html


def test_rollback_returns_to_the_version_live_before(ui_client, ui_home):
    client = ui_client("admin")
    _, twin = _page(client)
    name = _offer(twin, certified=True)["policy"]
    with Workspace(ui_home.home, create=False) as ws:  # a second version of the same policy
        record = ws.get_policy(name)
        ws.put_policies("exp", [(dict(record.document), None)], fit_id=record.fit_id)
    for version in (1, 2):
        assert client.post_form(f"{PAGE}/{name}/publish", {"version": version}).status_code == 302
    _, twin = _page(client)
    roll = next(r for r in twin["rollback"] if r["policy"] == name)
    assert roll["to_version"] == 1 and roll["confirm"].startswith(f"{name} v2 -> v1 (roll back)")
    assert client.post_form(f"{PAGE}/{name}/rollback").status_code == 302
    assert _live(ui_home.home)[name] == 1
    html, twin = _page(client)
    assert_cell_rule(html, twin, expect=("live", "releases"))
    assert [(e["action"], e["from"], e["to"], e["who"]) for e in twin["releases"]] == [
        ("rollback", "v2", "v1", "token:ui-admin"), ("publish", "v1", "v2", "token:ui-admin"),
        ("publish", "nothing live", "v1", "token:ui-admin")]
    # only one version was ever live before v1: nothing further to roll back to
    assert [r for r in twin["rollback"] if r["policy"] == name] == []


def test_a_view_token_sees_no_buttons_and_its_posts_get_403(ui_client, ui_home):
    admin_twin = _page(ui_client("admin"))[1]
    offer = _offer(admin_twin, certified=True)
    client = ui_client("view")
    html, twin = _page(client)
    assert_cell_rule(html, twin, expect=("comparison",))
    assert "/publish" not in html and "/rollback" not in html and "<button type=\"submit\">Publish" not in html
    answer = client.post_form(f"{PAGE}/{offer['policy']}/publish", {"version": offer["version"]})
    assert answer.status_code == 403
    assert client.post_form(f"{PAGE}/{offer['policy']}/rollback").status_code == 403
    assert _live(ui_home.home) == {}


def test_bad_requests_are_refused_with_the_reason(ui_client, ui_home):
    client = ui_client("admin")
    _, twin = _page(client)
    offer = _offer(twin, certified=True)
    assert client.post_form(f"{PAGE}/{offer['policy']}/publish", {"version": "x1"}).status_code == 422
    missing = client.post_form(f"{PAGE}/no-such-policy/publish", {"version": 1})
    assert missing.status_code == 404 and "has no policy" in missing.get_data(as_text=True)
    assert client.get("/ui/experiments/nope/policies.json").status_code == 404
    assert _live(ui_home.home) == {}


def test_an_experiment_without_a_run_says_so(ingested_template, tmp_path):
    import shutil

    from tests.web.ui.conftest import SECRET, UiClient
    from web.ui import create_ui_app

    shutil.copytree(ingested_template, tmp_path / "ws")
    with Workspace(tmp_path / "ws", create=False) as ws:
        token = ws.create_token("view", "ui-view")[1]
    app = create_ui_app({"HOME": str(tmp_path / "ws"), "SECRET_KEY": SECRET})
    app.test_client_class = UiClient
    try:
        client = app.test_client()
        assert client.login(token).status_code == 302
        html, twin = _page(client)
        assert (twin["has_run"], twin["comparison"], twin["publish"], twin["releases"]) == (False, [], [], [])
        assert "has not been analysed yet" in html
        assert_cell_rule(html, twin)
    finally:
        app.extensions["pex"].close()
