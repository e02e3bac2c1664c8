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


def test_each_demo_creates_its_own_owner_token_and_says_how_many_earlier_ones_still_work(tmp_path):
    from pex.services.demo import DEMO_OWNER, owner_token

    with Workspace(tmp_path / "ws") as ws:
        first = owner_token(ws)
        assert first.earlier == 0 and "shown only now" in first.note() and first.name == DEMO_OWNER
        assert ws.verify_token(first.secret).scope == "admin"
        second = owner_token(ws)
        assert second.secret != first.secret and second.earlier == 1
        assert "new admin token" in second.note() and "the 1 of earlier demos still work" in second.note()
        ws.revoke_token(first.id)
        assert owner_token(ws).earlier == 1  # a revoked one is not counted


def test_the_traffic_token_is_a_decide_token_and_counts_the_demos_before_it(tmp_path):
    from pex.services.demo import traffic_token

    with Workspace(tmp_path / "ws") as ws:
        ident, secret, before = traffic_token(ws)
        assert before == 0 and ws.verify_token(secret).scope == "decide"
        ws.revoke_token(ident)
        assert traffic_token(ws)[2] == 1  # the next demo's users are new ones (seeded by the count)


def test_traffic_needs_a_published_policy(tmp_path):
    from pex.errors import PexError
    from pex.services.demo import DemoRelease, send_traffic

    spec = load_spec(EXPERIMENTS / "checkout_offer.toml", require_data=False)
    nothing = DemoRelease(policy="checkout_offer-all-control", version=None, release=None, reason="kept control")
    with pytest.raises(PexError, match="only to a published policy"):
        send_traffic("http://127.0.0.1:9", "token", spec, nothing, 10, 0)
