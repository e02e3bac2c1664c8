"""The alert rules of ``pex check``: each rule defined once (its name, what it means, its threshold, the fix), and
pure functions that turn the figures the services layer gathered (a readiness answer, a ``/metrics`` text, stored
monitor reports, rollout statuses, hourly counts) into firing alerts.

Nothing here reads the store or the network: :mod:`pex.services.checks` gathers, these functions judge. An alert is
a fact about one experiment's live policy (or about the server, for the rules that read it), and it names who is
told: the experiment's owner and on-call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ERROR_SHARE = 0.01  # 5xx share of responses above which error_rate fires
MIN_RESPONSES = 100  # fewer responses than this say nothing about a rate (one 5xx in 10 requests is noise)
OUTCOME_LAG_HOURS = 24.0  # decisions in this window but no outcome in it: outcome_lag fires
MONITOR_MAX_AGE = timedelta(days=1)  # a live policy whose newest monitor report is older: monitor_missing fires
NO_ONCALL = "no on-call set"
NO_OWNER = "no owner set"
SERVER = "-"  # the experiment and policy column of an alert about the server as a whole


@dataclass(frozen=True)
class Rule:
    """One alert rule: its name (what ``pex check`` prints first), what a firing means, its threshold, the fix."""

    name: str
    means: str
    threshold: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        """The rule as JSON (for ``pex check --json`` and the docs)."""
        return {"name": self.name, "means": self.means, "threshold": self.threshold, "fix": self.fix}


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("not_ready", "the server's /readyz answers not ready: the store is unreachable, a live policy failed to load, "
         "or the decision log is not being written",
         "any not-ready answer (or no answer) from /readyz",
         "read /readyz with an admin token for the cause; fix the store or republish the failed policy"),
    Rule("error_rate", "too many requests end in a server error (5xx)",
         f"5xx share of responses above {ERROR_SHARE:.0%} of at least {MIN_RESPONSES} responses, from the "
         "pex_http_requests counter since the server started (one scrape; Prometheus' rule in docs/alerts.yml "
         "uses a 10-minute rate instead)",
         "read the server's log for the failing route; roll back a policy published just before the rise"),
    Rule("decision_log_backlog", "decisions were answered but not written to the decision log (kept as dead letters, "
         "or the server reports trouble writing the log): they are missing from every live measurement",
         "any dead-letter row under $PEX_HOME/serve/dead-letter/, or decision-log trouble in /readyz",
         "fix the store, then replay the dead letters into the decision log and remove the files"),
    Rule("outcome_lag", "a live policy makes decisions but its experiment receives no outcomes: nothing can be "
         "measured live (guardrails, rollouts, the next online round)",
         f"decisions in the last {OUTCOME_LAG_HOURS:g} h and no outcome of the experiment in the same window",
         "check the job that posts outcomes (POST /api/v1/outcomes or `pex outcomes`)"),
    Rule("drift", "a feature served to the live policy no longer looks like the training data (shifted "
         "distribution, new categories, or more missing values)",
         "the spec's [monitor] thresholds: PSI, Jensen-Shannon distance, missing-rate increase, unseen-category rate",
         "find what changed upstream of the feature; retrain (`pex retrain NAME`) if the change is real"),
    Rule("stale", "the live policy, or the data it was trained on, is older than the experiment's max_age_days",
         "the spec's max_age_days (default 30)",
         "retrain from the decision log (`pex retrain NAME`) or run a new experiment"),
    Rule("guardrail_harm", "a live version harms a guardrail significantly beyond its max_harm",
         "the sequential bound's lower end above max_harm (the same guardrail rule as publishing)",
         "the rollout watcher rolls back automatically; otherwise `pex rollback POLICY` now"),
    Rule("offline_online_disagreement", "the live lift or harm disagrees with the offline estimate that justified "
         "the policy",
         "|z| beyond the 99% band of the difference between the online and offline estimates",
         "look for drift, logging or outcome problems before trusting either number; re-evaluate the policy"),
    Rule("monitor_missing", "a live policy has no recent monitor report, so silence from drift and staleness is not "
         "an all-clear",
         f"no monitor report newer than {MONITOR_MAX_AGE.days} day",
         "run `pex monitor NAME`, or keep a worker (`pex worker`) running: it refreshes the reports"),
)}


@dataclass(frozen=True)
class Alert:
    """One firing rule: which, where (experiment, policy), what in words, who is told, and the figures behind it."""

    rule: str
    experiment: str
    policy: str
    message: str
    owner: str = NO_OWNER
    oncall: str = NO_ONCALL
    figures: dict[str, Any] = field(default_factory=dict)

    def to_line(self) -> str:
        """``rule experiment policy: message (owner X, on-call Y)``: the line ``pex check`` prints."""
        return (f"{self.rule} {self.experiment} {self.policy}: {self.message} "
                f"(owner {self.owner}, on-call {self.oncall})")

    def to_dict(self) -> dict[str, Any]:
        """The alert as JSON, with its rule's fix."""
        return {"rule": self.rule, "experiment": self.experiment, "policy": self.policy, "message": self.message,
                "owner": self.owner, "oncall": self.oncall, "figures": dict(self.figures),
                "fix": RULES[self.rule].fix}


