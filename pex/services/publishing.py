"""Which policy version is live: publish and roll back, recorded with who did it, and the gate in front of publish.

The gate (:func:`gate`) is the one rule for whether a version may go live without an override: the run that stored
it certified it to keep its guardrails, the online loop promoted it from a certified arm, or it is the all-control
fallback (which harms nothing). :func:`publish_checked` applies it for ``pex publish``, the API's publish route and
the UI's publish action; an override is a publish with a reason, recorded in the release history as
``FORCED_PREFIX + reason``. :func:`publish` stays unchecked for the internal callers that hold their own
certificate (online rounds, promote, the demo's recommended policy).
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass, field
from typing import Any

from pex.errors import DataError, NotFoundError, PexError, UncertifiedError
from pex.names import check_text
from pex.report.numbers import fmt_num, fmt_pct, fmt_signed
from pex.report.summary import HarmCell, PolicyRow, RunSummary
from pex.store.records import PolicyRecord
from pex.store.releases import FORCED_PREFIX, Release
from pex.store.workspace import Workspace

MAX_REASON = 500  # characters of an override's reason (it is shown in every history listing)

# a verdict's code -> the standing every view labels it with
CERTIFIED, PROMOTED, FALLBACK = "certified", "promoted", "fallback"
NOT_CERTIFIED, NOT_TESTED, SCREENED_OUT = "not_certified", "not_tested", "screened_out"
NOT_A_CANDIDATE, NEVER_TESTED, PROMOTED_UNCERTIFIED = "not_a_candidate", "never_tested", "promoted_uncertified"
COPY_CHANGED = "copy_changed"
STANDINGS = {CERTIFIED: "certified", PROMOTED: "certified", FALLBACK: "fallback", NOT_CERTIFIED: "not certified",
             NOT_TESTED: "not tested", SCREENED_OUT: "screened out", NOT_A_CANDIDATE: "not a candidate",
             NEVER_TESTED: "never tested", PROMOTED_UNCERTIFIED: "not certified", COPY_CHANGED: "never tested"}
PASSING = frozenset({CERTIFIED, PROMOTED, FALLBACK})


@dataclass(frozen=True)
class Gate:
    """The gate's verdict on one policy version: whether it is certified to keep its guardrails, where it stands
    (the words every view shows), why (a sentence rendered from ``code`` and ``figures``, never parsed back), and
    which run judged it (None when none did)."""

    policy: str
    version: int
    certified: bool
    standing: str
    why: str
    code: str = ""
    run: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The verdict for JSON output."""
        return {"policy": self.policy, "version": self.version, "certified": self.certified, "standing": self.standing,
                "why": self.why, "code": self.code, "run": self.run, "figures": self.figures}


def local_actor() -> str:
    """Who is at this terminal, as ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def publish(ws: Workspace, name: str, version: int | None = None, actor: str | None = None,
            note: str | None = None) -> Release:
    """Make ``version`` of policy ``name`` live, unchecked (the internal callers that hold their own certificate:
    online rounds, promote, the demo); servers switch to it within seconds. The default is the newest version,
    unless a run stored it beside an earlier run's recommendation of that policy (a re-run without ``--reason``,
    :mod:`pex.services.history`): then the version that run recommends. ``note`` goes into the audit trail."""
    return ws.publish(name, version, actor or local_actor(), note)


def publish_checked(ws: Workspace, name: str, version: int | None = None, actor: str | None = None, *,
                    force_reason: str | None = None) -> Release:
    """Make ``version`` of policy ``name`` live when the gate passes it (:func:`gate`); else an
    :class:`~pex.errors.UncertifiedError` saying why, unless ``force_reason`` is given: then it goes live anyway and
    the release note is ``FORCED_PREFIX + reason``, shown as a forced publish in every history."""
    reason = check_reason(force_reason) if force_reason is not None else None
    ws.check_identity()  # a workspace removed or replaced under a server judges nothing (503), as its publish would
    version = version if version is not None else ws.publish_target(name)
    if ws.live_versions().get(name) == version:  # nothing would change: the store says so (400), whatever the gate
        return ws.publish(name, version, actor or local_actor())
    verdict = gate(ws, name, version)
    if not verdict.certified and reason is None:
        raise UncertifiedError(f"policy {name} v{version} is not certified to keep its guardrails: {verdict.why}",
                               f"publish a certified version, or `pex publish {name} --force --reason '...'` to "
                               "override (recorded in the release history)")
    note = FORCED_PREFIX + reason if reason is not None and not verdict.certified else None
    return ws.publish(name, version, actor or local_actor(), note)


def check_reason(reason: Any) -> str:
    """An override's reason: non-empty text (stripped) of at most :data:`MAX_REASON` characters, no control
    characters (:func:`pex.names.check_text`); a :class:`~pex.errors.DataError` otherwise."""
    hint = "say in a sentence why this version goes live without a certificate, e.g. --reason 'owner accepts the risk'"
    if not isinstance(reason, str) or not reason.strip():
        raise DataError("the reason for a forced publish is empty", hint)
    return check_text(reason.strip(), "the reason for a forced publish", MAX_REASON, hint)


def rollback(ws: Workspace, name: str, actor: str | None = None, note: str | None = None) -> Release:
    """Return policy ``name`` to the version live before the current one."""
    return ws.rollback(name, actor or local_actor(), note)


def ui_reason(actor: str) -> str:
    """The reason of a forced publish confirmed in the UI's dialog by ``actor``."""
    return f"confirmed by {actor} in the UI"


