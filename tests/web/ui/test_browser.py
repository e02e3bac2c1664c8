"""The web UI in a real browser: an owner's whole path, from logging in to a published and rolled-back policy.

One `pex ui` (gunicorn, with a `pex worker` the tests control) on a fresh workspace and one headless Chromium serve
the whole module; its tests run in order, each building on the last (log in, upload, run, publish, cancel, crash,
run again, roll back), as an owner would. Every page visited is checked against its JSON twin and with axe-core, and
screenshotted; what is wrong is collected, so that one run names every problem, and the last tests fail on them:
cells that differ from the twin, serious or critical axe-core violations, console errors, requests outside pex's
origin, pages without exactly one h1 or scrolling sideways at 800 px (tests/web/ui/browser.py is the harness).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pytest

from tests.web.ui.browser import (
    EXPERIMENT,
    Session,
    axe,
    axe_text,
    axe_violations,
    check_twin,
    chromium,
    running_ui,
    screenshots_dir,
    settled_twin,
    shot,
    sideways_scroll,
)

GUARDRAIL = "complaints"  # the simulated experiment's guardrail metric
CANCEL_SECONDS = 15  # a cancelled job must end within this
NARROW = 800  # no page may scroll sideways at this width


@dataclass
class Findings:
    """What the visits found wrong, by kind, and every page and session, for the last tests."""

    pages: dict[str, str] = field(default_factory=dict)  # path -> screenshot name
    problems: dict[str, list[str]] = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)

    def add(self, kind: str, messages: list[str]) -> None:
        self.problems.setdefault(kind, []).extend(messages)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    with running_ui(tmp_path_factory.mktemp("ui")) as server:
        yield server


@pytest.fixture(scope="module")
def browser(ui):
    with chromium(ui.url) as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = screenshots_dir(tmp_path_factory.getbasetemp())
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def findings():
    return Findings()


@pytest.fixture(scope="module")
def state():
    """What one test leaves for the next: pages, the recommended policy, the stages seen, timings."""
    return {"started": time.monotonic()}


def open_session(browser, findings: Findings, width: int = 1200) -> Session:
    s = browser.session(width=width)
    findings.sessions.append(s)
    return s


def log_in(browser, findings: Findings, token: str) -> Session:
    """A new session logged in with ``token`` (it must be accepted)."""
    s = open_session(browser, findings)
    s.goto("/ui/login")
    s.page.fill("#token", token)
    with s.page.expect_navigation():
        s.page.click("form.login button[type=submit]")
    assert "/ui/login" not in s.page.url, s.page.inner_text("main")
    return s


@pytest.fixture(scope="module")
def admin(browser, ui, findings):
    return log_in(browser, findings, ui.tokens["admin"])


@pytest.fixture(scope="module")
def viewer(browser, ui, findings):
    return log_in(browser, findings, ui.tokens["view"])


def visit(session: Session, path: str, findings: Findings, shots=None, name: str | None = None,
          again: bool = True) -> dict:
    """Open a page (it must answer 200), compare its cells with its twin, run axe-core, count its h1 and take its
    screenshot; what is wrong goes to ``findings``, and the page to the list the last tests visit ``again``. The
    twin."""
    response = session.goto(path)
    assert response.status == 200, f"{path} answered {response.status}: {session.page.inner_text('main')[:500]}"
    twin, problems = settled_twin(session, path)
    findings.add("twin", problems)
    label = f"{path} ({name or 'page'})"
    findings.add("axe", [axe_text(label, [v]) for v in axe_violations(session, label)])
    if (h1 := session.page.locator("h1").count()) != 1:
        findings.add("h1", [f"{path} has {h1} h1 elements"])
    if shots is not None:
        name = name or re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
        shot(session, shots, name)
    if again:
        findings.pages.setdefault(path, name or "")
    return twin


def try_login(browser, findings: Findings, token: str) -> Session:
    """Paste ``token`` in the login form; the session, on the form again when it was refused."""
    s = open_session(browser, findings)
    s.goto("/ui/login")
    s.page.fill("#token", token)
    with s.page.expect_navigation():
        s.page.click("form.login button[type=submit]")
    return s


def refused(browser, findings: Findings, token: str, shots, name: str) -> str:
    """The reason the login form shows for a refused ``token`` (next to the field, as an alert)."""
    s = try_login(browser, findings, token)
    assert "/ui/login" in s.page.url, f"{name} was let in: {s.page.url}"
    error = s.page.locator("#token-error")
    assert error.is_visible() and s.page.locator("#token").get_attribute("aria-invalid") == "true"
    findings.add("axe", [axe_text(name, [v]) for v in axe_violations(s, name)])
    shot(s, shots, name)
    s.assert_clean(401)  # Chromium logs the 401 of the refused form as a console error: expected here
    reason = text_of(error)
    findings.sessions.remove(s)
    s.context.close()
    return reason


def text_of(locator) -> str:
    """The element's whole text (hidden parts included), on one line."""
    return " ".join(locator.evaluate("e => e.textContent").split())


