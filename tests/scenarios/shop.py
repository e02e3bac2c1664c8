"""Helpers of the scenario tests (fixtures in conftest.py): the canary scenario's constants, its truth, a served
workspace and simulated users sent to it over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pex.experiment.simulate import simulate
from pex.experiment.truth import distribution_truth
from pex.online.traffic import Client, TrafficResult, play, population
from pex.store.workspace import Workspace
from tests.gunicorn import call, free_port, serve, wait_ready

NAME = "shop"
UNITS = 4_000  # the experiment the pipeline runs on: enough to certify all-lite in seconds
GOOD = "shop-all-lite"  # what the run recommends (and certifies)
TRUTH_UNITS = 200_000  # a fresh draw on which a version's true harm is computed


@dataclass
class Shop:
    """A private copy of :func:`canary_template` with a decide and an admin token."""

    home: Path
    decide: str
    admin: str


def true_harm(arm: str, exploration: float = 0.0) -> float:
    """The population's true relative latency harm of serving ``arm`` to everyone (with ``exploration`` spread
    uniformly over the arms), from the simulator's truth on a fresh draw."""
    sim = simulate(TRUTH_UNITS, scenario="canary", seed=2_026, n_noise=0)
    probs = np.full((TRUTH_UNITS, len(sim.arms)), exploration / len(sim.arms))
    probs[:, sim.arms.index(arm)] += 1.0 - exploration
    return distribution_truth(probs, sim)["harm"]["latency"]


@contextmanager
def served(shop: Shop, tmp_path: Path) -> Iterator[int]:
    """`pex serve` (gunicorn, two workers, the store re-read every 0.5 s) on ``shop``'s workspace; yields its port."""
    port = free_port()
    with serve(shop.home, port, tmp_path) as server:
        wait_ready(port, server)
        yield port


def wait_serving(port: int, shop: Shop, policy: str, version: int, timeout: float = 30) -> None:
    """Until both workers serve ``policy`` at ``version`` (readiness lists live versions to an admin token)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # a request reaches either worker: many answers in a row that all agree mean both have refreshed
        seen = {call(port, "GET", "/readyz", token=shop.admin)[1]["policies"].get(policy) for _ in range(30)}
        if seen == {version}:
            return
        time.sleep(0.3)
    raise AssertionError(f"{policy} v{version} is not served after {timeout}s")


def send(port: int, shop: Shop, policy: str, units: int, seed: int) -> TrafficResult:
    """``units`` fresh simulated users of the canary scenario ask ``policy`` for decisions, and their true outcomes
    under the decided arm are posted (10% never report); returns once every decision is in the store's log."""
    client = Client(f"http://127.0.0.1:{port}", shop.decide)
    with Workspace(shop.home) as ws:
        before = ws.count_decisions(policy)
    sent = play(client, NAME, policy, population(NAME, units, "canary", seed), unit_column="user_id", seed=seed)
    wait_logged(shop, policy, before + sent.decisions)
    return sent


def wait_logged(shop: Shop, policy: str, total: int, timeout: float = 30) -> None:
    """Wait until ``policy`` has ``total`` decisions in the store's log: the workers flush theirs every half second,
    and the test's server is killed on leaving :func:`served`, so anything still buffered then would be lost."""
    deadline = time.monotonic() + timeout
    while True:
        with Workspace(shop.home) as ws:
            logged = ws.count_decisions(policy)
        if logged >= total or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert logged == total, f"{total - logged} decisions of {policy} answered but not logged"
