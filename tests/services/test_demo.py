"""The demo's service: which scenario simulates a spec's data, and what it publishes after the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pex.experiment.spec import load_spec
from pex.report.summary import Certification, RecommendationView
from pex.services.demo import demo_scenario, publish_recommendation
from pex.store.workspace import Workspace

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.mark.parametrize(("spec", "scenario"), [("checkout_offer.toml", "segment_harm"),
                                                 ("notification_cadence.toml", "notification_cadence")])
def test_each_shipped_spec_is_simulated_from_the_scenario_with_its_design(spec, scenario):
    assert demo_scenario(load_spec(EXPERIMENTS / spec, require_data=False)) == scenario


@pytest.mark.parametrize(("old", "new"), [('control = "control"', 'control = "treat"'),
                                          ("[metrics.complaints]", "[metrics.refunds]"),
                                          ('unit = "user_id"', 'unit = "customer"')])
def test_a_spec_no_scenario_fits_has_none(tmp_path, old, new):
    spec = tmp_path / "offer.toml"
    spec.write_text((EXPERIMENTS / "checkout_offer.toml").read_text().replace(old, new))
    assert demo_scenario(load_spec(spec, require_data=False)) is None


def test_keeping_control_publishes_nothing(tmp_path):
    # only the fields the decision reads (a whole recommendation is a pipeline run's work: tests/test_cli.py runs one)
    rec = RecommendationView.model_construct(policy="exp-all-control", kind="constant", verdict="keep_control",
                                             certification=Certification.model_construct(certified=[], order=["exp-value"]))
    with Workspace(tmp_path / "ws") as ws:
        done = publish_recommendation(ws, rec, {})
        assert not done.published and done.release is None and "keep control" in done.reason
        assert ws.releases(None) == []
