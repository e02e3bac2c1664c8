"""The online loop end to end over HTTP against `pex serve` (gunicorn, two workers): rounds served under one name,
simulated users playing against it, completion and promotion from other processes, and a SIGKILL mid-round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pex.cli.main import main
from pex.online.traffic import Client, TrafficError, population
from pex.store.workspace import Workspace
from tests.gunicorn import PEX, call, free_port, serve, wait_ready


def _pex(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*PEX, *argv], capture_output=True, text=True, timeout=timeout)


def _wait_serving(port: int, admin: str, version: int, timeout: float = 30) -> None:
    """Until both workers serve ``exp-online`` at ``version`` (they poll the store every 0.5 s here); ``admin``: an
    admin token (readiness lists the live versions only to one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # readiness is per worker and a request reaches either: enough answers in a row that both have answered
        seen = {call(port, "GET", "/readyz", token=admin)[1]["policies"].get("exp-online") for _ in range(30)}
        if seen == {version}:
            # the OS may hand every one of those requests to the same worker: give the other its refresh (0.5 s
            # here) and the load of a value policy's model before traffic that must all reach the new version
            time.sleep(3.0)
            return
        time.sleep(0.3)
    raise AssertionError(f"exp-online v{version} is not served after {timeout}s")


def _traffic(home: Path, port: int, token: str, units: int, seed: int, days: int = 2) -> dict:
    done = _pex("--home", str(home), "simulate-traffic", "exp", "--url", f"http://127.0.0.1:{port}", "--token", token,
                "--units", str(units), "--days", str(days), "--seed", str(seed), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow  # about 1 min (Ax's batch proposal); make test stays within its 8 minutes, CI runs it in make test-slow
def test_two_rounds_over_gunicorn_from_start_to_promotion(tmp_path, served):
    from bench.online import TruthOracle, chosen_policy
    from pex.experiment.simulate import simulate
    from pex.services.policies import load_fit

    home, port = served.home, free_port()
    with Workspace(home) as ws:
        ctx = load_fit(ws, "exp")
        truth = TruthOracle(simulate(20_000, seed=2_026_000_778), ctx.model, ctx.record.id)
    # two arms a round: Ax's batch proposal for round 2 is most of this test's time and grows with the batch
    started = _pex("--home", str(home), "online", "start", "exp", "--arms", "2", "--from-offline", "--json")
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    evidence = [a["offline"] for a in status["rounds"][0]["arms"][1:] if a["offline"]]  # the rest: Ax's quasi-random points
    assert evidence and all(e["source"] == "offline" and e["in_sample"] for e in evidence)  # labelled as offline evidence
    with serve(home, port, tmp_path) as server:
        wait_ready(port, server)
        for number in (1, 2):
            version = status["rounds"][-1]["policy_version"]
            _wait_serving(port, served.admin, version)
            sent = _traffic(home, port, served.decide, 6_000, seed=number)
            assert sent["versions"] == {f"exp-online v{version}": 6_000}  # callers changed nothing between rounds
            assert 0 < sent["units_without_outcomes"] < 6_000 * 0.2  # some outcomes never arrive
            completed = _pex("--home", str(home), "online", "complete", "exp", *(["--next"] if number == 1 else []), "--json")
            assert completed.returncode == 0, completed.stderr
            status = json.loads(completed.stdout)
            measured = status["rounds"][number - 1]["results"]
            assert measured["rows"] == 6_000
            for arm in status["rounds"][number - 1]["arms"]:
                got = measured["arms"][arm["route"]]
                assert got["units"] > 500 and got["measured"], arm["route"]
                lift = got["metrics"]["sessions"]["lift"]
                assert np.isfinite(lift["se"]) and lift["ci_low"] < lift["estimate"] < lift["ci_high"]
                assert got["harms"]["unsubscribes"]["verdict"] in ("pass", "fail", "inconclusive")
            with Workspace(home) as ws:
                picked = truth.of(chosen_policy(ws, status))
            print(f"round {number}: {status['best']['why']}; true gain of the pick {picked['gain']:+.4f}, "
                  f"keeps the guardrails: {picked['keeps']}")
        assert [r["status"] for r in status["rounds"]] == ["complete", "complete"]
        assert len(status["rounds"][1]["arms"]) == 3  # round 2: Ax's proposals (and the champion, if round 1 had a pick)
        promoted = _pex("--home", str(home), "online", "promote", "exp", "--json")
        assert promoted.returncode == 0, promoted.stderr
        release = json.loads(promoted.stdout)
        _wait_serving(port, served.admin, release["version"])
        for i in range(20):  # whichever worker answers, it serves the promoted version
            code, answer = call(port, "POST", "/api/v1/policies/exp-online/decide",
                                {"unit": f"someone-{i}", "features": {"age": 30}}, token=served.decide)
            assert code == 200 and answer["version"] == release["version"], answer
    with Workspace(home) as ws:
        loop = ws.get_loop("exp")
        trials = loop.ax_state["experiment"]["trials"]  # Ax's own JSON, as stored after the last tell
        assert len(trials) == 4


@pytest.mark.slow  # 25 s; make test stays within its 8 minutes, CI runs it with make test-slow
def test_sigkill_mid_round_loses_nothing_but_the_last_second_and_the_round_completes(tmp_path, served):
    home, port = served.home, free_port()
    assert main(["--home", str(home), "online", "start", "exp", "--arms", "2"]) == 0
    sim = population("exp", 100_000, "notification_cadence", seed=3)
    features = [c for c in sim.data.columns if c not in ("user_id", "arm", *sim.metrics)]
    sent = sim.data[features].astype(object).where(sim.data[features].notna(), None).to_dict("records")
    ids = sim.data["user_id"].tolist()
    acknowledged: list[tuple[str, float]] = []
    posted: list[str] = []

    def play(client: Client, start: int, end: int) -> int:
        """Decide users 100 at a time and post their outcomes, until ``end`` or the server is gone; returns where it stopped."""
        i = start
        while i < end:
            rows = range(i, min(i + 100, end))
            try:
                got = client.post("/api/v1/policies/exp-online/decide-batch",
                                  {"units": [{"unit": ids[j], "features": sent[j]} for j in rows]})
                now = time.time()
                acknowledged.extend((d["decision_id"], now) for d in got["decisions"])
                client.post("/api/v1/outcomes", {"experiment": "exp", "records": [
                    {"unit": ids[j], "metric": m, "value": float(sim.truth.outcomes[m][d["arm"]][j])}
                    for j, d in zip(rows, got["decisions"]) for m in sim.metrics]})
                posted.extend(ids[j] for j in rows)
            except TrafficError:
                return i
            i = rows[-1] + 1
        return i

    reached = [0]
    with serve(home, port, tmp_path) as server:
        wait_ready(port, server)
        client = Client(f"http://127.0.0.1:{port}", served.decide, timeout=10)
        worker = threading.Thread(target=lambda: reached.__setitem__(0, play(client, 0, len(ids))))
        worker.start()
        time.sleep(4.0)
        killed_at = time.time()
        os.killpg(server.proc.pid, signal.SIGKILL)  # the master and both workers, mid-round, nothing flushed
        worker.join(timeout=60)
        assert not worker.is_alive() and reached[0] < len(ids)
    with Workspace(home) as ws:
        logged = set(ws.read_decisions(policy="exp-online")["decision_id"])
        outcomes = set(ws.read_outcomes("exp")["unit"])
    lost = [t for d, t in acknowledged if d not in logged]
    assert len(acknowledged) > 1_000 and logged <= {d for d, _t in acknowledged}
    assert all(t > killed_at - 1.0 for t in lost), \
        f"{sum(t <= killed_at - 1.0 for t in lost)} decisions answered more than a second before the kill were lost"
    assert set(posted) <= outcomes  # an outcome is committed before it is acknowledged
    print(f"SIGKILL after {len(acknowledged):,} answered decisions: {len(lost):,} lost, all from the last second")
    with serve(home, port, tmp_path) as server:  # restarted: the same round goes on
        wait_ready(port, server)
        start = reached[0] + 100
        assert play(Client(f"http://127.0.0.1:{port}", served.decide), start, start + 3_000) == start + 3_000
        assert server.signal_and_wait(signal.SIGTERM, 30) == 0  # a graceful stop writes every buffered decision
    completed = _pex("--home", str(home), "online", "complete", "exp", "--json")
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)["rounds"][0]["results"]
    assert results["rows"] == len(logged) + 3_000
    assert all(a["measured"] for a in results["arms"].values())


@pytest.mark.slow
def test_five_rounds_of_four_arms_come_near_the_best_achievable_within_the_guardrails(tmp_path):
    """segment_harm: 20,000 offline units fitted, then 5 rounds of 4 arms with 80,000 simulated users each over
    gunicorn; the pick after every round measured on 100,000 fresh users whose true outcomes are known."""
    from bench.online import NAME, TRUTH_SEED, TruthOracle, best_achievable, chosen_policy
    from pex.experiment.simulate import simulate
    from pex.services import online
    from pex.services.policies import load_fit

    home, port = tmp_path / "ws", free_port()
    simulate(20_000, scenario="segment_harm", seed=1).write(tmp_path / "data", name=NAME)
    for argv in (["ingest", str(tmp_path / "data" / f"{NAME}.toml")], ["fit", NAME, "--seed", "1"]):
        assert main(["--home", str(home), *argv]) == 0
    with Workspace(home) as ws:
        token = ws.create_token("decide", "traffic")[1]
        admin = ws.create_token("admin", "readiness")[1]
        ctx = load_fit(ws, NAME)
        truth = TruthOracle(simulate(100_000, scenario="segment_harm", seed=TRUTH_SEED + 1), ctx.model, ctx.record.id)
        first, _evidence = online.offline_candidates(ctx, online.LoopOptions(arms=4, seed=1), lambda m: None)[0]
        offline = truth.of(online.candidate_policy(ctx, first, "offline-pick", 0.05, {})[0])
    started = _pex("--home", str(home), "online", "start", NAME, "--arms", "4", "--from-offline", "--seed", "1", "--json")
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    scores = []
    with serve(home, port, tmp_path) as server:
        wait_ready(port, server)
        for number in range(1, 6):
            _wait_serving(port, admin, status["rounds"][-1]["policy_version"])
            done = _pex("--home", str(home), "simulate-traffic", NAME, "--url", f"http://127.0.0.1:{port}", "--token", token,
                        "--units", "80000", "--days", "3", "--scenario", "segment_harm", "--seed", str(100 + number), "--json")
            assert done.returncode == 0, done.stderr
            completed = _pex("--home", str(home), "online", "complete", NAME, *(["--next"] if number < 5 else []), "--json")
            assert completed.returncode == 0, completed.stderr
            status = json.loads(completed.stdout)
            with Workspace(home) as ws:
                t = truth.of(chosen_policy(ws, status))
            scores.append(t)
            print(f"round {number}: {status['best']['why']}; true gain {t['gain']:+.4f}, keeps the guardrails: {t['keeps']}")
    with Workspace(home) as ws:
        points = [a["point"] for r in status["rounds"] for a in r["arms"] if a["role"] != "holdout"]
        best = best_achievable(ws, points, truth, reference=64, seed=1)
    shares = ", ".join(f"{s['score'] / best['gain']:.2f}" for s in scores)
    print(f"best achievable {best['gain']:+.4f}; offline pick {offline['score']:+.4f}; picks per round {shares} of it")
    assert all(s["keeps"] for s in scores)
    # a champion is kept unless a challenger is significantly better, and each round certifies at its share of the
    # loop's 5% budget (pex.online.choice, pex.online.spending): the loop holds a good pick rather than chasing a lead
    # within the noise. On seed 1 round 1's pick (0.89 of the best; the offline pick, 0.91, missed certification at
    # the round's level) held through round 5 against a challenger +0.043 better at z = 1.52. Before the rule it was
    # the largest lower bound each round: 0.9 of the best and at least the offline pick were asserted here.
    assert scores[-1]["score"] >= 0.85 * best["gain"]
    assert scores[-1]["score"] >= 0.95 * offline["score"]