# -- logging in ----------------------------------------------------------------------------------------------------

def test_login_refuses_a_bad_a_decide_and_a_revoked_token_with_the_reason(browser, ui, findings, shots):
    s = open_session(browser, findings)
    s.goto("/ui/login")
    shot(s, shots, "01-login")
    findings.pages["/ui/login"] = "01-login"
    axe(s, "login")
    assert "unknown or revoked" in refused(browser, findings, "pex_not-a-real-token", shots, "01-login-bad-token")
    assert "may only ask for decisions" in refused(browser, findings, ui.tokens["decide"], shots, "01-login-decide-token")
    assert "unknown or revoked" in refused(browser, findings, ui.tokens["revoked"], shots, "01-login-revoked-token")
    # a page asked for before logging in is where the login leads
    s.goto("/ui/jobs")
    assert "/ui/login" in s.page.url


def test_an_admin_logs_in_and_sees_no_experiment_yet(admin, findings, shots):
    assert admin.page.url.endswith("/ui/experiments")
    twin = visit(admin, "/ui/experiments", findings, shots, "02-experiments-empty")
    assert twin["experiments"] == []
    assert admin.page.locator("a[href='/ui/experiments/new']").count() >= 1


# -- a new experiment from an uploaded file ------------------------------------------------------------------------

def test_upload_the_csv_fix_an_error_shown_next_to_its_field_and_create_the_experiment(admin, ui, findings, shots):
    visit(admin, "/ui/experiments/new", findings, shots, "03-new-experiment")
    page = admin.page
    page.set_input_files("#data", str(ui.csv))
    with page.expect_navigation():
        page.click("form.upload button[type=submit]")
    assert re.search(r"/ui/experiments/new/[^/]+$", page.url), page.inner_text("main")[:1000]
    proposal = page.url.removeprefix(ui.url)
    twin = visit(admin, proposal, findings, shots, "04-proposal", again=False)  # gone once the experiment exists
    assert twin["preview"], "the proposal shows the first rows"
    assert page.input_value("#f-name") == EXPERIMENT
    assert page.input_value("#f-control") == "control"
    # a deliberate error: a guardrail may not tolerate a negative harm
    harm = page.locator(f'input[name="metrics.{GUARDRAIL}.max_harm"]')
    page.select_option(f'select[name="metrics.{GUARDRAIL}.role"]', "guardrail")
    harm.fill("-1")
    with page.expect_navigation():
        page.click("form.spec button[type=submit]")
    field_id = harm.get_attribute("id")
    error = page.locator(f"#{field_id}-error")
    assert error.is_visible(), page.inner_text("main")[:2000]
    assert "harm" in text_of(error), text_of(error)
    assert harm.get_attribute("aria-invalid") == "true"
    assert f"{field_id}-error" in (harm.get_attribute("aria-describedby") or "")
    assert page.locator("#form-errors").is_visible()
    assert harm.input_value() == "-1", "the form keeps what the owner typed"
    findings.add("axe", [axe_text("proposal with an error", [v]) for v in axe_violations(admin, "proposal error")])
    shot(admin, shots, "05-proposal-error")
    admin.assert_clean(422)  # the form with its errors answers 422, which Chromium logs: expected
    admin.errors.clear()
    assert admin.page.request.get(f"{ui.url}/ui/experiments.json").json()["experiments"] == [], "nothing stored yet"
    harm.fill("0.1")
    with page.expect_navigation():
        page.click("form.spec button[type=submit]")
    assert page.url.endswith(f"/ui/experiments/{EXPERIMENT}"), page.inner_text("main")[:2000]
    twin = visit(admin, f"/ui/experiments/{EXPERIMENT}", findings, shots, "06-experiment-analysed")
    assert {row["metric"] for row in twin["effects"]} == {"revenue", GUARDRAIL} and twin["runs"] == []
    listed = visit(admin, "/ui/experiments", findings)["experiments"]
    assert [row["name"] for row in listed] == [EXPERIMENT]