@dataclass(frozen=True)
class Finding:
    """A rule's verdict before it is addressed: the message and figures; the service adds where and who."""

    rule: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)


def _num(value: Any) -> str:
    """A figure in a message: three significant digits, or "n/a"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}"


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


# -- the server's answers (with --url) --------------------------------------------------------------------------


def readiness(answer: Mapping[str, Any] | None, status: int | None, error: str | None = None) -> list[Finding]:
    """``not_ready`` from a /readyz answer (``None`` with ``error`` when the server did not answer). With an admin
    token the answer names the cause; the decision log's part is ``decision_log_backlog``'s, not repeated here."""
    if answer is None:
        return [Finding("not_ready", f"/readyz did not answer: {error or 'no answer'}", {"status": status})]
    if answer.get("ok"):
        return []
    causes = []
    if answer.get("store") not in (None, "ok"):
        causes.append(f"store: {answer['store']}")
    failed = answer.get("failed") or {}
    causes += [f"policy {name} failed to load: {why}" for name, why in sorted(failed.items())]
    if answer.get("decision_log") not in (None, "ok"):
        causes.append("decision log not written (see decision_log_backlog)")
    why = "; ".join(causes) if causes else "no detail (give an admin token for the cause)"
    return [Finding("not_ready", f"/readyz answers {status}: {why}", {"status": status, "failed": dict(failed)})]


def decision_log_trouble(answer: Mapping[str, Any] | None) -> list[Finding]:
    """``decision_log_backlog`` from the readiness answer's ``decision_log`` (only an admin's answer carries it)."""
    trouble = (answer or {}).get("decision_log")
    if trouble in (None, "ok"):
        return []
    return [Finding("decision_log_backlog", f"the server reports the decision log is not being written: {trouble}",
                    {"trouble": trouble})]


def response_counts(metrics_text: str) -> dict[str, float]:
    """Responses by status class from a /metrics text's ``pex_http_requests`` counter, summed over routes and
    methods: ``{"total": n, "5xx": n}``. Cumulative since the server (each of its workers) started."""
    total = errors = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "pex_http_requests":
            continue
        for sample in family.samples:
            if sample.name != "pex_http_requests_total":
                continue
            total += sample.value
            if str(sample.labels.get("status", "")).startswith("5"):
                errors += sample.value
    return {"total": total, "5xx": errors}


def error_rate(counts: Mapping[str, float], *, share: float = ERROR_SHARE,
               min_responses: int = MIN_RESPONSES) -> list[Finding]:
    """``error_rate``: the 5xx share of ``counts`` (:func:`response_counts`) above ``share``."""
    total, errors = counts.get("total", 0.0), counts.get("5xx", 0.0)
    if total < min_responses or errors / total <= share:
        return []
    return [Finding("error_rate", f"{_share(errors / total)} of {total:,.0f} responses since the server started were "
                    f"5xx errors (limit {_share(share)})", {"responses": total, "errors": errors,
                                                             "share": errors / total, "limit": share})]


# -- one live policy ------------------------------------------------------------------------------------------


def dead_letters(count: int) -> list[Finding]:
    """``decision_log_backlog`` from the dead-letter rows of one policy."""
    if not count:
        return []
    return [Finding("decision_log_backlog", f"{count:,} decisions are in dead-letter files, not in the decision log",
                    {"dead_letters": count})]


def outcome_lag(decisions: int, outcomes: int, *, hours: float = OUTCOME_LAG_HOURS) -> list[Finding]:
    """``outcome_lag``: ``decisions`` made in the last ``hours`` and no outcome (``outcomes`` == 0) in them."""
    if decisions <= 0 or outcomes > 0:
        return []
    return [Finding("outcome_lag", f"{decisions:,} decisions in the last {hours:g} h but no outcome of the experiment "
                    "in that time", {"decisions": decisions, "outcomes": outcomes, "hours": hours})]


def drift(report: Mapping[str, Any]) -> list[Finding]:
    """``drift``: one finding per drifted feature of a monitor report, naming the feature and the figure that
    crossed its threshold (every crossed figure, when several did)."""
    section = report.get("drift") or {}
    thresholds = section.get("thresholds") or {}
    findings = []
    for feature in section.get("features") or []:
        if not feature.get("drifted"):
            continue
        flags = list(feature.get("flags") or [])
        parts = [_flag_text(flag, feature, thresholds) for flag in flags] or ["drifted"]
        figures = {key: feature.get(key) for key in ("kind", "psi", "js", "missing_rate", "training_missing_rate",
                                                      "unseen_rate")}
        figures["flags"] = flags
        findings.append(Finding("drift", f"feature {feature['feature']} drifted: {', '.join(parts)}",
                                {"feature": feature["feature"], **figures}))
    return findings


def _flag_text(flag: str, feature: Mapping[str, Any], thresholds: Mapping[str, Any]) -> str:
    """One crossed threshold in words, with the figure and its limit."""
    if flag == "psi":
        return f"PSI {_num(feature.get('psi'))} (limit {_num(thresholds.get('psi'))})"
    if flag == "js":
        return f"Jensen-Shannon distance {_num(feature.get('js'))} (limit {_num(thresholds.get('js'))})"
    if flag == "missing":
        return (f"missing in {_share(feature.get('missing_rate'))} of decisions, "
                f"{_share(feature.get('training_missing_rate'))} in training "
                f"(allowed increase {_share(thresholds.get('missing_increase'))})")
    if flag == "unseen":
        return (f"unseen categories in {_share(feature.get('unseen_rate'))} of decisions "
                f"(limit {_share(thresholds.get('unseen'))})")
    return flag


def stale(staleness: Mapping[str, Any]) -> list[Finding]:
    """``stale``: the policy's or its data's age beyond ``max_age_days`` (a monitor report's ``staleness``)."""
    if not staleness.get("stale"):
        return []
    limit = staleness.get("max_age_days")
    ages = []
    for key, what in (("policy_age_days", "policy"), ("data_age_days", "data")):
        age = staleness.get(key)
        if age is not None and limit is not None and age > limit:
            ages.append(f"the {what} is {age:.0f} days old")
    why = " and ".join(ages) if ages else "stale"
    return [Finding("stale", f"{why} (max_age_days {_num(limit)})", dict(staleness))]


def monitor_missing(created_at: datetime | None, now: datetime, *, max_age: timedelta = MONITOR_MAX_AGE) -> list[Finding]:
    """``monitor_missing``: no monitor report, or the newest older than ``max_age``."""
    if created_at is None:
        return [Finding("monitor_missing", "no monitor report yet: drift and staleness are unknown", {"age_hours": None})]
    age = now - created_at
    if age <= max_age:
        return []
    hours = age.total_seconds() / 3600
    return [Finding("monitor_missing", f"the newest monitor report is {hours:.0f} h old (limit "
                    f"{max_age.total_seconds() / 3600:.0f} h)", {"age_hours": hours})]


def guardrail_harm(harms: Iterable[Mapping[str, Any]], where: str = "") -> list[Finding]:
    """``guardrail_harm``: every harm (a :class:`~pex.monitor.sequential.SequentialHarm` as its ``to_dict``) whose
    verdict is "fail", i.e. whose lower bound exceeds the limit. ``where`` says which measurement (a rollout step)."""
    findings = []
    for harm in harms:
        if harm.get("verdict") != "fail":
            continue
        at = f" {where}" if where else ""
        findings.append(Finding("guardrail_harm", f"guardrail {harm.get('metric')} harmed{at}: "
                                f"{_num(harm.get('estimate'))}, bound {_num(harm.get('lower'))} to "
                                f"{_num(harm.get('upper'))} beyond the limit {_num(harm.get('limit'))} "
                                f"({harm.get('method', 'sequential bound')})", dict(harm)))
    return findings


def disagreement(agreements: Mapping[str, Mapping[str, Any]], where: str = "") -> list[Finding]:
    """``offline_online_disagreement``: every flagged agreement (``name -> Agreement.to_dict()``)."""
    findings = []
    for name, agreement in agreements.items():
        if not agreement.get("flag"):
            continue
        at = f" {where}" if where else ""
        findings.append(Finding("offline_online_disagreement", f"{name}{at}: online and offline disagree, z = "
                                f"{_num(agreement.get('z'))} (band {_num(agreement.get('band'))})",
                                {"name": name, **dict(agreement)}))
    return findings
