"""The UI's shell: the app factory (headers, static files, secret key, settings), error pages, the experiments list,
the new-experiment upload, and the job pages with their actions."""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path

import pytest

from tests.web.ui.conftest import SECRET, check_twin

CSP = "default-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'self'"


# -- the app ---------------------------------------------------------------------------------------------------------

def test_every_answer_carries_the_security_headers(ui_client):
    client = ui_client("admin")
    for url in ("/ui/login", "/ui/experiments", "/ui/experiments.json", "/ui/static/pex.css", "/ui/nowhere",
                "/healthz"):
        with client.get(url) as answer:  # a static file is streamed: closed here
            assert answer.headers["Content-Security-Policy"] == CSP, url
            assert answer.headers["X-Content-Type-Options"] == "nosniff", url
            assert answer.headers["Referrer-Policy"] == "same-origin", url


def test_pages_hold_no_inline_script_style_or_handler(ui_client, ui_home):
    """The CSP forbids them, so a page that had any would break in the browser."""
    client = ui_client("admin")
    job = client.post_form(f"/ui/experiments/{ui_home.experiment}/run").headers["Location"]
    for url in ("/ui/login", "/ui/experiments", "/ui/experiments/new", "/ui/jobs", job, "/ui/nowhere"):
        text = client.get(url).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), url
        assert "<style" not in text and " style=" not in text, url
        assert not re.search(r"\son[a-z]+=", text), url
        assert text.count("<h1") == 1, url


def test_root_goes_to_the_experiments_and_static_files_are_served(ui_client):
    client = ui_client(None)
    assert client.get("/").headers["Location"] == "/ui/experiments"
    assert client.get("/favicon.ico").headers["Location"] == "/ui/static/favicon.svg"
    with client.get("/ui/static/pex.css") as css, client.get("/ui/static/pex.js") as js:
        assert css.status_code == 200 and css.mimetype == "text/css"
        assert js.status_code == 200 and "javascript" in js.mimetype
    assert client.get("/healthz").json == {"ok": True}
    assert client.get("/readyz").json == {"ok": True}


def test_the_ui_app_starts_no_policy_server(ui_app):
    state = ui_app.extensions["pex"]
    assert not hasattr(state, "decision_log")
    assert type(state.server).__name__ == "StoreReadiness"
    assert not any(rule.rule.startswith("/api/") for rule in ui_app.url_map.iter_rules())