# -- the pipeline as a job -----------------------------------------------------------------------------------------

def start_run(session: Session) -> str:
    """Press the experiment page's "Run pipeline"; the path of the job page it lands on."""
    session.goto(f"/ui/experiments/{EXPERIMENT}")
    with session.page.expect_navigation():
        session.page.click(f"form[action$='/experiments/{EXPERIMENT}/run'] button")
    assert re.search(r"/ui/jobs/\d+$", session.page.url), session.page.url
    return session.page.url.removeprefix(session.origin)


def watch(session: Session, until: tuple[str, ...], timeout: float) -> tuple[str, list[str]]:
    """Watch the job page update itself (it polls its twin) until its status starts with one of ``until``; the status
    and every distinct stage it showed, in order."""
    stages: list[str] = []
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        try:
            status = session.page.locator('[data-job="status_text"]').inner_text(timeout=2000)
            stage = session.page.locator('[data-job="stage"]').inner_text(timeout=2000)
        except Exception:  # the page reloads itself once the job ends (Playwright: the context was destroyed)
            continue
        if stage not in ("", "-") and (not stages or stages[-1] != stage):
            stages.append(stage)
        if status.startswith(until):
            return status, stages
        time.sleep(0.1)
    raise AssertionError(f"the job did not reach {until} in {timeout} s: {status!r}, stages {stages}")


def test_the_pipeline_runs_as_a_job_whose_page_shows_its_progress(admin, ui, findings, shots, state):
    job = start_run(admin)
    started = time.monotonic()
    status, stages = watch(admin, ("succeeded", "failed"), timeout=240)
    state["pipeline_seconds"] = round(time.monotonic() - started, 1)
    print(f"pipeline job: {status} in {state['pipeline_seconds']} s; stages seen: {stages}")
    assert status == "succeeded", f"{status}: {admin.page.inner_text('main')[:2000]}\n{ui.logs()}"
    assert len(stages) >= 3, stages
    state["stages"] = stages
    admin.page.wait_for_load_state("load")
    twin = visit(admin, job, findings, shots, "07-job-succeeded")
    assert twin["job"]["run_id"] is not None and twin["job"]["status"] == "succeeded"
    link = admin.page.locator('[data-job-link="run"]')
    with admin.page.expect_navigation():
        link.click()
    run = admin.page.url.removeprefix(ui.url)
    visit(admin, run, findings, shots, "08-run")
    state["run"] = run
    state["job"] = job
    # the offline report, served as is (not a twin page: no tables to compare; still no error, nothing foreign)
    with admin.page.expect_navigation():
        admin.page.click("a[href$='/report.html']")
    assert admin.page.locator("svg").count() >= 3
    findings.add("axe-report", [axe_text("run report", [v]) for v in axe_violations(admin, "run report")])
    shot(admin, shots, "08-run-report")
    visit(admin, "/ui/jobs", findings, shots, "09-jobs")


