"""A whole `pex.run` with an absolute guardrail limit (``max_harm_abs``) on a small experiment whose guardrail has few
events: every stage holds the guardrail to that limit in the metric's units, and the summary warns about the events."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from pex.experiment.simulate import simulate
from pex.experiment.spec import load_spec
from pex.services.run import run

MAX_HARM_ABS = 0.004  # 0.4 percentage points of unsubscribes


@pytest.fixture(scope="module")
def absolute_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("absolute")
    spec = simulate(2_000, scenario="notification_cadence", seed=11).write(base / "exp", name="exp")
    text = spec.read_text()
    assert "max_harm = 0.05" in text
    spec.write_text(text.replace("max_harm = 0.05", f"max_harm_abs = {MAX_HARM_ABS}"))
    return spec, run(spec, base / "out", home=base / "ws", learner="t", dense=64, seed=3)


def test_every_stage_uses_the_absolute_limit(absolute_run):
    spec, result = absolute_run
    summary = result.summary
    [meta] = [m for m in load_spec(spec).metrics.values() if m.role == "guardrail"]
    assert meta.max_harm_abs == MAX_HARM_ABS and meta.max_harm is None
    cells = [p["guardrails"]["unsubscribes"] for p in summary["policies"]]
    assert cells and all(c["limit"] == MAX_HARM_ABS and c["basis"] == "absolute" and c["max_harm_abs"] == MAX_HARM_ABS
                         for c in cells)
    # the cell's verdict is its one-sided bound against that limit, in the metric's units (not a relative change)
    for c in cells:
        assert (c["verdict"] == "pass") == (c["upper"] <= MAX_HARM_ABS)
        policy = next(p for p in summary["policies"] if p["guardrails"]["unsubscribes"] is c)
        assert c["estimate"] == pytest.approx(policy["lift_vs_control"]["unsubscribes"]["estimate"], abs=1e-9)
    for harms in summary["recommendation"]["certification"]["harms"].values():
        assert all(h["limit"] == MAX_HARM_ABS for h in harms.values())
    assert {(g["limit"], g["basis"]) for g in summary["guardrails"]} == {(MAX_HARM_ABS, "absolute")}  # pex analyze's
    schema = json.loads(resources.files("pex").joinpath("schemas/summary.schema.json").read_text())
    jsonschema.validate(json.loads((result.out / "summary.json").read_text()), schema, cls=jsonschema.Draft202012Validator)


def test_few_control_events_are_a_caveat(absolute_run):
    summary = absolute_run[1].summary
    events = {p["guardrails"]["unsubscribes"]["control_events"] for p in summary["policies"]}
    assert len(events) == 1  # one count per metric: the control units that certify
    [count] = events
    assert 0 < count < 100
    warning = [c for c in summary["caveats"] if "unsubscribes" in c and "events in control" in c]
    assert len(warning) == 1 and f" {count:,.0f} events" in warning[0]
