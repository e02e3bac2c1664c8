"""``pex check``: every alert rule of :mod:`pex.monitor.alerts` over the workspace (and, with a URL, a running
server), each firing alert addressed to its experiment's owner and on-call.

This module gathers the figures; the rules judge them. What it reads: the stored monitor reports (drift, staleness,
whether a report is recent), the running rollouts' statuses (live guardrail harm, offline/online agreement), the
hourly counts of decisions and outcomes (outcome lag, refreshed first so a cron job without a worker sees current
counts), the dead-letter files, and with ``url`` the server's ``/readyz`` and ``/metrics``. A source that cannot be
read is reported as "not checked: <why>", never as an all-clear.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pex.errors import NotFoundError, PexError
from pex.monitor import alerts
from pex.monitor.alerts import Alert, Finding
from pex.services import rollups
from pex.services.outcomes import experiment_spec
from pex.store.dead_letters import read_dead_letters
from pex.store.workspace import Workspace

TIMEOUT = 10.0  # seconds to wait for the server's answer


@dataclass
class Checked:
    """The outcome of one ``pex check``: the firing alerts, and the rules (or parts) that could not be checked."""

    alerts: list[Alert] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON: ``ok`` (nothing fires), the alerts, the parts not checked."""
        return {"ok": not self.alerts, "alerts": [a.to_dict() for a in self.alerts], "not_checked": self.not_checked}


@dataclass(frozen=True)
class _Live:
    """A live policy as the checks see it: name, version, experiment, and who is told."""

    policy: str
    version: int
    experiment: str
    owner: str
    oncall: str


def run_checks(ws: Workspace, name: str | None = None, *, url: str | None = None,
               token: str | None = None) -> list[Alert]:
    """Every firing alert of every experiment (or of ``name``, an experiment or a live policy): see :func:`check`."""
    return check(ws, name, url=url, token=token).alerts


def check(ws: Workspace, name: str | None = None, *, url: str | None = None, token: str | None = None,
          now: datetime | None = None, measure: bool = True) -> Checked:
    """Evaluate every rule; ``name`` (an experiment, or a live policy) narrows the per-policy rules to it, ``url``
    (the server's base address) adds readiness and the 5xx rate, ``token`` (admin) lets those say why.

    ``measure=False`` judges what is stored only, for a page view: the hourly counts as of the worker's last refresh
    and each rollout's newest check by the watcher, instead of refreshing the counts and measuring the rollouts."""
    now = now or datetime.now(UTC)
    live = _live_policies(ws, name)
    done = Checked()
    if url is not None:
        _server(done, url, token)
    _dead_letters(done, ws, live, name)
    _outcome_lag(done, ws, live, now, refresh=measure)
    _monitoring(done, ws, live, now)
    _rollouts(done, ws, live, measure=measure)
    _online_rounds(done, ws, live)
    order = list(alerts.RULES)
    done.alerts.sort(key=lambda a: (order.index(a.rule), a.experiment, a.policy))
    return done


def _live_policies(ws: Workspace, name: str | None) -> list[_Live]:
    """The live policies the checks cover, with their experiment's owner and on-call; NotFoundError for a ``name``
    that is neither an experiment nor a live policy."""
    versions = ws.live_versions()
    experiments = {e["name"] for e in ws.list_experiments()}
    if name is not None and name not in experiments and name not in versions:
        known = sorted(experiments)
        raise NotFoundError(f"no experiment or live policy named {name!r}",
                            "run `pex check` without a name to check everything"
                            + (f"; experiments: {', '.join(known[:8])}" if known else ""))
    found = []
    people: dict[str, tuple[str, str]] = {}
    for policy, version in sorted(versions.items()):
        experiment = ws.get_policy(policy, version).experiment
        if name is not None and name not in (policy, experiment):
            continue
        if experiment not in people:
            people[experiment] = _people(ws, experiment)
        found.append(_Live(policy, version, experiment, *people[experiment]))
    return found


def _people(ws: Workspace, experiment: str) -> tuple[str, str]:
    """The experiment's owner and on-call, from the spec of its current dataset version."""
    try:
        spec = experiment_spec(ws, experiment)
    except NotFoundError:
        return alerts.NO_OWNER, alerts.NO_ONCALL
    return spec.owner or alerts.NO_OWNER, spec.oncall or alerts.NO_ONCALL