def test_the_experiment_shows_its_effects_and_the_policies_page_the_recommendation(admin, findings, shots, state):
    twin = visit(admin, f"/ui/experiments/{EXPERIMENT}", findings, shots, "10-experiment-with-run")
    text = admin.page.inner_text("main")
    for row in twin["effects"]:
        assert row["lift_text"] in text
    assert len(twin["runs"]) == 1 and twin["latest_run"]["headline"]
    twin = visit(admin, f"/ui/experiments/{EXPERIMENT}/policies", findings, shots, "11-policies")
    rec = twin["recommendation"]
    assert rec["headline"] and " ".join(rec["headline"].split()) in " ".join(admin.page.inner_text("main").split())
    assert twin["comparison"] and twin["live"] == [] and twin["releases"] == []
    state["recommended"] = rec["policy"]


# -- publishing, with a confirmation -------------------------------------------------------------------------------

def action_button(session: Session, policy: str, what: str):
    """The button of ``what`` (publish, rollback) for ``policy``; opened when it is under "Publish another policy"."""
    button = session.page.locator(f"form[action$='/policies/{policy}/{what}'] button")
    if button.count() == 1 and not button.is_visible():
        session.page.locator("details.more-actions > summary").click()
    return button


def confirm(session: Session, button, expect: str, findings: Findings, tick: bool = False,
            keyboard: bool = False) -> None:
    """Press ``button`` (its form asks first), check that the dialog says ``expect``, tick its extra box when asked,
    and confirm; with ``keyboard``, by keys only (Enter on the button, Tab to the confirming button, Enter)."""
    page = session.page
    if keyboard:
        button.focus()
        page.keyboard.press("Enter")
    else:
        button.click()
    dialog = page.locator("dialog.confirm")
    dialog.wait_for(state="visible")
    assert expect in dialog.inner_text(), dialog.inner_text()
    findings.add("axe", [axe_text("confirmation dialog", [v]) for v in axe_violations(session, "dialog")])
    ok = dialog.locator(".buttons button:not(.secondary)")  # it says what it does: the form's own label
    if tick:
        assert ok.is_disabled(), "an uncertified publish needs its box ticked first"
        dialog.locator("input[type=checkbox]").check()
    if keyboard:
        assert page.evaluate("document.activeElement.closest('dialog') !== null"), "the dialog takes the focus"
        for _ in range(3):  # Tab moves through the dialog's controls only
            if ok.evaluate("e => e === document.activeElement"):
                break
            page.keyboard.press("Tab")
        assert ok.evaluate("e => e === document.activeElement"), "Tab reaches the confirming button"
        with page.expect_navigation():
            page.keyboard.press("Enter")
        return
    with page.expect_navigation():
        ok.click()


def test_publish_the_recommendation_after_a_confirmation_and_see_it_live_with_its_actor(admin, findings, shots, state):
    policy = state["recommended"]
    policies = f"/ui/experiments/{EXPERIMENT}/policies"
    twin = check_twin(admin, policies)
    offer = next(p for p in twin["publish"] if p["policy"] == policy)
    assert not offer["needs_confirmation"], "the recommendation is certified"
    # the dialog's Cancel (and Escape) change nothing
    action_button(admin, policy, "publish").click()
    admin.page.locator("dialog.confirm").wait_for(state="visible")
    shot(admin, shots, "12-publish-dialog")
    admin.page.keyboard.press("Escape")
    assert admin.page.locator("dialog.confirm").count() == 0
    action_button(admin, policy, "publish").click()
    admin.page.locator("dialog.confirm button.secondary").click()  # "Go back"
    assert check_twin(admin, policies)["live"] == []
    confirm(admin, action_button(admin, policy, "publish"),
            f"v{offer['version']} becomes live (nothing is live now) on every server within seconds", findings)
    twin = visit(admin, policies, findings, shots, "13-policies-live")
    assert [(r["name"], r["live"]) for r in twin["live"]] == [(policy, f"v{offer['version']}")]
    assert [(r["who"], r["action"], r["to"]) for r in twin["releases"]] == [
        ("token:admin-user", "publish", f"v{offer['version']}")]
    assert "token:admin-user" in admin.page.locator("table[data-twin=releases]").inner_text()
    state["published"] = (policy, offer["version"])
    state["releases"] = len(twin["releases"])