def test_the_secret_key_is_made_once_private_and_shared(tmp_path):
    from web.ui.auth import stored_secret

    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(stored_secret(tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 64
    assert (tmp_path / "ui-secret").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ui-secret"]  # no candidate left behind
    assert stored_secret(tmp_path) == keys[0]


def test_sessions_survive_a_restart_with_the_stored_key(ui_home):
    from tests.web.ui.conftest import UiClient
    from web.ui import create_ui_app

    first = create_ui_app({"HOME": str(ui_home.home)})
    first.test_client_class = UiClient
    client = first.test_client()
    assert client.login(ui_home.tokens["admin"]).status_code == 302
    cookie = client.get_cookie("pex_ui").value
    first.extensions["pex"].close()
    second = create_ui_app({"HOME": str(ui_home.home)})  # `pex ui` restarted: the same key from ui-secret
    try:
        again = second.test_client()
        again.set_cookie("pex_ui", cookie)
        assert again.get("/ui/experiments").status_code == 200
    finally:
        second.extensions["pex"].close()


def test_cookie_secure_and_a_short_secret_key_are_settings(ui_home, monkeypatch):
    from pex.errors import PexError
    from tests.web.ui.conftest import UiClient
    from web.ui import create_ui_app

    monkeypatch.setenv("PEX_COOKIE_SECURE", "true")
    app = create_ui_app({"HOME": str(ui_home.home), "SECRET_KEY": SECRET})
    app.test_client_class = UiClient
    try:
        client = app.test_client()
        client.login(ui_home.tokens["admin"])
        assert client.get_cookie("pex_ui").secure
    finally:
        app.extensions["pex"].close()
    with pytest.raises(PexError, match="secret_key must be at least 16"):
        create_ui_app({"HOME": str(ui_home.home), "SECRET_KEY": "short"})
    monkeypatch.setenv("PEX_COOKIE_SECURE", "maybe")
    with pytest.raises(PexError, match="PEX_COOKIE_SECURE must be true or false"):
        create_ui_app({"HOME": str(ui_home.home)})


# -- errors ------------------------------------------------------------------------------------------------------------

def test_unknown_pages_and_jobs_are_404_pages_with_a_hint(ui_client):
    client = ui_client("admin")
    page = client.get("/ui/nowhere")
    assert page.status_code == 404 and "there is no such page" in page.get_data(as_text=True)
    job = client.get("/ui/jobs/999999")
    text = job.get_data(as_text=True)
    assert job.status_code == 404 and "no job 999999" in text and "What to do:" in text
    twin = client.get("/ui/jobs/999999.json")
    assert twin.status_code == 404 and twin.json["ok"] is False and twin.json["hint"]


def test_a_bug_is_a_500_page_with_a_reference_and_no_traceback(ui_app, ui_client, caplog):
    def boom():
        raise RuntimeError("secret detail /home/someone/path")

    ui_app.add_url_rule("/ui/boom", "boom", boom)
    answer = ui_client("admin").get("/ui/boom")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 500
    ref = re.search(r"reference ([0-9a-f]{12})", text).group(1)
    assert "Traceback" not in text and "secret detail" not in text and "server&#39;s log" in text
    assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)


def test_an_upload_over_the_limit_is_a_413_page_saying_the_limit_and_the_setting(ui_home):
    from tests.web.ui.conftest import UiClient
    from web.ui import FORM_MARGIN, create_ui_app

    app = create_ui_app({"HOME": str(ui_home.home), "SECRET_KEY": SECRET, "UI_MAX_UPLOAD": 1024})
    app.test_client_class = UiClient
    try:
        client = app.test_client()
        client.login(ui_home.tokens["admin"])
        # a raw multipart body (the test client spools a big form to a file it never closes when it goes unread)
        body = (b'--b\r\nContent-Disposition: form-data; name="data"; filename="big.csv"\r\n\r\n'
                + b"1,2\n" * (FORM_MARGIN // 4 + 1000) + b"\r\n--b--\r\n")
        answer = client.post("/ui/experiments/new", data=body, content_type="multipart/form-data; boundary=b")
        text = answer.get_data(as_text=True)
        assert answer.status_code == 413
        assert "upload limit" in text and "PEX_UI_MAX_UPLOAD" in text
        # under the request limit but over the file limit: the upload service refuses it next to the field
        small = b"a,b\n" + b"1,2\n" * 600
        answer = client.post_form("/ui/experiments/new", {"data": (io.BytesIO(small), "big.csv")},
                                  content_type="multipart/form-data")
        assert answer.status_code in (413, 422) and 'id="data-error"' in answer.get_data(as_text=True)
    finally:
        app.extensions["pex"].close()


# -- pages and their twins ---------------------------------------------------------------------------------------------

def test_the_experiments_page_equals_its_twin(ui_client, ui_home):
    data = check_twin(ui_client("view"), "/ui/experiments")
    assert data["_tables"] == ["experiments"]
    row = data["experiments"][0]
    assert row["name"] == ui_home.experiment and row["n_units"] == 2000 and row["units"] == "2,000"
    assert row["srm_ok"] is True and row["srm"].startswith("arm sizes as planned")
    assert row["last_run_id"] is not None and row["last_run"] != "no run yet"
    assert row["live"] == "none" and row["jobs"] == "none"


def test_the_experiments_page_shows_live_policies_and_running_jobs(ui_client, ui_home, ui_app):
    ws = ui_app.extensions["pex"].ws
    policy = ws.list_policies(ui_home.experiment)[0].name
    ws.publish(policy, None, "tests")
    client = ui_client("admin")
    client.post_form(f"/ui/experiments/{ui_home.experiment}/run")
    row = check_twin(client, "/ui/experiments")["experiments"][0]
    assert row["live_policies"] == [f"{policy} v1"] and row["live"] == f"{policy} v1"
    assert len(row["running_jobs"]) == 1 and row["jobs"] == "run (queued)"


def test_srm_state_says_it_in_words():
    from pex.services.pages.experiments import srm_state

    assert srm_state(None) == {"text": "not checked yet", "tone": "unclear"}
    bad = srm_state({"srm": {"ok": False, "p_value": 1e-6}})
    assert bad["tone"] == "bad" and "sample-ratio mismatch" in bad["text"]


def test_running_the_pipeline_queues_a_job_and_shows_its_page(ui_client, ui_home):
    client = ui_client("admin")
    answer = client.post_form(f"/ui/experiments/{ui_home.experiment}/run")
    assert answer.status_code == 303
    url = answer.headers["Location"]
    assert re.fullmatch(r"/ui/jobs/\d+", url)
    job = client.get(f"{url}.json").json
    assert set(job) == {"title", "job", "log"}
    assert {"id", "kind", "experiment", "params", "status", "stage", "message", "fraction", "log_tail", "error",
            "hint", "run_id", "actor", "created_at", "started_at", "finished_at", "heartbeat_at", "status_text",
            "status_tone", "percent", "progress_text", "finished", "can_cancel", "can_rerun"} <= set(job["job"])
    assert job["job"]["status"] == "queued" and job["job"]["actor"] == "token:ui-admin"
    assert job["job"]["params"] == {"experiment": ui_home.experiment}
    page = client.get(url).get_data(as_text=True)
    assert f'data-job-poll="{url}.json"' in page and "<progress" in page and "Cancel this job" in page
    assert "waiting for a worker" in page and "token:ui-admin" in page
    listed = check_twin(client, "/ui/jobs")
    assert listed["_tables"] == ["jobs"] and listed["jobs"][0]["id"] == job["job"]["id"]


def test_cancel_then_run_again(ui_client, ui_home):
    client = ui_client("admin")
    url = client.post_form(f"/ui/experiments/{ui_home.experiment}/run").headers["Location"]
    job_id = int(url.rsplit("/", 1)[1])
    assert client.post_form(f"{url}/cancel").headers["Location"] == url
    cancelled = client.get(f"{url}.json").json["job"]
    assert cancelled["status"] == "cancelled" and cancelled["finished"] and cancelled["can_rerun"]
    page = client.get(url).get_data(as_text=True)
    assert "Run again" in page and "Cancel this job" not in page
    again = client.post_form(f"{url}/rerun")
    new_url = again.headers["Location"]
    assert again.status_code == 303 and new_url != url
    assert client.get(f"{new_url}.json").json["job"]["status"] == "queued"
    # a finished job cannot be cancelled: a page with the reason, not a crash
    refused = client.post_form(f"{url}/cancel")
    assert refused.status_code == 400 and f"job {job_id} already finished" in refused.get_data(as_text=True)


def test_a_view_session_sees_no_job_actions(ui_client, ui_home):
    url = ui_client("admin").post_form(f"/ui/experiments/{ui_home.experiment}/run").headers["Location"]
    viewer = ui_client("view")
    page = viewer.get(url).get_data(as_text=True)
    assert "Cancel this job" not in page and "/cancel" not in page
    assert viewer.post_form(f"{url}/cancel").status_code == 403
    assert viewer.get("/ui/experiments/new").get_data(as_text=True).count('type="file"') == 0


def test_an_unknown_experiment_cannot_be_run(ui_client):
    answer = ui_client("admin").post_form("/ui/experiments/nosuch/run")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 404 and "nosuch" in text and "What to do:" in text


# -- a new experiment ------------------------------------------------------------------------------------------------

def _form_of(twin: dict) -> dict:
    return {key: value for key, value in twin["form"].items()}


def test_upload_propose_fix_a_deliberate_error_and_create(ui_client, ui_home, ui_app):
    client = ui_client("admin")
    data = Path(ui_home.data).read_bytes()
    staged = client.post_form("/ui/experiments/new", {"data": (io.BytesIO(data), "checkout test.csv")},
                              content_type="multipart/form-data")
    assert staged.status_code == 303
    url = staged.headers["Location"]
    proposal = check_twin(client, url)
    assert proposal["_tables"] == ["preview"]
    form = _form_of(proposal)
    assert form["owner"] == "ui-admin"  # who uploads owns it, unless they say otherwise
    assert form["unit"] and form["arm"] and form["metrics"]
    guardrails = [m["name"] for m in proposal["metrics"] if m["role"] == "guardrail"]
    metric = guardrails[0] if guardrails else proposal["metrics"][0]["name"]
    form["name"] = "checkout"
    page = client.get(url).get_data(as_text=True)
    form.update({name: value for name, value in re.findall(r'<input type="hidden" name="(_note\.[^"]+)" value="([^"]*)"', page)})
    form[f"metrics.{metric}.role"] = "guardrail"
    form[f"metrics.{metric}.max_harm"] = "-1"  # the deliberate error
    refused = client.post_form(url, form)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422
    field = re.search(rf'name="metrics\.{re.escape(metric)}\.max_harm" value="-1" aria-describedby="([^"]+)" '
                      r'aria-invalid="true"', text)
    assert field, "the max_harm field is not marked invalid with its error"
    error = re.search(rf'<p class="error" id="{field.group(1).strip()}">(.*?)</p>', text, re.S)
    assert error and "max_harm" in error.group(1) and "negative" in error.group(1)
    assert "checkout" not in [e["name"] for e in ui_app.extensions["pex"].ws.list_experiments()]  # nothing stored
    assert "pex guessed:" in text  # the reasons stay next to their guesses (they came back as hidden fields)
    form[f"metrics.{metric}.max_harm"] = "0.05"
    created = client.post_form(url, form)
    assert created.status_code == 303 and created.headers["Location"] == "/ui/experiments/checkout"
    listed = check_twin(client, "/ui/experiments")
    row = next(r for r in listed["experiments"] if r["name"] == "checkout")
    assert row["owner"] == "ui-admin" and row["dataset_version"] == 1 and row["srm_ok"] is not None
    assert client.get(url).status_code == 404  # the staged upload is gone once used


def test_a_spec_file_can_replace_the_form(ui_client, ui_home):
    client = ui_client("admin")
    data = Path(ui_home.data).read_bytes()
    url = client.post_form("/ui/experiments/new", {"data": (io.BytesIO(data), "exp.csv")},
                           content_type="multipart/form-data").headers["Location"]
    broken = client.post_form(url, {"spec_file": (io.BytesIO(b"name = [unclosed"), "spec.toml")},
                              content_type="multipart/form-data")
    text = broken.get_data(as_text=True)
    assert broken.status_code == 422 and 'id="spec_file-error"' in text and "not valid TOML" in text
    spec = Path(ui_home.spec).read_text().replace('name = "exp"', 'name = "from-spec"')
    made = client.post_form(url, {"spec_file": (io.BytesIO(spec.encode()), "spec.toml")},
                            content_type="multipart/form-data")
    assert made.status_code == 303 and made.headers["Location"] == "/ui/experiments/from-spec"


def test_a_file_that_is_no_table_is_refused_next_to_the_file_field(ui_client):
    answer = ui_client("admin").post_form("/ui/experiments/new", {"data": (io.BytesIO(b"hello"), "notes.txt")},
                                          content_type="multipart/form-data")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert 'aria-invalid="true"' in text and 'id="data-error"' in text and "neither a CSV nor a Parquet" in text


def test_an_upload_id_is_never_a_path(ui_client):
    client = ui_client("admin")
    for bad in ("..%2F..%2Fetc", "0" * 31 + "g", "nope"):
        assert client.get(f"/ui/experiments/new/{bad}").status_code == 404


def test_only_admins_upload(ui_client, ui_home):
    data = Path(ui_home.data).read_bytes()
    url = ui_client("admin").post_form("/ui/experiments/new", {"data": (io.BytesIO(data), "exp.csv")},
                                       content_type="multipart/form-data").headers["Location"]
    viewer = ui_client("view")
    page = viewer.get(url).get_data(as_text=True)
    assert re.findall(r'<form method="post" action="([^"]+)"', page) == ["/ui/logout"]
    assert viewer.post_form(url, {"name": "x"}).status_code == 403
    answer = viewer.post_form("/ui/experiments/new", {"data": (io.BytesIO(b"a,b\n1,2\n"), "x.csv")},
                              content_type="multipart/form-data")
    assert answer.status_code == 403
    assert len(list((Path(ui_home.home) / "uploads").iterdir())) == 1  # the admin's only


def test_the_upload_limit_is_a_setting(ui_home, monkeypatch):
    from pex.services.settings import load_config

    monkeypatch.setenv("PEX_UI_MAX_UPLOAD", str(5 * 2**20))
    assert load_config({"HOME": str(ui_home.home)})["UI_MAX_UPLOAD"] == 5 * 2**20
    assert os.environ["PEX_UI_MAX_UPLOAD"] == str(5 * 2**20)


def test_unticking_every_metric_is_an_error_not_all_metrics(ui_client, ui_home):
    client = ui_client("admin")
    data = Path(ui_home.data).read_bytes()
    url = client.post_form("/ui/experiments/new", {"data": (io.BytesIO(data), "exp.csv")},
                           content_type="multipart/form-data").headers["Location"]
    form = _form_of(client.get(f"{url}.json").json)
    form["metrics"] = [""]  # what the page sends with every box unticked (its hidden empty entry)
    answer = client.post_form(url, form)
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    errors = dict(re.findall(r'<p class="error" id="([^"]+)-error"><strong>(.*?)</strong>', text, re.S))
    assert "f-metrics" in errors, errors
    assert "f-name" in errors and "exp" in errors["f-name"]  # the name the file suggests is taken: said as well


def test_post_button_with_extra_confirmation_works_without_javascript(ui_app):
    from flask import render_template_string

    with ui_app.test_request_context("/ui/x"):
        html = render_template_string(
            '{% import "_macros.html" as m %}{{ m.post_button("/ui/x", "Publish v2", confirm="v1 -> v2", '
            'extra_confirm="I understand v2 is <not> certified") }}')
    assert 'data-confirm="v1 -&gt; v2"' in html and 'data-extra-confirm="I understand v2 is &lt;not&gt; certified"' in html
    assert '<input type="checkbox" name="extra_confirmed" value="yes">' in html  # ticked on the page without JS
    assert 'name="csrf_token"' in html
