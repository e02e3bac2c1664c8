"""Shared fixtures: a simulated experiment with known truth, written as spec + data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pex.cli.main import main
from pex.experiment.simulate import SimulatedExperiment, simulate
from tests.shared import N_UNITS, CliResult, Served

# `make test` runs the suite on two xdist workers with `--dist loadgroup`. A session fixture is built once per worker,
# so the modules using pipeline_run (a whole 20k-unit pipeline run) all go to one worker: building it on both would
# cost more than the split saves. The cheap session fixtures (small_run, ingested_template, sim) are built on each.
# The group is named by module, not by an xdist_group mark: xdist 3.8 cannot set the grouped node ids on pytest 9.2
# (marked tests are spread like any other), and the scheduler, in the controlling process, sees node ids only.
PIPELINE_MODULES = (
    "tests/report/test_report.py",
    "tests/report/test_report_browser.py",
    "tests/search/test_tuning.py",
    "tests/services/test_crossfit.py",
    "tests/services/test_pipeline.py",
)
# Modules whose module-scoped fixtures are whole pipeline runs or fits (10-35 s each): each is kept on one worker, so
# its fixtures are built once rather than on both (every other module's tests are spread one by one).
WHOLE_MODULES = (
    "tests/services/test_history.py",
    "tests/services/test_guardrail_limits.py",
    "tests/policy/test_value_policy.py",
    "tests/cli/test_cli_policies.py",
    "tests/hte/test_hte.py",
    "tests/services/test_jobs.py",
    "tests/web/ui/test_browser.py",  # one pex ui and one browser, its tests in order (an owner's path)
)

# fixtures of the issue-26 scenarios, as a plugin: a second conftest.py would shadow this one's module name
# "conftest", which test modules import from
pytest_plugins = ["tests.scenarios.fixtures"]


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """loadgroup's scheduler with the modules of :data:`PIPELINE_MODULES` as one group, each of :data:`WHOLE_MODULES` as
    a group of its own, and every other test alone."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class PipelineGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module in PIPELINE_MODULES:
                return "pipeline"
            return module if module in WHOLE_MODULES else super()._split_scope(nodeid)

    return PipelineGroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A test needing pipeline_run outside :data:`PIPELINE_MODULES` would build it on a second worker: refuse."""
    root = Path(str(config.rootpath))
    for item in items:
        module = Path(str(item.path)).relative_to(root).as_posix()
        if "pipeline_run" in getattr(item, "fixturenames", ()) and module not in PIPELINE_MODULES:
            raise pytest.UsageError(f"{item.nodeid} uses pipeline_run: add {module} to PIPELINE_MODULES in tests/conftest.py")


@pytest.fixture(scope="session")
def sim() -> SimulatedExperiment:
    """The demo-like scenario with heterogeneous effects (20k units, seed 11)."""
    return simulate(N_UNITS, scenario="notification_cadence", seed=11)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory, sim) -> Path:
    """A directory holding ``exp.toml`` + ``exp.csv`` for :func:`sim` (never modify it)."""
    d = tmp_path_factory.mktemp("sim")
    sim.write(d, name="exp")
    return d


@pytest.fixture
def exp_dir(tmp_path, sim_dir) -> Path:
    """A private, modifiable copy of :func:`sim_dir`."""
    d = tmp_path / "exp"
    shutil.copytree(sim_dir, d)
    return d


@pytest.fixture
def home(tmp_path) -> Path:
    """An empty workspace directory (not created yet)."""
    return tmp_path / "ws"


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_storage(tmp_path_factory):
    """Hypothesis (under schemathesis) caches to ./.hypothesis by default: tests write under the temporary folder only."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(autouse=True)
def _no_ambient_database(monkeypatch):
    """Tests choose their database explicitly; a developer's PEX_* settings must not leak in."""
    monkeypatch.delenv("PEX_DATABASE_URL", raising=False)
    monkeypatch.delenv("PEX_HOME", raising=False)


@pytest.fixture
def run(capsys, home):
    """Run the pex CLI in-process against the test workspace; returns code, stdout, stderr."""

    def _run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(["--home", str(home), *map(str, args)])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


@pytest.fixture
def postgres_url() -> str:
    """URL of the throwaway PostgreSQL server started by `make test-postgres`."""
    url = os.environ.get("PEX_TEST_DATABASE_URL")
    if not url:
        pytest.fail("PEX_TEST_DATABASE_URL is not set: run these tests with `make test-postgres`")
    return url


@pytest.fixture
def empty_postgres_url(postgres_url) -> str:
    """:func:`postgres_url` with every pex table dropped first: each test starts from an empty database."""
    import sqlalchemy as sa

    from pex.store.schema import metadata

    engine = sa.create_engine(postgres_url)
    metadata.drop_all(engine)
    engine.dispose()
    return postgres_url


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, sim_dir):
    """One whole `pex.run` on the 20k simulated experiment (small Ax budget), shared by pipeline and report tests.

    Returns the :class:`pex.services.run.RunResult`; ``result.out`` holds summary.json, report.html and policies/.
    """
    from pex.services.run import run

    base = tmp_path_factory.mktemp("pipeline")
    exp = base / "exp"
    shutil.copytree(sim_dir, exp)
    return run(exp / "exp.toml", base / "out", home=base / "ws", trials=8, batch=4, dense=512, seed=3)


SMALL_UNITS = 2_000


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """One whole `pex.run` on a 2,000-unit simulated experiment, T-learner only and a short weight sweep.

    It stores every kind of policy a run makes (constant, value and distilled trees, cross-fitted routing) in
    seconds, for the layers that serve, store and loop over them (web, serving, online, CLI): their tests check
    what is done with the policies, not how good they are (that is :func:`pipeline_run`'s job). Same layout as
    :func:`pipeline_run`: ``result.out.parent`` holds ``exp/`` (spec + data), ``ws/`` and ``out/``.
    """
    from pex.services.run import run

    base = tmp_path_factory.mktemp("small")
    simulate(SMALL_UNITS, scenario="notification_cadence", seed=11).write(base / "exp", name="exp")
    return run(base / "exp" / "exp.toml", base / "out", home=base / "ws", learner="t", dense=64, seed=3)


@pytest.fixture(scope="session")
def serving_home(tmp_path_factory, small_run) -> Path:
    """A copy of :func:`small_run`'s workspace (never modify it; :func:`served` copies it again)."""
    base = tmp_path_factory.mktemp("serving")
    shutil.copytree(Path(small_run.out).parent / "ws", base / "ws")  # the workspace small_run wrote
    return base / "ws"


@pytest.fixture
def served(tmp_path, serving_home) -> Served:
    """A private copy of :func:`serving_home` with its policies published and tokens made."""
    shutil.copytree(serving_home, tmp_path / "served")
    return Served(tmp_path / "served")


@pytest.fixture(scope="session")
def ingested_template(tmp_path_factory) -> Path:
    """A workspace with a 2,000-unit experiment ``exp`` ingested and nothing logged (never modify it)."""
    from tests.served import ingest

    base = tmp_path_factory.mktemp("ingested")
    ingest(base / "exp", base / "ws")
    return base / "ws"


@pytest.fixture
def ws_home(ingested_template, home) -> Path:
    """A private copy of :func:`ingested_template` at :func:`home`."""
    shutil.copytree(ingested_template, home)
    return home