def test_an_uncertified_policy_needs_the_extra_confirmation_which_the_audit_trail_records(admin, findings, shots,
                                                                                          state):
    policies = f"/ui/experiments/{EXPERIMENT}/policies"
    twin = check_twin(admin, policies)
    risky = next((p for p in twin["publish"] if p["needs_confirmation"]), None)
    if risky is None:
        pytest.skip("the run certified every policy it offers: no uncertified publish to try")
    button = action_button(admin, risky["policy"], "publish")
    button.click()
    dialog = admin.page.locator("dialog.confirm")
    dialog.wait_for(state="visible")
    assert "not certified" in dialog.inner_text()
    shot(admin, shots, "14-uncertified-dialog")
    admin.page.keyboard.press("Escape")
    confirm(admin, button, "not certified", findings, tick=True)
    twin = check_twin(admin, policies)
    latest = twin["releases"][0]
    assert (latest["name"], latest["who"]) == (risky["policy"], "token:admin-user")
    assert latest["note"].startswith("forced: ") and "token:admin-user" in latest["note"]
    state["uncertified"] = (risky["policy"], risky["version"])
    state["releases"] = len(twin["releases"])


# -- what a view token may do --------------------------------------------------------------------------------------

ACTION_FORMS = "form[method=post]:not([action$='/ui/logout'])"


def test_a_view_session_sees_no_action_and_its_posts_are_refused(viewer, ui, findings, shots, state):
    assert viewer.page.url.endswith("/ui/experiments")
    pages = ["/ui/experiments", f"/ui/experiments/{EXPERIMENT}", f"/ui/experiments/{EXPERIMENT}/policies",
             "/ui/jobs", state["job"], state["run"], "/ui/monitor", "/ui/experiments/new"]
    for path in pages:
        visit(viewer, path, findings)
        assert viewer.page.locator(ACTION_FORMS).count() == 0, f"{path} shows a view token an action"
        assert viewer.page.locator("a[href='/ui/experiments/new']").count() == 0 or path == "/ui/experiments/new"
    viewer.goto(pages[2])
    shot(viewer, shots, "15-view-policies")
    csrf = viewer.csrf()
    policy, version = state["published"]
    posts = {f"/ui/experiments/{EXPERIMENT}/run": {},
             f"/ui/experiments/{EXPERIMENT}/policies/{policy}/rollback": {},
             f"/ui/experiments/{EXPERIMENT}/policies/{policy}/publish": {"version": str(version)},
             "/ui/jobs/1/rerun": {}}
    for path, form in posts.items():
        answer = viewer.page.request.post(ui.url + path, form={**form, "csrf_token": csrf}, max_redirects=0)
        assert answer.status == 403, f"a view token's POST {path} answered {answer.status}"
    # the admin's POST without the CSRF token is refused before it is looked at
    admin_posts = viewer.context.browser.new_context(base_url=ui.url)
    try:
        login = admin_posts.new_page()
        login.goto(ui.url + "/ui/login")
        login.fill("#token", ui.tokens["admin"])
        with login.expect_navigation():
            login.click("form.login button[type=submit]")
        answer = login.request.post(ui.url + f"/ui/experiments/{EXPERIMENT}/policies/{policy}/rollback", form={},
                                    max_redirects=0)
        assert answer.status == 400, f"a POST without CSRF token answered {answer.status}"
        answer = login.request.post(ui.url + f"/ui/experiments/{EXPERIMENT}/run", form={"csrf_token": "forged"},
                                    max_redirects=0)
        assert answer.status == 400, f"a POST with a forged CSRF token answered {answer.status}"
    finally:
        admin_posts.close()
    twin = check_twin(viewer, f"/ui/experiments/{EXPERIMENT}/policies")
    assert {r["name"]: r["live"] for r in twin["live"]}[policy] == f"v{version}", "nothing changed"
    assert len(twin["releases"]) == state["releases"], "no release was made"
    assert len(check_twin(viewer, "/ui/jobs")["jobs"]) == 1, "no job was started"


# -- cancelling, and a worker that dies ----------------------------------------------------------------------------

