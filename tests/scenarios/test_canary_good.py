"""Scenario (b): a good version goes out as a 5% canary over real gunicorn and the watcher's checks after each batch
of users ramp it through 25% and 50% to 100% (``complete``), each step a release row with its figures.

Why the version is good (the simulator's truth, :func:`tests.scenarios.shop.true_harm`): it is the run's certified
recommendation, all-``lite``, which lifts orders and makes pages 1% faster: its latency harm is below zero, far
within the 5% limit.
"""

from __future__ import annotations

import json

import pytest

from pex.services.rollout import MIN_OUTCOMES, check
from pex.store.workspace import Workspace
from tests.scenarios.shop import GOOD, send, served, true_harm, wait_serving

FIRST = 12_000  # users of the first batch: about 540 canary outcomes at 5%, the 500 a step needs
BATCH = 3_000  # users of each later batch: at 25%, about 670 new canary outcomes (each step needs 500 of its own)
MAX_BATCHES = 10


@pytest.mark.slow  # about 60-90 s on a busy two-core machine: gunicorn and about 17,000 simulated users over HTTP
def test_a_good_canary_ramps_step_by_step_to_complete(shop, tmp_path, run):
    harm, limit = true_harm("lite"), 0.05
    assert harm < 0 < limit  # truly harmless: lite makes pages faster

    started = run("publish", GOOD, "--canary", "5", "--ramp", "5,25,50,100", "--holdout", "5", "--json")
    assert started.code == 0, started  # certified by its run: no --force
    rollout = json.loads(started.out)
    new_version, base_version = rollout["new_version"], rollout["base_version"]
    assert new_version == 1 and base_version != new_version  # nothing was live: an all-control base went out first

    steps_seen = []
    with served(shop, tmp_path) as port:
        for batch in range(MAX_BATCHES):
            wait_serving(port, shop, GOOD, rollout["live_version"])
            send(port, shop, GOOD, FIRST if batch == 0 else BATCH, seed=200 + batch)
            with Workspace(shop.home) as ws:
                rollout = check(ws, GOOD)
            steps_seen.append(rollout["step"])
            if rollout["status"] != "running":
                break
        assert rollout["status"] == "complete", rollout["last_check"]
        wait_serving(port, shop, GOOD, new_version)
        after = send(port, shop, GOOD, 500, seed=999)
    assert after.versions == {f"{GOOD} v{new_version}": 500}  # the new version alone: holdout and base gone

    with Workspace(shop.home) as ws:
        releases = ws.releases(GOOD)
    assert [r.action for r in releases] == ["publish", "canary", "ramp", "ramp", "ramp", "complete"]
    assert not any(r.forced for r in releases)
    steps = releases[2:]  # each automatic step: the share it left, the reason and the figures
    assert [r.details["share"] for r in steps] == [0.05, 0.25, 0.5, 1.0]
    assert [r.details["action"]["action"] for r in steps] == ["advance"] * 3 + ["complete"]
    for r in steps:
        bound = r.details["sequential"]["latency"]
        assert r.actor == "watcher" and r.note
        assert bound["verdict"] == "pass" and bound["upper"] <= bound["limit"] == limit
        assert r.details["step_outcomes"] >= MIN_OUTCOMES  # each step advanced on units of its own share
        assert r.details["outcomes"] >= r.details["step_outcomes"]  # the bound itself is on every canary unit so far
        assert abs(bound["estimate"] - harm) < 4 * bound["se"]  # the live estimate agrees with the truth
        assert r.details["lifts"]["orders"]["ci_high"] > 0  # lite lifts orders: never significantly below the holdout
    assert steps_seen == sorted(steps_seen)  # the ramp only goes up
    first = steps[0].details
    print(f"complete after {len(steps_seen)} batches ({FIRST:,} users, then {BATCH:,} each) (steps {steps_seen}); first advance on "
          f"{first['outcomes']} canary outcomes, latency harm {first['sequential']['latency']['estimate']:+.3f} "
          f"(truth {harm:+.3f}), always-valid upper bound {first['sequential']['latency']['upper']:+.3f}")