# --------------------------------------------------------------------------- the gate


def gate(ws: Workspace, name: str, version: int) -> Gate:
    """Whether version ``version`` of policy ``name`` is certified to keep its guardrails, and why (see the
    module). A policy or version that does not exist is a NotFoundError."""
    return Judge(ws).gate(name, version)


class Judge:
    """The gate over several versions of one workspace (a page offering many), reading each run's summary once."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._summaries: dict[int, RunSummary | None] = {}
        self._runs: dict[str, list[dict[str, Any]]] = {}
        self._controls: dict[str, str | None] = {}

    def gate(self, name: str, version: int) -> Gate:
        """:func:`gate`."""
        record = self.ws.get_policy(name, version)
        doc = record.document
        copied = (doc.get("lineage") or {}).get("copy_of")
        if isinstance(copied, dict):
            return self._copy(record, copied)
        promoted = (doc.get("lineage") or {}).get("promoted_from")
        if isinstance(promoted, dict):
            route = str(promoted.get("route", ""))
            if promoted.get("certified") is True:
                return _verdict(name, version, PROMOTED, route=route)
            return _verdict(name, version, PROMOTED_UNCERTIFIED, route=route)
        if self._all_control(record):
            return _verdict(name, version, FALLBACK, arm=doc.get("default_arm"))
        found = self._judged_by(record)
        if found is None:
            return _verdict(name, version, NEVER_TESTED)
        run_id, s, row = found
        return _from_row(s, row, run_id)

    def _copy(self, record: PolicyRecord, copied: dict[str, Any]) -> Gate:
        """A version stored as a copy of another under a new name (:func:`copy_policy`) has the source's verdict, if
        it decides exactly as the source does: the lineage is data anyone can write, the decisions are checked."""
        source = self.ws.get_policy(str(copied.get("policy")), int(copied.get("version") or 0))
        if _deciding(source.document) != _deciding(record.document):
            return _verdict(record.name, record.version, COPY_CHANGED, source=f"{source.name} v{source.version}")
        found = self.gate(source.name, source.version)
        return Gate(record.name, record.version, found.certified, found.standing,
                    f"a copy of {source.name} v{source.version}: {found.why}", found.code, found.run,
                    {**found.figures, "copy_of": {"policy": source.name, "version": source.version}})

    def _all_control(self, record: PolicyRecord) -> bool:
        doc = record.document
        if record.kind != "constant" or float(doc.get("exploration") or 0.0) >= 1.0:
            return False  # exploration 1 is the uniform random policy, which serves every arm
        return doc.get("default_arm") == self._control(record.experiment)

    def _control(self, experiment: str) -> str | None:
        if experiment not in self._controls:
            from pex.services.outcomes import experiment_spec

            try:
                self._controls[experiment] = experiment_spec(self.ws, experiment).control
            except NotFoundError:
                self._controls[experiment] = None
        return self._controls[experiment]

    def _judged_by(self, record: PolicyRecord) -> tuple[int, RunSummary, PolicyRow] | None:
        """The newest run that stored this version among its policies (a run stores its policies with its fit's id)
        and the version's row in it; None when no run did (a hand-made or loop-made version)."""
        if record.fit_id is None:
            return None
        if record.experiment not in self._runs:
            try:
                self._runs[record.experiment] = self.ws.list_runs(record.experiment)
            except NotFoundError:
                self._runs[record.experiment] = []
        for run in self._runs[record.experiment]:
            if run["fit_id"] != record.fit_id:
                continue
            s = self._summary(run["id"])
            row = s.by_name.get(record.name) if s is not None else None
            if s is not None and row is not None and row.version == record.version:
                return run["id"], s, row
        return None

    def _summary(self, run_id: int) -> RunSummary | None:
        if run_id not in self._summaries:
            try:
                self._summaries[run_id] = RunSummary.load(self.ws.run_summary(run_id))
            except PexError:  # a summary of a format this pex cannot read certifies nothing
                self._summaries[run_id] = None
        return self._summaries[run_id]


# what a copy may change: how the version is named and recorded, never how it decides
_RECORD_KEYS = frozenset({"name", "version", "lineage", "trained_at"})


def _deciding(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _RECORD_KEYS}


def copy_policy(ws: Workspace, name: str, version: int, target: str, lineage: dict[str, Any] | None = None) -> PolicyRecord:
    """Store version ``version`` of policy ``name`` as a new version of policy ``target`` (the stable name services
    ask for), deciding exactly as the source; the gate gives it the source's verdict (:meth:`Judge._copy`)."""
    source = ws.get_policy(name, version)
    doc = {**source.document, "name": target,
           "lineage": {**(source.document.get("lineage") or {}), **(lineage or {}),
                       "copy_of": {"policy": name, "version": version}}}
    return ws.put_policies(source.experiment, [(doc, None)], fit_id=source.fit_id)[0]


def _from_row(s: RunSummary, row: PolicyRow, run_id: int) -> Gate:
    """The verdict of run ``run_id`` (summary ``s``) on its policy row ``row``."""
    standing = s.standing(row)
    rec = s.recommendation
    if standing != "certified" and row.name == rec.policy and row.name in rec.certification.certified:
        standing = "certified"  # the recommendation carried over from an earlier run holds that run's certificate
    code = {"certified": CERTIFIED, "fallback": FALLBACK, "not certified": NOT_CERTIFIED, "not tested": NOT_TESTED,
            "screened out": SCREENED_OUT}.get(standing, NOT_A_CANDIDATE)
    over = {m: c for m, c in row.guardrails.items() if c.verdict != "pass"}
    figures: dict[str, Any] = {"harms": {m: c.model_dump() for m, c in over.items()}} if over else {}
    return _verdict(row.name, int(row.version or 0), code, run=run_id, over=over, **figures)


def _bound(cell: HarmCell) -> str:
    """One guardrail's upper bound against its limit, as every view words it."""
    if cell.relative:
        return f"{cell.metric} bound {fmt_pct(cell.upper)} over its limit {fmt_pct(cell.limit)}"
    return f"{cell.metric} bound {fmt_signed(cell.upper)} over its limit {fmt_num(cell.limit)}"


def _verdict(name: str, version: int, code: str, *, run: int | None = None, over: dict[str, HarmCell] | None = None,
             **figures: Any) -> Gate:
    """The gate's verdict with its sentence, rendered here from the code and its figures (the one place)."""
    judged = f"run {run}" if run is not None else ""
    bounds = "; ".join(_bound(c) for c in (over or {}).values())
    why = {
        CERTIFIED: f"{judged} certified it: every guardrail's upper bound is within its limit on units no model saw",
        PROMOTED: f"the online loop promoted it from {figures.get('route')}, certified under the loop's error control",
        FALLBACK: f"everyone keeps control ({figures.get('arm')}): it harms nothing, so it needs no certificate",
        NOT_CERTIFIED: f"not certified by {judged}: {bounds or 'a guardrail bound is over its limit'}",
        NOT_TESTED: f"{judged} did not test it: its test sequence stopped before it"
                    + (f" ({bounds})" if bounds else ""),
        SCREENED_OUT: f"{judged} screened it out before the held-out test: its harm on the building units could not "
                      "pass" + (f" ({bounds})" if bounds else ""),
        NOT_A_CANDIDATE: f"{judged} did not offer it to the certification (shown for comparison only)",
        NEVER_TESTED: "never tested: no run of this experiment stored or certified this version",
        PROMOTED_UNCERTIFIED: f"the online loop promoted it from {figures.get('route')} by hand, without the loop's "
                              "certificate",
        COPY_CHANGED: f"its lineage says it copies {figures.get('source')}, but it does not decide as that version does",
    }[code]
    return Gate(name, version, code in PASSING, STANDINGS[code], why, code, run, figures)