def wait_running(session: Session, timeout: float = 60) -> None:
    status, _ = watch(session, ("running", "succeeded", "failed", "cancelled", "interrupted"), timeout)
    assert status.startswith("running"), status


def test_cancelling_a_running_job_ends_it_cancelled_within_15_s(admin, findings, shots, state):
    job = start_run(admin)
    wait_running(admin)
    asked = time.monotonic()
    confirm(admin, admin.page.locator(f"form[action$='{job}/cancel'] button"), "Cancel job", findings)
    status, _ = watch(admin, ("cancelled", "succeeded", "failed"), timeout=CANCEL_SECONDS + 5)
    state["cancel_seconds"] = round(time.monotonic() - asked, 1)
    print(f"cancelled in {state['cancel_seconds']} s")
    assert status == "cancelled" and state["cancel_seconds"] <= CANCEL_SECONDS, (status, state["cancel_seconds"])
    admin.page.wait_for_load_state("load")
    visit(admin, job, findings, shots, "16-job-cancelled")
    assert admin.page.locator(f"form[action$='{job}/rerun'] button").count() == 1, "a cancelled job can run again"


def test_a_job_whose_worker_is_killed_shows_interrupted_and_runs_again(admin, ui, findings, shots, state):
    job = start_run(admin)
    wait_running(admin)
    ui.kill_worker()
    ui.start_worker()  # the new worker finds the dead one's job
    status, _ = watch(admin, ("interrupted", "succeeded", "failed", "cancelled"), timeout=60)
    assert status.startswith("interrupted"), f"{status}\n{ui.logs()}"
    admin.page.wait_for_load_state("load")
    twin = visit(admin, job, findings, shots, "17-job-interrupted")
    assert twin["job"]["status"] == "interrupted" and "run it again" in (twin["job"]["error"] or "")
    with admin.page.expect_navigation():
        admin.page.click(f"form[action$='{job}/rerun'] button")
    again = admin.page.url.removeprefix(ui.url)
    assert again != job
    status, _ = watch(admin, ("succeeded", "failed", "cancelled", "interrupted"), timeout=240)
    assert status == "succeeded", f"{status}: {admin.page.inner_text('main')[:2000]}\n{ui.logs()}"


# -- rolling back --------------------------------------------------------------------------------------------------

def test_roll_back_after_a_second_publish_and_see_both_in_the_audit_trail(admin, findings, shots, state):
    """The second run stored new versions: publish one over an earlier live version, then roll it back."""
    policies = f"/ui/experiments/{EXPERIMENT}/policies"
    twin = check_twin(admin, policies)
    live = {r["name"]: r["live_version"] for r in twin["live"]}
    again = next((p for p in twin["publish"] if p["policy"] in live and p["version"] != live[p["policy"]]), None)
    assert again is not None, f"the second run offers no new version of a live policy: {twin['publish']}, {live}"
    before = live[again["policy"]]
    confirm(admin, action_button(admin, again["policy"], "publish"),
            f"v{before} -> v{again['version']}", findings, tick=again["needs_confirmation"])
    twin = check_twin(admin, policies)
    assert {r["name"]: r["live_version"] for r in twin["live"]}[again["policy"]] == again["version"]
    confirm(admin, action_button(admin, again["policy"], "rollback"), f"-> v{before} (roll back)", findings,
            keyboard=True)
    twin = visit(admin, policies, findings, shots, "18-policies-rolled-back")
    assert {r["name"]: r["live_version"] for r in twin["live"]}[again["policy"]] == before
    latest = [(r["action"], r["name"], r["who"]) for r in twin["releases"][:2]]
    assert latest == [("rollback", again["policy"], "token:admin-user"), ("publish", again["policy"], "token:admin-user")]


def test_the_monitor_lists_the_live_policies(admin, findings, shots, state):
    twin = visit(admin, "/ui/monitor", findings, shots, "19-monitor")
    policy, _ = state["published"]
    assert policy in [row["policy"] for row in twin["policies"]]
    visit(admin, f"/ui/monitor/{policy}", findings, shots, "20-monitor-policy")
    visit(admin, f"/ui/experiments/{EXPERIMENT}/online", findings, shots, "21-online")
    visit(admin, f"/ui/experiments/{EXPERIMENT}", findings, shots, "22-experiment-final")