def _add(done: Checked, findings: list[Finding], live: _Live | None = None, *, experiment: str = alerts.SERVER,
         policy: str = alerts.SERVER, owner: str = alerts.NO_OWNER, oncall: str = alerts.NO_ONCALL) -> None:
    for f in findings:
        if live is not None:
            experiment, policy, owner, oncall = live.experiment, live.policy, live.owner, live.oncall
        done.alerts.append(Alert(f.rule, experiment, policy, f.message, owner, oncall, f.figures))


# -- the server -------------------------------------------------------------------------------------------------


def _fetch(url: str, token: str | None) -> tuple[int, bytes]:
    """GET ``url``: the status and body (an HTTP error status is an answer, not an exception)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # the scheme was checked: http(s) only
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _server(done: Checked, url: str, token: str | None) -> None:
    """``not_ready``, ``decision_log_backlog`` (the server's side) and ``error_rate`` from the server at ``url``."""
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise PexError(f"--url must be an http:// or https:// address, got {url!r}",
                       "give the base address of `pex serve`, e.g. --url http://127.0.0.1:8000")
    try:
        status, body = _fetch(f"{base}/readyz", token)
        answer = json.loads(body)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _add(done, alerts.readiness(None, None, str(getattr(exc, "reason", exc))))
        done.not_checked.append("error_rate: not checked: the server did not answer")
        return
    _add(done, alerts.readiness(answer, status))
    _add(done, alerts.decision_log_trouble(answer))
    if "decision_log" not in answer:
        done.not_checked.append("decision_log_backlog (server side): not checked: /readyz gives its detail to an "
                                "admin token only (--token)")
    try:
        status, body = _fetch(f"{base}/metrics", token)
    except (urllib.error.URLError, OSError) as exc:
        done.not_checked.append(f"error_rate: not checked: /metrics did not answer ({getattr(exc, 'reason', exc)})")
        return
    if status != 200:
        done.not_checked.append(f"error_rate: not checked: /metrics answered {status} (it needs an admin token, "
                                "--token)")
        return
    _add(done, alerts.error_rate(alerts.response_counts(body.decode("utf-8", "replace"))))


# -- the workspace ----------------------------------------------------------------------------------------------


def _dead_letters(done: Checked, ws: Workspace, live: list[_Live], name: str | None) -> None:
    """``decision_log_backlog``: dead-lettered decisions, per policy (a policy that is no longer live included)."""
    counts: Counter[tuple[str, str]] = Counter()
    try:
        for letter in read_dead_letters(ws.home):
            row = letter.get("row") or {}
            counts[(str(row.get("experiment") or alerts.SERVER), str(row.get("policy") or alerts.SERVER))] += 1
    except (OSError, ValueError) as exc:
        done.not_checked.append(f"decision_log_backlog: not checked: a dead-letter file cannot be read ({exc})")
        return
    by_policy = {p.policy: p for p in live}
    for (experiment, policy), count in sorted(counts.items()):
        if name is not None and name not in (experiment, policy):
            continue
        if policy in by_policy:
            _add(done, alerts.dead_letters(count), by_policy[policy])
        else:
            owner, oncall = _people(ws, experiment) if experiment != alerts.SERVER else (alerts.NO_OWNER,
                                                                                          alerts.NO_ONCALL)
            _add(done, alerts.dead_letters(count), experiment=experiment, policy=policy, owner=owner, oncall=oncall)


def _outcome_lag(done: Checked, ws: Workspace, live: list[_Live], now: datetime, *, refresh: bool) -> None:
    """``outcome_lag`` from the hourly counts (whole hours: the window starts at the hour ``OUTCOME_LAG_HOURS`` ago)."""
    if not live:
        return
    try:
        if refresh:
            rollups.refresh(ws)
    except PexError as exc:  # a busy store: the worker's last refresh still counts, and the line says so
        done.not_checked.append(f"outcome_lag: counts as of the worker's last refresh ({exc.message})")
    since = (now - timedelta(hours=alerts.OUTCOME_LAG_HOURS)).replace(minute=0, second=0, microsecond=0)
    outcomes: dict[str, int] = {}
    for p in live:
        decided = sum(r["count"] for r in rollups.decision_hours(ws, p.policy, since))
        if p.experiment not in outcomes:
            outcomes[p.experiment] = sum(r["count"] for r in rollups.outcome_hours(ws, p.experiment, since))
        _add(done, alerts.outcome_lag(decided, outcomes[p.experiment]), p)


def _service(module: str, function: str) -> tuple[Callable[..., Any] | None, str]:
    """A function of another services module that lands with issue 26, or None and why it is not there yet."""
    import importlib

    try:
        found = getattr(importlib.import_module(f"pex.services.{module}"), function)
    except (ImportError, AttributeError):
        return None, f"pex.services.{module}.{function} is not available"
    return found, ""


def _monitoring(done: Checked, ws: Workspace, live: list[_Live], now: datetime) -> None:
    """``drift``, ``stale`` and ``monitor_missing`` from the newest stored monitor report of each live policy."""
    if not live:
        return
    latest_reports, why = _service("monitoring", "latest_reports")
    if latest_reports is None:
        done.not_checked.append(f"drift, stale, monitor_missing: not checked: {why}")
        return
    reports = latest_reports(ws)
    staleness, _ = _service("monitoring", "staleness")
    for p in live:
        report = reports.get(p.policy)
        if report is not None and report.get("version") not in (None, p.version):
            report = None  # a report of an earlier version says nothing about what is live now
        created = _when(report.get("created_at")) if report else None
        _add(done, alerts.monitor_missing(created, now), p)
        if report is not None:
            _add(done, alerts.drift(report), p)
            _add(done, alerts.stale(report.get("staleness") or {}), p)
        elif staleness is not None:
            ages = (staleness(ws, p.experiment).get("policies") or {}).get(p.policy)
            _add(done, alerts.stale(ages or {}), p)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _rollouts(done: Checked, ws: Workspace, live: list[_Live], *, measure: bool) -> None:
    """``guardrail_harm`` and ``offline_online_disagreement`` of each running rollout: measured now, or (``measure``
    false) as the watcher's newest check left them."""
    running, why = _service("rollout", "running")
    status, _ = _service("rollout", "status")
    if running is None or status is None:
        if live:
            done.not_checked.append(f"guardrail_harm, offline_online_disagreement: not checked: {why or 'no status'}")
        return
    by_policy = {p.policy: p for p in live}
    for policy in running(ws):
        if policy not in by_policy:
            continue
        found = status(ws, policy) if measure else ws.get_rollout(policy).to_dict()
        harms, agreements = rollout_figures(found) if measure else checked_figures(found.get("last_check") or {})
        step = found.get("step")
        where = f"in the canary at step {step} ({found['steps'][step]:.0%})" if step is not None else "in the canary"
        _add(done, alerts.guardrail_harm(harms, where), by_policy[policy])
        _add(done, alerts.disagreement(agreements, where), by_policy[policy])


def _online_rounds(done: Checked, ws: Workspace, live: list[_Live]) -> None:
    """``offline_online_disagreement`` of the online loop whose stable policy is live: the arms of its newest
    completed round (all of them while that round serves, else the promoted one) whose live lift or harm disagreed
    with the offline estimate that put them in the round (stored by ``online complete``,
    :func:`pex.services.online.offline_agreement`)."""
    for p in live:
        try:
            loop = ws.get_loop(p.experiment)
        except NotFoundError:
            continue
        if loop.policy != p.policy:
            continue
        done_rounds = [r for r in ws.rounds(loop.name) if r.status == "complete" and r.results]
        if not done_rounds:
            continue
        newest = done_rounds[-1]
        # while the round itself serves, every arm counts; once an arm was promoted, only that arm
        promoted = (ws.get_policy(p.policy, p.version).document.get("lineage") or {}).get("promoted_from") or {}
        for route, arm in (newest.results.get("arms") or {}).items():
            if p.version != newest.policy_version and route != promoted.get("route"):
                continue
            found = (arm.get("agreement") or {}).get("metrics") or {}
            _add(done, alerts.disagreement(found, f"in online round {newest.round}'s arm {route}"), p)


def rollout_figures(status: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The canary's always-valid guardrail harms (SequentialHarm dicts) and its flagged-or-not agreements with the
    offline estimate (metric -> Agreement dict) in a rollout status (:func:`pex.services.rollout.status`)."""
    canary = status.get("canary") or {}
    harms = list((canary.get("sequential") or {}).values())
    agreements = {m: cell["agreement"] for m, cell in (canary.get("metrics") or {}).items() if cell.get("agreement")}
    return harms, agreements


def checked_figures(last_check: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The same as :func:`rollout_figures` from a rollout's stored ``last_check`` (the figures of its newest check)."""
    harms = list((last_check.get("sequential") or {}).values())
    agreements = {m: a for m, a in (last_check.get("agreement") or {}).items() if a}
    return harms, agreements
