"""The bundled demo: its spec, its data simulated when the spec's data file is absent, publishing its result, some
simulated traffic through the published policy (for the UI's monitor page) and the token its owner logs in with.

The demo's spec does not name a scenario: its data comes from the first simulated scenario whose design
(arms, control and metrics) the spec has, so ``experiments/checkout_offer.toml`` gets ``segment_harm``
and ``experiments/notification_cadence.toml`` gets ``notification_cadence``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pex.errors import PexError, SpecError
from pex.experiment.simulate import SCENARIOS, scenario_design, simulate
from pex.experiment.spec import ExperimentSpec, load_spec
from pex.services.publishing import publish
from pex.services.tables import write_table

if TYPE_CHECKING:  # the pipeline's modules load only when the demo runs it
    from pex.online.traffic import TrafficResult
    from pex.policy.base import Policy
    from pex.report.summary import RecommendationView
    from pex.store.releases import Release
    from pex.store.workspace import Workspace

DEMO_SEED = 2026
# What the simulator writes, whatever the scenario (pex.experiment.simulate.simulate).
SIMULATED_UNIT, SIMULATED_ARM = "user_id", "arm"
# The tokens the demo creates: the owner's (admin, to log in to the UI) and the simulated traffic's (decide, revoked
# once the traffic is sent: nothing else needs it).
DEMO_OWNER, DEMO_TRAFFIC = "demo-owner", "demo-traffic"


def demo_scenario(spec: ExperimentSpec) -> str | None:
    """The first scenario of :data:`pex.experiment.simulate.SCENARIOS` whose data fits ``spec``: the same arms and
    control, the spec's metrics are the scenario's (by column) and its unit and arm columns are the simulator's."""
    columns = sorted(m.column for m in spec.metrics.values())
    for scenario in SCENARIOS:
        design = scenario_design(scenario)
        if (sorted(spec.allocation or {}) == sorted(design.arms) and spec.control == design.control
                and columns == sorted(design.metrics) and (spec.unit, spec.arm) == (SIMULATED_UNIT, SIMULATED_ARM)):
            return scenario
    return None


def demo_spec(spec_path: str | Path, units: int, say: Callable[[str], None] = lambda message: None) -> ExperimentSpec:
    """The demo's spec, with its data simulated first (``units`` units, seed :data:`DEMO_SEED`) when the file is
    missing."""
    spec = load_spec(spec_path, require_data=False)
    if spec.data.exists():
        say(f"using existing demo data {spec.data}")
        return spec
    scenario = demo_scenario(spec)
    if scenario is None:
        designs = "; ".join(
            f"{s}: arms {', '.join(d.arms)} (control {d.control}), metrics {', '.join(d.metrics)}"
            for s, d in ((s, scenario_design(s)) for s in SCENARIOS))
        raise SpecError(
            f"the demo can only simulate data for the arms and metrics of a simulated scenario; {spec_path} plans "
            f"arms {', '.join(spec.allocation or {}) or '(no allocation)'} and metrics "
            f"{', '.join(m.column for m in spec.metrics.values())}",
            f"give the demo spec an [allocation], metrics, unit = {SIMULATED_UNIT!r} and arm = {SIMULATED_ARM!r} of one "
            f"scenario ({designs}), or create its data file yourself")
    say(f"simulating the demo experiment ({units:,} units, scenario {scenario}) -> {spec.data}")
    sim = simulate(units, scenario=scenario, seed=DEMO_SEED, allocation=spec.allocation)
    write_table(sim.data, spec.data)
    return spec


@dataclass(frozen=True)
class DemoRelease:
    """What the demo did with its run's recommendation: the certified policy it made live, or why nothing."""

    policy: str
    version: int | None  # the version made (or already) live; None when nothing was published
    release: Release | None  # None when that version was live already, or nothing was published
    reason: str  # one sentence for the terminal

    @property
    def published(self) -> bool:
        """True when a certified policy is live after the demo."""
        return self.version is not None


def publish_recommendation(ws: Workspace, rec: RecommendationView, policies: dict[str, Policy]) -> DemoRelease:
    """Make a run's recommended policy (``rec``, one of ``policies``) live when it is a certified policy that does
    more than keep control.

    A demo that publishes what the pipeline certified shows the whole path (experiment, certified policy,
    live version); it publishes nothing when the recommendation is to keep control, as an owner would.
    """
    name = rec.policy
    if rec.verdict == "keep_control" or name not in rec.certification.certified:
        return DemoRelease(policy=name, version=None, release=None,
                           reason="nothing published: the recommendation is to keep control, which needs no release")
    # the version the recommendation names: an earlier run's stored version when it carried over (rec.from_run),
    # which this run's policy of the same name is not
    version = rec.from_run.version if rec.from_run is not None else policies[name].version
    if version is None:
        raise PexError(f"the recommended policy {name!r} was not stored by the run, so it cannot be published",
                       "run the demo with cross-fitting (the default), which stores every policy it values")
    if ws.live_versions().get(name) == version:
        return DemoRelease(policy=name, version=version, release=None, reason=f"{name} v{version} was live already")
    release = publish(ws, name, version)
    return DemoRelease(policy=name, version=version, release=release,
                       reason=f"published {name} v{version}: the certified policy is live" +
                              (f" (was v{release.from_version})" if release.from_version else ""))


