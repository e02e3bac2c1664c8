"""The live pages of the UI: policies (publish / roll back), the online loop, and the live monitor.

Every page is a :func:`web.ui.twins.page` over one :mod:`pex.services.pages` function, so ``/ui/X`` and
``/ui/X.json`` cannot disagree; every action is an admin-only POST that redirects to the page showing its result.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, request, url_for

from pex.errors import DataError
from pex.services import jobs, publishing
from pex.services import online as online_service
from pex.services.pages import monitor as monitor_pages
from pex.services.pages import online as online_pages
from pex.services.pages import policies as policies_pages
from web.ui.twins import action, actor, page, workspace

bp = Blueprint("live", __name__, url_prefix="/ui")


# -- policies ------------------------------------------------------------------------------------------------------

@page(bp, "/experiments/<name>/policies", "policies.html")
def policies(name: str) -> dict[str, Any]:
    """The recommendation, the comparison, the Pareto plot and tree, what is live, the audit trail, the actions."""
    return policies_pages.policies_page(workspace(), name)


def _version() -> int:
    text = request.form.get("version", "")
    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise DataError(f"the version to publish must be a whole number from 1, got {text[:20]!r}",
                        "use the Publish buttons of the policies page")
    return int(text)


@action(bp, "/experiments/<name>/policies/<policy>/publish")
def publish(name: str, policy: str):
    """Publish a version of one of the experiment's policies through the publish gate. A version the gate does not
    pass needs the dialog's extra confirmation (the form field ``extra_confirmed``); without it nothing changes
    (400), with it the version goes live as a forced publish whose recorded reason names who confirmed it."""
    version = _version()
    ws = workspace()
    check = policies_pages.publish_check(ws, name, policy, version)
    reason = None
    if check.needs_confirmation:
        if request.form.get("extra_confirmed") != "yes":
            raise policies_pages.refuse_uncertified(check)
        reason = publishing.ui_reason(actor())
    publishing.publish_checked(ws, policy, version, actor(), force_reason=reason)
    return redirect(url_for("live.policies", name=name) + "#live")


@action(bp, "/experiments/<name>/policies/<policy>/rollback")
def rollback(name: str, policy: str):
    """Return one of the experiment's policies to the version live before the current one."""
    ws = workspace()
    policies_pages.own_policy(ws, name, policy)
    publishing.rollback(ws, policy, actor())
    return redirect(url_for("live.policies", name=name) + "#live")


# -- the online loop -----------------------------------------------------------------------------------------------

@page(bp, "/experiments/<name>/online", "online.html")
def online(name: str) -> dict[str, Any]:
    """The loop's rounds and arms, the pick and why, and what to do next (or what the loop is, before it starts)."""
    return online_pages.online_page(workspace(), name)


def _job(kind: str, params: dict[str, Any]):
    job = jobs.submit(workspace(), kind, params, actor())
    return redirect(url_for("home.job", job_id=job.id), 303)


@action(bp, "/experiments/<name>/online/start")
def online_start(name: str):
    """Start the loop as a job (round 1 opens and is published): ``arms`` candidates a round, optionally round 1
    from the offline Pareto candidates (``from_offline``)."""
    text = request.form.get("arms", "4").strip()
    if not text.isdigit():
        raise DataError(f"candidates per round must be a whole number, got {text[:20]!r}", "e.g. 4")
    return _job("online_start", {"experiment": name, "arms": int(text),
                                 "from_offline": request.form.get("from_offline") == "yes"})


@action(bp, "/experiments/<name>/online/complete")
def online_complete(name: str):
    """Measure the open round as a job (``next_round=yes``: and open the next one)."""
    return _job("online_complete", {"experiment": name, "next_round": request.form.get("next_round") == "yes"})


@action(bp, "/experiments/<name>/online/promote")
def online_promote(name: str):
    """Publish the loop's pick under its stable name (quick: no job)."""
    ws = workspace()
    online_service.promote(ws, name, actor=actor())
    return redirect(url_for("live.online", name=name), 303)


# -- the live monitor ----------------------------------------------------------------------------------------------

@page(bp, "/monitor", "monitor.html")
def monitor() -> dict[str, Any]:
    """Every live policy: version, age, decisions and outcomes of the last 48 h (from the worker's hourly counts)."""
    return monitor_pages.monitor_page(workspace())


@page(bp, "/monitor/<policy>", "monitor_policy.html")
def monitor_policy(policy: str) -> dict[str, Any]:
    """One live policy: decisions per hour by arm with publish / rollback markers, outcome arrival, the hourly table."""
    return monitor_pages.policy_monitor_page(workspace(), policy)
