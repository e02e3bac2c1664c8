"""The runs on one dataset version, and which one's recommendation binds: results that cannot be shopped.

Re-running the pipeline on the same data with another seed, another certification procedure or other knobs until
something certifies is a search over analyses whose error nobody controls (issue 23). So every ``pex run`` is
recorded with its settings (:meth:`pex.store.runs.RunsMixin.record_run`), and the rule is:

* the **first** run on a dataset version binds: its recommendation is the one later runs on that version recommend;
* a later run whose owner records a **reason** (``pex run --reason TEXT``) binds instead: the reason is recorded
  and shown, and runs after it recommend its recommendation;
* any other later run recommends the binding run's recommendation (``recommended_policy`` and ``recommendation``
  are that run's, with ``from_run`` saying so); its own choice is kept beside it (``own_recommendation``) for
  information. With the same result-affecting settings as the binding run the result is the same, and the history
  says so.

The held-out split no longer depends on ``--seed`` (its key is the dataset version's,
:func:`pex.experiment.split.dataset_split_key`), so a re-run with another seed certifies on the same units; the seed
still seeds the models, and the binding rule covers whatever else it changes.

Runs recorded before this history was kept (schema revision 0004) belong to no dataset version's history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from pex.errors import PexError
from pex.report.summary import RecommendationView
from pex.store.records import RunRecord

# settings that are bookkeeping, not inputs of the result
_NOT_RESULT = ("reason",)
# settings that only matter when another one is on: (setting, the one it needs, the value that one needs)
_ONLY_WITH = (("holdout", "crossfit", False), ("trials", "use_ax", True), ("batch", "use_ax", True),
              ("ax_seconds", "use_ax", True))

FIRST, REASON, EARLIER_RUN, EARLIER_UNREADABLE = "first", "reason", "earlier_run", "earlier_unreadable"
_SHOWN = 3  # earlier runs whose settings the sentence lists (summary.json's history lists every one)


def check_reason(reason: str | None) -> str | None:
    """A ``--reason`` as recorded: stripped; None when not given. An empty reason is bad input."""
    if reason is None:
        return None
    text = " ".join(str(reason).split())
    if not text:
        raise PexError("--reason is empty", "say why this run should replace the earlier runs' recommendation, "
                                            "e.g. --reason 'the first run used the wrong guardrail limit'")
    return text


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run (:meth:`pex.services.run.RunOptions.to_dict`) that can change its result, flat
    (``build.budget``): all of them but the reason, the build's copy of the seed, and knobs of a step that is off
    (``holdout`` of a cross-fitted run, Ax's budget when Ax is not used)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if key in _NOT_RESULT:
            continue
        if key == "build" and isinstance(value, dict):
            flat.update({f"build.{k}": v for k, v in value.items() if k != "seed"})  # build.seed is always seed
        else:
            flat[key] = value
    for key, needs, value in _ONLY_WITH:
        if needs in flat and flat[needs] != value:
            flat.pop(key, None)
    return flat


def differences(then: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """The result-affecting settings that differ between two runs' settings, as ``{setting, then, now}``."""
    a, b = result_settings(then), result_settings(now)
    return [{"setting": k, "then": a.get(k), "now": b.get(k)} for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


@dataclass(frozen=True)
class Binding:
    """What :func:`bind` decided: the summary's ``history`` section, and the earlier run's recommendation that
    binds instead of this run's (its published form with ``from_run``), or None when this run's own binds."""

    history: dict[str, Any]
    carried: dict[str, Any] | None
    bound_to: int | None  # the id of the run whose recommendation binds, when not this one

    @property
    def policy(self) -> tuple[str, int | None] | None:
        """The carried-over recommendation's policy and stored version, or None when this run's own binds."""
        if self.carried is None:
            return None
        return self.carried["policy"], self.carried["from_run"]["version"]


def bind(earlier: list[RunRecord], *, run_id: int, settings: dict[str, Any], reason: str | None, dataset_version: int,
         own: tuple[str, int | None], load_summary: Callable[[int], dict[str, Any]]) -> Binding:
    """Which recommendation run ``run_id`` (settings ``settings``, reason ``reason``, own recommendation ``own`` =
    (policy, version)) recommends, given the ``earlier`` runs on its dataset version (oldest first), and its history.

    ``load_summary(run_id)`` reads an earlier run's stored summary (only the binding run's is read).
    """
    number = len(earlier) + 1
    numbers = {r.id: i + 1 for i, r in enumerate(earlier)}
    rows = [{"run": numbers[r.id], "id": r.id, "at": recorded_at(r.created_at),
             "differs": differences(r.settings, settings), "recommended": r.policy, "version": r.policy_version,
             "own": r.own_policy, "binds": r.binds, "reason": r.reason} for r in earlier]
    history: dict[str, Any] = {"run": number, "id": run_id, "dataset_version": dataset_version, "earlier": rows,
                               "binding": FIRST, "binding_run": number}
    if reason is not None:
        history["reason"] = reason
    binding_run = next((r for r in reversed(earlier) if r.binds), None)
    carried: dict[str, Any] | None = None
    if binding_run is None:  # the first run: the first run on a dataset version always binds
        history["binding"] = FIRST
    else:
        b = numbers[binding_run.id]
        if not differences(binding_run.settings, settings):
            history["same_settings_as"] = b
        if reason is not None:
            history["binding"] = REASON
        else:
            view = _recommendation_of(load_summary(binding_run.id))
            if view is None:
                history["binding"] = EARLIER_UNREADABLE
            else:
                history["binding"], history["binding_run"] = EARLIER_RUN, b
                carried = {**view, "from_run": {"run": b, "id": binding_run.id, "version": binding_run.policy_version,
                                                "text": _from_run_text(b, number, history)}}
    history["text"] = history_text(history, own, carried)
    return Binding(history=history, carried=carried, bound_to=carried["from_run"]["id"] if carried else None)


def _recommendation_of(summary: dict[str, Any]) -> dict[str, Any] | None:
    """An earlier summary's recommendation in this pex's form, or None when it cannot be read as one."""
    rec = summary.get("recommendation") if isinstance(summary, dict) else None
    if not isinstance(rec, dict):
        return None
    rec = {k: v for k, v in rec.items() if k != "from_run"}  # it binds, so it carried nothing over
    try:
        return RecommendationView.model_validate(rec).model_dump(mode="json", exclude_unset=True)
    except ValidationError:
        return None


def _settings_text(changes: list[dict[str, Any]], limit: int = 4) -> str:
    """'seed 0 (this run: 1), certification gated (this run: step-down)'."""
    parts = [f"{c['setting']} {_value(c['then'])} (this run: {_value(c['now'])})" for c in changes[:limit]]
    if len(changes) > limit:
        parts.append(f"{len(changes) - limit} more")
    return ", ".join(parts)


def _value(v: Any) -> str:
    return "not set" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _policy_text(policy: str, version: int | None) -> str:
    return f"{policy} v{version}" if version is not None else policy


def _from_run_text(b: int, number: int, history: dict[str, Any]) -> str:
    """Why the recommendation is run ``b``'s: one sentence for the verdict."""
    if history.get("same_settings_as") == b:
        return (f"This is run {b}'s recommendation: run {number} repeated its settings on the same data, and the "
                f"recommended version is the one run {b} stored.")
    return (f"This is run {b}'s recommendation: run {number} on the same data changed settings without a recorded "
            f"reason, so run {b}'s stands (re-run with --reason to replace it).")


def history_text(history: dict[str, Any], own: tuple[str, int | None], carried: dict[str, Any] | None) -> str:
    """The history in words, e.g. "Run 2 on dataset version 1; run 1 used seed 0 (this run: 1). ...": the one
    place the sentence is written (summary.json carries it; the HTML and text reports show it)."""
    n, dv = history["run"], history["dataset_version"]
    head = f"Run {n} on dataset version {dv}"
    if history["binding"] == FIRST:
        return (f"{head}: the first, so its recommendation binds; later runs on this data recommend it unless a reason "
                "is recorded (--reason).")
    earlier = history["earlier"]
    same = [r["run"] for r in earlier if not r["differs"]]
    changed = [r for r in earlier if r["differs"]]
    used = [f"run {r['run']} used {_settings_text(r['differs'])}" for r in changed[:_SHOWN]]
    if len(changed) > _SHOWN:
        used.append(f"{len(changed) - _SHOWN} more runs used other settings")
    parts = [head + ("; " + "; ".join(used) if used else "")]
    if same:
        parts.append(f"{_runs(same).capitalize()} used the same settings")
    text = ". ".join(parts) + "."
    own_text = (f"the same policy (its own version v{own[1]})" if carried is not None and own[0] == carried["policy"]
                else _policy_text(*own))
    if history["binding"] == EARLIER_RUN and carried is not None:
        b = history["binding_run"]
        rec = _policy_text(carried["policy"], carried["from_run"]["version"])
        if history.get("same_settings_as") == b:
            agree = ("and this run reproduced it" if own[0] == carried["policy"]
                     else f"though this run alone would recommend {own_text}: the pipeline did not reproduce its result")
            return text + f" With the same settings as run {b} the result is the same: run {b}'s recommendation {rec} stands, {agree}."
        return (text + f" The recommendation is run {b}'s ({rec}): a later run with other settings does not replace it "
                f"without a recorded reason (--reason). This run alone would recommend {own_text}, shown for information.")
    if history["binding"] == REASON:
        replaced = next((r for r in reversed(earlier) if r["binds"]), None)
        was = f", replacing run {replaced['run']}'s ({_policy_text(replaced['recommended'], replaced['version'])})" if replaced else ""
        return text + f" This run's recommendation binds{was}, for the recorded reason: \u201c{history['reason']}\u201d."
    # EARLIER_UNREADABLE
    b = next((r["run"] for r in reversed(earlier) if r["binds"]), None)
    return (text + f" Run {b}'s summary is of a format this pex cannot read, so its recommendation cannot be carried "
            "over and this run's binds.")


def _runs(numbers: list[int]) -> str:
    return ("run " if len(numbers) == 1 else "runs ") + ", ".join(str(n) for n in numbers)


def recorded_at(value: datetime) -> str:
    """A record's time as summary.json writes times."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
