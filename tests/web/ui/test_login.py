"""Login and permissions: who may log in, what a session holds, CSRF and the admin-only actions."""

from __future__ import annotations

import re


def test_admin_logs_in_and_sees_its_name(ui_client, ui_home):
    client = ui_client("admin")
    page = client.get("/ui/experiments")
    assert page.status_code == 200
    assert "ui-admin (admin)" in page.get_data(as_text=True)


def test_unknown_token_is_refused_with_the_reason(ui_client):
    client = ui_client(None)
    answer = client.login("pex_abcdef012345_notthesecret")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 401
    assert "this token is unknown or revoked" in text
    assert 'aria-describedby="token-error"' in text
    assert client.get("/ui/experiments").status_code == 302  # still logged out


def test_decide_token_may_not_log_in(ui_client, ui_home):
    answer = ui_client(None).login(ui_home.tokens["decide"])
    text = answer.get_data(as_text=True)
    assert answer.status_code == 401
    assert "may only ask for decisions" in text and "pex token create --scope view" in text


def test_revoked_token_is_refused(ui_client, ui_home):
    answer = ui_client(None).login(ui_home.tokens["revoked"])
    assert answer.status_code == 401
    assert "unknown or revoked" in answer.get_data(as_text=True)


def test_revoking_a_token_logs_its_session_out_at_the_next_request(ui_client, ui_app):
    client = ui_client("view")
    assert client.get("/ui/experiments").status_code == 200
    ui_app.extensions["pex"].ws.revoke_token("ui-view")
    answer = client.get("/ui/experiments")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/ui/login")
    assert client.get("/ui/experiments.json").status_code == 401


def test_the_session_cookie_holds_the_token_id_only(ui_client, ui_home):
    client = ui_client("admin")
    cookie = client.get_cookie("pex_ui")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    secret = ui_home.tokens["admin"].rsplit("_", 1)[1]
    assert secret not in cookie.value


def test_logout_is_a_post_and_ends_the_session(ui_client):
    client = ui_client("admin")
    assert client.get("/ui/logout").status_code == 405
    assert client.post_form("/ui/logout").status_code == 302
    assert client.get("/ui/experiments").status_code == 302


def test_after_login_the_user_goes_where_they_were_going_but_never_elsewhere(ui_client, ui_home):
    client = ui_client(None)
    first = client.get("/ui/jobs")
    assert first.headers["Location"] == "/ui/login?next=/ui/jobs"
    token = client.csrf_token()
    answer = client.post("/ui/login", data={"token": ui_home.tokens["view"], "next": "/ui/jobs", "csrf_token": token})
    assert answer.headers["Location"] == "/ui/jobs"
    client = ui_client(None)
    answer = client.post("/ui/login", data={"token": ui_home.tokens["view"], "next": "https://evil.example/",
                                            "csrf_token": client.csrf_token()})
    assert answer.headers["Location"] == "/ui/experiments"


def test_a_post_without_csrf_token_is_400_with_message_and_hint(ui_client):
    client = ui_client("admin")
    answer = client.post("/ui/logout")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "security token is missing" in text and "reload the page" in text
    assert "Traceback" not in text
    assert client.get("/ui/experiments").status_code == 200  # the failed logout did nothing


def test_login_without_csrf_token_is_400(ui_client, ui_home):
    answer = ui_client(None).post("/ui/login", data={"token": ui_home.tokens["admin"]})
    assert answer.status_code == 400


def test_a_view_token_sees_no_action_and_its_posts_get_403(ui_client, ui_home):
    client = ui_client("view")
    text = client.get("/ui/experiments").get_data(as_text=True)
    assert "New experiment" not in text
    forms = re.findall(r'<form method="post" action="([^"]+)"', text)
    assert forms == ["/ui/logout"]  # logging out is the only form a view session gets
    answer = client.post_form(f"/ui/experiments/{ui_home.experiment}/run")
    assert answer.status_code == 403
    assert "only admin tokens may take actions" in answer.get_data(as_text=True)


def test_json_twins_accept_a_bearer_view_token(ui_app, ui_home):
    client = ui_app.test_client()
    answer = client.get("/ui/experiments.json", headers={"Authorization": f"Bearer {ui_home.tokens['view']}"})
    assert answer.status_code == 200 and answer.json["experiments"][0]["name"] == ui_home.experiment
    for scope in ("decide", "revoked"):
        refused = client.get("/ui/experiments.json", headers={"Authorization": f"Bearer {ui_home.tokens[scope]}"})
        assert refused.status_code == 401 and refused.json["ok"] is False
    # a bearer token opens the JSON twins only, never a page (pages are for browser sessions)
    page = client.get("/ui/experiments", headers={"Authorization": f"Bearer {ui_home.tokens['view']}"})
    assert page.status_code == 302