def test_a_missing_experiment_shows_the_message_and_hint_never_a_trace(browser, ui, findings, shots):
    s = log_in(browser, findings, ui.tokens["view"])
    findings.sessions.remove(s)  # its expected 404 is no console error of the pages
    try:
        assert s.goto("/ui/experiments/no-such-experiment").status == 404
        problem = s.page.locator(".problem[role=alert]")
        assert "no-such-experiment" in problem.locator(".message").inner_text()
        assert problem.locator(".hint").inner_text().startswith("What to do: ")
        assert "Traceback" not in s.page.content() and 'File "' not in s.page.content()
        axe(s, "404 page")
        shot(s, shots, "23-not-found")
        s.assert_clean(404)
    finally:
        s.context.close()


# -- every page, once more -----------------------------------------------------------------------------------------

def test_every_page_again_at_800_px_shows_its_twin_and_scrolls_no_sideways(browser, ui, findings, state):
    """Every page visited, in its final state, in a narrow window: its cells against its twin, and no sideways
    scroll (a wide table scrolls inside its own region, never the page)."""
    narrow = log_in(browser, findings, ui.tokens["admin"])
    narrow.page.set_viewport_size({"width": NARROW, "height": 900})
    for path in findings.pages:
        narrow.goto(path)
        if (extra := sideways_scroll(narrow)) > 0:
            findings.add("scroll", [f"{path} scrolls {extra} px sideways at {NARROW} px"])
        if path != "/ui/login":
            findings.add("twin", settled_twin(narrow, path)[1])
    assert findings.problems.get("twin", []) == [], "\n".join(findings.problems["twin"])
    assert findings.problems.get("scroll", []) == [], "\n".join(findings.problems["scroll"])


def test_the_read_only_pages_work_without_javascript(browser, ui, findings):
    """With JavaScript off, logging in works and every page shows what its twin holds (only polling and dialogs need
    scripts)."""
    context = browser.browser.new_context(java_script_enabled=False, base_url=ui.url)
    try:
        page = context.new_page()
        page.goto(ui.url + "/ui/login")
        page.fill("#token", ui.tokens["view"])
        with page.expect_navigation():
            page.click("form.login button[type=submit]")
        assert page.url.endswith("/ui/experiments")
        s = Session(context=context, page=page, origin=ui.url)
        for path in findings.pages:
            if path != "/ui/login":
                assert s.goto(path).status == 200
                assert page.locator("h1").count() == 1
                findings.add("twin", [f"(no JavaScript) {p}" for p in settled_twin(s, path)[1]])
    finally:
        context.close()
    assert findings.problems.get("twin", []) == [], "\n".join(findings.problems["twin"])


def test_every_page_has_one_h1(findings):
    assert len(findings.pages) >= 12
    assert findings.problems.get("h1", []) == [], findings.problems["h1"]


def test_axe_core_finds_no_serious_or_critical_violation_on_any_page(findings):
    assert findings.problems.get("axe", []) == [], "\n".join(findings.problems["axe"])


def test_axe_core_finds_no_serious_or_critical_violation_in_the_offline_report(findings):
    assert findings.problems.get("axe-report", []) == [], "\n".join(findings.problems["axe-report"])


def test_no_console_error_and_every_request_to_pex_itself(findings, state):
    errors = [e for s in findings.sessions for e in s.errors]
    foreign = [u for s in findings.sessions for u in s.foreign_requests()]
    assert sum(len(s.requests) for s in findings.sessions) > 50
    print(f"browser tests: {time.monotonic() - state['started']:.0f} s, {len(findings.pages)} pages; "
          f"pipeline job {state.get('pipeline_seconds')} s; stages seen {state.get('stages')}; "
          f"cancel {state.get('cancel_seconds')} s")
    assert errors == [], "\n".join(errors)
    assert foreign == [], foreign
