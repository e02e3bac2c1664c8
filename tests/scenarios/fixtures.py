"""Issue 26's scenarios end to end: the ``canary`` scenario's experiment through the pipeline, `pex serve` over real
gunicorn, simulated users sent over HTTP (:mod:`pex.online.traffic`), the watcher's checks after every batch.

The experiment (:func:`pex.experiment.simulate.simulate`, scenario ``canary``): arms control, lite and heavy;
``lite`` lifts orders and makes pages 1% faster, ``heavy`` lifts orders less and slows pages by 15%, against a
``latency`` guardrail with ``max_harm`` 5%. Its pipeline run recommends and certifies ``shop-all-lite``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pex.experiment.simulate import simulate
from pex.store.workspace import Workspace
from tests.scenarios.shop import NAME, UNITS, Shop


@pytest.fixture(scope="session")
def canary_template(tmp_path_factory) -> Path:
    """A workspace with the ``canary`` experiment run through the pipeline (never modify it; :func:`shop` copies it)."""
    from pex.services.run import run

    base = tmp_path_factory.mktemp("canary")
    simulate(UNITS, scenario="canary", seed=7).write(base / "exp", name=NAME)
    run(base / "exp" / f"{NAME}.toml", base / "out", home=base / "ws", learner="t", dense=64, seed=3)
    return base / "ws"


@pytest.fixture
def shop(tmp_path, canary_template) -> Shop:
    """A private copy of :func:`canary_template` with a decide and an admin token (at the `run` fixture's home)."""
    shutil.copytree(canary_template, tmp_path / "ws")
    with Workspace(tmp_path / "ws") as ws:
        return Shop(tmp_path / "ws", ws.create_token("decide", "traffic")[1], ws.create_token("admin", "readiness")[1])