def first_decisions(ws: Workspace, published: DemoRelease, spec: ExperimentSpec, k: int = 4) -> list[dict]:
    """What ``pex serve`` answers for the first ``k`` units of the demo's data from the live version: per unit its id,
    the features the policy reads (up to three), the arm and its propensity (the same keyed draw as a server's)."""
    from pex.experiment.data import load_dataset
    from pex.policy.base import Policy
    from pex.services.models import effect_model_by_id

    if published.version is None:
        return []
    record = ws.get_policy(published.policy, published.version)
    policy = Policy.from_document(record.document, lambda value_model: effect_model_by_id(ws, value_model["fit"]))
    rows = load_dataset(spec).frame.head(k)
    arms, propensities = policy.decide(rows, rows[spec.unit])
    shown = [f for f in policy.features if f in rows.columns][:3]
    return [{"unit": str(rows[spec.unit].iloc[i]), "features": {f: rows[f].iloc[i] for f in shown},
             "arm": str(arms[i]), "propensity": float(propensities[i])} for i in range(len(rows))]


@dataclass(frozen=True)
class OwnerToken:
    """The admin token the demo prints for logging in to the UI."""

    id: str
    name: str
    secret: str  # shown once: only its hash is stored
    earlier: int  # demo-owner tokens of earlier demos that still work

    def note(self) -> str:
        """One sentence for the terminal about this token and the earlier ones."""
        if not self.earlier:
            return f"created the admin token {self.name!r} (id {self.id}); it is shown only now"
        return (f"created a new admin token {self.name!r} (id {self.id}): a token is shown only once, so each demo "
                f"makes its own; the {self.earlier} of earlier demos still work until `pex token revoke ID`")


def owner_token(ws: Workspace) -> OwnerToken:
    """A new admin token named :data:`DEMO_OWNER` for the demo's owner to log in to the UI with."""
    earlier = sum(1 for t in ws.list_tokens() if t.name == DEMO_OWNER and t.revoked_at is None)
    record, secret = ws.create_token("admin", DEMO_OWNER)
    return OwnerToken(id=record.id, name=record.name, secret=secret, earlier=earlier)


def traffic_token(ws: Workspace) -> tuple[str, str, int]:
    """A decide token for the demo's simulated traffic: (its id, its secret, how many demos sent traffic before).
    The count seeds the traffic, so each demo's simulated users are new ones (``population`` names them by seed)."""
    before = sum(1 for t in ws.list_tokens() if t.name == DEMO_TRAFFIC)
    record, secret = ws.create_token("decide", DEMO_TRAFFIC)
    return record.id, secret, before


def send_traffic(url: str, token: str, spec: ExperimentSpec, published: DemoRelease, units: int, seed: int,
                 say: Callable[[str], None] = lambda message: None) -> TrafficResult:
    """``units`` simulated users of the demo's scenario ask the server at ``url`` for the published policy's decisions
    (over three simulated days) and post their outcomes back, a tenth of them never (:func:`pex.online.traffic.play`):
    what the UI's monitor page shows of a live policy. The data behind it knows the truth, as only a demo may."""
    from pex.online.traffic import Client, play, population

    scenario = demo_scenario(spec)
    if scenario is None or published.version is None:
        raise PexError("the demo sends traffic only to a published policy of a simulated scenario",
                       "run the demo with --publish on its bundled spec, or pass --traffic 0")
    sim = population(spec.name, units, scenario, DEMO_SEED + seed)
    return play(Client(url, token), spec.name, published.policy, sim, unit_column=SIMULATED_UNIT, days=3,
                missing=0.1, seed=seed, say=say)


def live_traffic(ws: Workspace, spec: ExperimentSpec, published: DemoRelease, units: int,
                 say: Callable[[str], None] = lambda message: None) -> TrafficResult:
    """Start `pex serve` on a free loopback port, send ``units`` simulated users through the published policy
    (:func:`send_traffic`), stop the server (SIGTERM: every buffered decision is written) and bring the monitor's
    hourly counts up to date. The traffic's own decide token is revoked afterwards: nothing else needs it."""
    import os
    import socket
    import subprocess
    import sys
    import tempfile

    from pex.services.rollups import refresh

    token_id, secret, before = traffic_token(ws)
    with socket.socket() as probe:  # a free port for a server that lives only for this step
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PEX_HOME": str(ws.home)}
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as err:
        # the pex command line as a program (the services layer imports no CLI): `pex serve` under gunicorn
        server = subprocess.Popen([sys.executable, "-c", "from pex.cli.main import entry; entry()", "serve", "--port",
                                   str(port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            _wait_ready(url, server, err)
            done = send_traffic(url, secret, spec, published, units, before, say=say)
        finally:
            server.terminate()  # SIGTERM: requests in flight finish and the decision log is written
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)
            ws.revoke_token(token_id)
    refresh(ws)
    return done


def _wait_ready(url: str, server, err, timeout: float = 120) -> None:
    """Wait for a child `pex serve` to answer /readyz (its published policy loaded), or fail with its stderr."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            err.seek(0)
            raise PexError(f"the demo's `pex serve` exited with {server.returncode}: {err.read().strip()[-500:]}",
                           "run the demo with --traffic 0 to skip the simulated traffic")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise PexError("the demo's `pex serve` did not become ready within two minutes",
                   "run the demo with --traffic 0 to skip the simulated traffic")
