"""Scenario (a): a harmful new version goes out as a 5% canary over real gunicorn and is rolled back automatically
before it reaches 25%, with the figures in the release row; the base version is live again and serves every
decision after that.

Why the version is harmful (the simulator's truth, :func:`tests.scenarios.shop.true_harm`): it serves ``heavy`` to
everyone, which slows pages by 15% against a latency guardrail that tolerates at most 5%.
"""

from __future__ import annotations

import json

import pytest

from pex.policy.constant import constant_policy
from pex.services.rollout import check
from pex.store.releases import FORCED_PREFIX
from pex.store.workspace import Workspace
from tests.scenarios.shop import GOOD, NAME, send, served, true_harm, wait_serving

BATCH = 2_000  # users per batch: about 100 reach the 5% canary and 100 the holdout
MAX_BATCHES = 6
REASON = "owner wants the heavy widget measured live"


@pytest.mark.slow  # gunicorn and a few batches of simulated users over HTTP
def test_a_harmful_canary_is_rolled_back_before_25_percent_and_the_base_serves_again(shop, tmp_path, run):
    with Workspace(shop.home) as ws:
        base = ws.get_policy(GOOD)
        harmful = constant_policy(list(base.document["arms"]), "heavy", base.document.get("exploration", 0.0),
                                  name=GOOD).replace(experiment=NAME)
        new_version = ws.put_policies(NAME, [(harmful.to_document(), None)])[0].version
    harm, limit = true_harm("heavy", harmful.exploration), 0.05
    assert harm > 2 * limit  # truly harmful: about +15% latency against a 5% limit

    assert run("publish", GOOD, "--version", "1").code == 0  # the certified base goes live through the gate
    refused = run("publish", GOOD, "--version", new_version, "--canary", "5", "--ramp", "5,25,50,100", "--holdout", "5")
    assert refused.code == 2 and "not certified" in refused.err  # the gate stands in front of a canary too
    started = run("publish", GOOD, "--version", new_version, "--canary", "5", "--ramp", "5,25,50,100", "--holdout", "5",
                  "--force", "--reason", REASON, "--json")
    assert started.code == 0, started
    rollout = json.loads(started.out)
    assert rollout["steps"] == [0.05, 0.25, 0.5, 1.0] and rollout["base_version"] == 1

    with served(shop, tmp_path) as port:
        wait_serving(port, shop, GOOD, rollout["versions"][0])
        checks = []
        for batch in range(MAX_BATCHES):
            sent = send(port, shop, GOOD, BATCH, seed=100 + batch)
            assert sent.decisions == BATCH
            with Workspace(shop.home) as ws:
                checks.append(check(ws, GOOD))
            if checks[-1]["status"] != "running":
                break
        assert checks[-1]["status"] == "rolled_back", checks[-1]["last_check"]
        assert all(c["step"] == 0 for c in checks)  # never advanced: rolled back at the 5% canary
        wait_serving(port, shop, GOOD, 1)
        after = send(port, shop, GOOD, 500, seed=999)
    assert after.versions == {f"{GOOD} v1": 500}  # the base serves every decision after the rollback

    with Workspace(shop.home) as ws:
        releases = ws.releases(GOOD)
    assert [r.action for r in releases] == ["publish", "canary", "auto-rollback"]
    canary, rollback = releases[1], releases[2]
    assert canary.forced and canary.note == FORCED_PREFIX + REASON
    assert (rollback.from_version, rollback.to_version, rollback.actor) == (rollout["versions"][0], 1, "watcher")
    figures = rollback.details
    assert figures["action"]["code"] == "guardrail_beyond_limit" and figures["share"] == 0.05
    bound = figures["sequential"]["latency"]
    assert bound["verdict"] == "fail" and bound["lower"] > bound["limit"] == limit  # significantly beyond max_harm
    assert abs(bound["estimate"] - harm) < 4 * bound["se"]  # the live estimate agrees with the truth
    assert "latency" in rollback.note
    print(f"rolled back after {len(checks)} batch(es) of {BATCH:,} users: canary {figures['units']} units, "
          f"latency harm {bound['estimate']:+.3f} (truth {harm:+.3f}), always-valid lower bound {bound['lower']:+.3f} "
          f"> limit {limit}")
