"""A policy's ``fallback_arm`` (issue 26, item 8): kept in its document, and served with propensity 1 when the live
version cannot be loaded, every such decision logged with ``fallback`` true; ``/readyz`` still reports the failure."""

from __future__ import annotations

import shutil

import pytest

from pex.errors import NotFoundError
from pex.policy.base import Policy, PolicyError, fallback_of
from pex.services.decision_log import DecisionLog
from pex.services.feedback import feedback_table
from pex.services.serving import PolicyServer
from pex.store.schema import policies
from pex.store.workspace import Workspace

DOC = {"format": "pex.policy/1", "name": "p", "kind": "constant", "arms": ["control", "daily"], "default_arm": "daily"}


def test_the_fallback_arm_is_kept_in_the_document_and_defaults_to_the_default_arm():
    plain = Policy.from_document(DOC)
    assert plain.fallback == "daily" and "fallback_arm" not in plain.to_document()  # old documents read as before
    chosen = Policy.from_document({**DOC, "fallback_arm": "control"})
    assert chosen.fallback == "control" and chosen.to_document()["fallback_arm"] == "control"
    assert Policy.from_document(chosen.to_document()) == chosen
    assert fallback_of({**DOC, "fallback_arm": "control"}) == (["control", "daily"], "control")
    for bad in ("weekly", 3, ""):
        with pytest.raises(PolicyError, match=r"fallback_arm .* is not among the arms"):
            Policy.from_document({**DOC, "fallback_arm": bad})
        with pytest.raises(PolicyError, match="fallback_arm"):
            fallback_of({**DOC, "fallback_arm": bad})


def test_a_live_version_whose_model_files_are_gone_answers_its_fallback_arm_logged_as_such(served):
    with Workspace(served.home) as ws:
        record = ws.get_policy(served.value)
        fit, _ = ws.find_fit(record.document["value_model"]["fit"])
        shutil.rmtree(ws.artifacts / fit.artifact)  # the effect model cannot be loaded any more
        server = PolicyServer(ws, DecisionLog(ws.append_decisions, flush_seconds=0.1))
        server.refresh()
        ready = server.readiness()
        assert not ready["ok"] and served.value in ready["failed"] and served.value not in server.live()
        one = server.decide(served.value, {"unit": "u1", "features": {"age": 30}})
        assert (one["arm"], one["propensity"], one["fallback"], one["version"]) == (
            record.document["default_arm"], 1.0, True, record.version)
        batch = server.decide_batch(served.value, {"units": [{"unit": f"b{i}"} for i in range(5)]})["decisions"]
        assert [(d["unit"], d["arm"], d["fallback"]) for d in batch] == [
            (f"b{i}", record.document["default_arm"], True) for i in range(5)]
        normal = server.decide(served.tree, {"unit": "u1", "features": {}})
        assert "fallback" not in normal
        server.close()
        log = ws.read_decisions(policy=served.value)
        assert len(log) == 6 and log["fallback"].all() and (log["propensity"] == 1.0).all()
        assert not ws.read_decisions(policy=served.tree)["fallback"].any()
        # no policy drew the fallback decisions: logged feedback (evaluation, rollouts, retraining) leaves them out
        table = feedback_table(ws, record.experiment)
        assert table.fallbacks == 6 and table.summary()["fallbacks_left_out"] == 6
        assert not (table.frame["policy"] == served.value).any() and (table.frame["policy"] == served.tree).any()
        with pytest.raises(NotFoundError, match="no decisions"):
            feedback_table(ws, record.experiment, policy=served.value)


def test_without_a_readable_document_the_policy_is_not_served(served):
    with Workspace(served.home) as ws:
        record = ws.get_policy(served.value)
        broken = {**record.document, "default_arm": "ghost"}  # neither the policy nor its fallback can be read
        with ws.engine.begin() as conn:
            conn.execute(policies.update().where((policies.c.name == record.name)
                                                 & (policies.c.version == record.version)).values(document=broken))
        server = PolicyServer(ws, DecisionLog(ws.append_decisions, flush_seconds=0.1))
        server.refresh()
        assert served.value in server.readiness()["failed"]
        with pytest.raises(NotFoundError, match="is not live on this server"):
            server.decide(served.value, {"unit": "u1"})
        with pytest.raises(NotFoundError, match="is not live on this server"):
            server.decide_batch(served.value, {"units": [{"unit": "u1"}]})
        server.close()
