"""The bundled demo: its spec, and its data simulated from the demo scenario when the spec's data file is absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pex.errors import SpecError
from pex.experiment.simulate import ARMS as SIMULATED_ARMS
from pex.experiment.simulate import simulate
from pex.experiment.spec import ExperimentSpec, load_spec
from pex.services.tables import write_table

DEMO_SCENARIO, DEMO_SEED = "notification_cadence", 2026


def demo_spec(spec_path: str | Path, units: int, say: Callable[[str], None] = lambda message: None) -> ExperimentSpec:
    """The demo's spec, with its data simulated first (``units`` units) when the file is missing."""
    spec = load_spec(spec_path, require_data=False)
    if spec.data.exists():
        say(f"using existing demo data {spec.data}")
        return spec
    if sorted(spec.allocation or {}) != sorted(SIMULATED_ARMS):
        raise SpecError(
            f"the demo can only simulate data for the arms {', '.join(SIMULATED_ARMS)}; {spec_path} plans "
            f"{', '.join(spec.allocation or {}) or 'no allocation'}",
            "give the demo spec an [allocation] over those arms, or create its data file yourself",
        )
    say(f"simulating the demo experiment ({units:,} units) -> {spec.data}")
    sim = simulate(units, scenario=DEMO_SCENARIO, seed=DEMO_SEED, allocation=spec.allocation)
    write_table(sim.data, spec.data)
    return spec
