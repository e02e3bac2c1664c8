"""Scenario (c): in the traffic one live policy serves, a feature shifts and another goes missing; `pex monitor` then
`pex check` fire exactly the drift rule for those two features, and no other rule, while a second live policy of
the same experiment, served users of the same kind undrifted, fires nothing.

Users are sent over HTTP with `pex simulate-traffic` (real gunicorn); monitor and check run in-process. Both
policies are value policies: the decision log keeps the features a policy reads, so drift is monitored on those
(a value policy reads every feature; a constant one none).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.gunicorn import PEX
from tests.scenarios.shop import NAME, served, wait_logged

CLEAN, DRIFTED = "shop-pareto-1", "shop-value"  # two value policies the run certified, from the same fit
SHIFTED, SHIFT = "age", 15  # years: about 1.2 standard deviations of the simulated ages
BLANKED, BLANK_SHARE = "tenure_days", 0.4  # never missing in training
USERS = 1_500  # above the 200 decisions drift needs before it judges anything


def _traffic(home, port, token, policy, seed, *drift: str) -> dict:
    done = subprocess.run([*PEX, "--home", str(home), "simulate-traffic", NAME, "--url", f"http://127.0.0.1:{port}",
                           "--token", token, "--policy", policy, "--scenario", "canary", "--units", str(USERS),
                           "--seed", str(seed), *drift, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow  # about 30 s on a busy two-core machine: the pipeline run, gunicorn, two traffic processes
def test_a_shifted_and_a_missing_feature_fire_exactly_their_two_drift_alerts(shop, tmp_path, run):
    for policy in (CLEAN, DRIFTED):
        assert run("publish", policy).code == 0  # both certified by the run: the gate lets them through
    with served(shop, tmp_path) as port:
        clean = _traffic(shop.home, port, shop.decide, CLEAN, 1)
        shifted = _traffic(shop.home, port, shop.decide, DRIFTED, 2, "--shift", f"{SHIFTED}={SHIFT}",
                           "--feature-missing", f"{BLANKED}={BLANK_SHARE}")
        for policy in (CLEAN, DRIFTED):
            wait_logged(shop, policy, USERS)
    assert clean["decisions"] == shifted["decisions"] == USERS
    assert clean["outcomes_posted"] > 0 and shifted["outcomes_posted"] > 0  # no outcome lag to alert on

    reports = {}
    for policy in (CLEAN, DRIFTED):
        done = run("monitor", policy, "--json")
        assert done.code == 0, done
        reports[policy] = json.loads(done.out)
    drift = reports[DRIFTED]["drift"]
    assert reports[DRIFTED]["decisions"] == USERS and drift["drifted"] == sorted([SHIFTED, BLANKED])
    features = {f["feature"]: f for f in drift["features"]}
    assert "psi" in features[SHIFTED]["flags"] and features[SHIFTED]["psi"] > drift["thresholds"]["psi"]
    assert "missing" in features[BLANKED]["flags"]
    assert abs(features[BLANKED]["missing_rate"] - BLANK_SHARE) < 0.05 and features[BLANKED]["training_missing_rate"] == 0
    assert reports[CLEAN]["drift"]["drifted"] == [] and len(reports[CLEAN]["drift"]["features"]) == len(features)
    assert not reports[CLEAN]["staleness"]["stale"] and not reports[DRIFTED]["staleness"]["stale"]

    checked = run("check", NAME, "--json")
    assert checked.code == 1, checked  # an alert fires: cron or CI can act on the exit code
    fired = json.loads(checked.out)["alerts"]
    assert [(a["rule"], a["policy"], a["figures"]["feature"]) for a in fired] == [
        ("drift", DRIFTED, feature) for feature in sorted([SHIFTED, BLANKED])], fired
    lines = run("check", NAME)
    assert lines.code == 1
    alert_lines = [line for line in lines.out.splitlines() if line.startswith("drift ")]
    assert len(alert_lines) == 2 and all(f" {NAME} {DRIFTED}: " in line for line in alert_lines), lines.out
    assert any(SHIFTED in line and "PSI" in line for line in alert_lines)
    assert any(BLANKED in line and "missing" in line for line in alert_lines)
