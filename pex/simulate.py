"""Simulated randomized experiments with known potential outcomes.

Every simulated unit has expected and realised outcomes under *every* arm, so
tests, benchmarks and the demo can compare estimates with the truth: average
effects, conditional effects per unit, and (later) policy values.

Scenarios
---------
``notification_cadence``
    Three arms (control, daily, weekly), a continuous primary metric with a
    pre-period covariate (``sessions``), a binary secondary (``converted``) and a
    binary guardrail (``unsubscribes``) that ``daily`` harms for long-tenure
    users: the arm that lifts sessions most also costs unsubscribes.
``constant``
    Same units and metrics, but every arm's effect is the same for every unit.
``null``
    Same units and metrics, no effect at all.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SCENARIOS = ("notification_cadence", "constant", "null")
COUNTRIES = ["US", "IN", "BR", "DE", "GB", "FR"]
COUNTRY_P = [0.35, 0.2, 0.15, 0.1, 0.1, 0.1]
PLATFORMS = ["ios", "android", "web"]
PLATFORM_P = [0.4, 0.4, 0.2]
ARMS = ["control", "daily", "weekly"]
DEFAULT_ALLOCATION = {"control": 0.34, "daily": 0.33, "weekly": 0.33}
METRICS = {
    "sessions": {"goal": "increase", "role": "primary", "pre": "sessions_pre", "kind": "continuous"},
    "converted": {"goal": "increase", "role": "secondary", "kind": "binary"},
    "unsubscribes": {"goal": "decrease", "role": "guardrail", "max_harm": 0.05, "kind": "binary"},
}


@dataclass
class Truth:
    """What a simulated experiment knows that its data does not show.

    ``expected[metric][arm]`` is E[Y(arm) | x] per unit and ``outcomes[metric][arm]``
    the realised potential outcome Y(arm) per unit (only the assigned arm's
    is observed in the data).
    """

    arms: list[str]
    control: str
    expected: dict[str, dict[str, np.ndarray]]
    outcomes: dict[str, dict[str, np.ndarray]]
    feature_names: list[str] = field(default_factory=list)

    def cate(self, metric: str, arm: str) -> np.ndarray:
        """True conditional average effect of ``arm`` vs control, per unit."""
        return self.expected[metric][arm] - self.expected[metric][self.control]

    def ate(self, metric: str, arm: str) -> float:
        """The sample's average of the true conditional effects."""
        return float(self.cate(metric, arm).mean())


@dataclass
class SimulatedExperiment:
    data: pd.DataFrame
    truth: Truth
    scenario: str
    allocation: dict[str, float]

    def spec_toml(self, name: str, data_file: str) -> str:
        """A spec matching this data, as TOML text."""
        alloc = "\n".join(f"{arm} = {share}" for arm, share in self.allocation.items())
        metrics = []
        for metric, meta in METRICS.items():
            lines = [f"[metrics.{metric}]", f'goal = "{meta["goal"]}"', f'role = "{meta["role"]}"']
            if "pre" in meta:
                lines.append(f'pre = "{meta["pre"]}"')
            if "max_harm" in meta:
                lines.append(f'max_harm = {meta["max_harm"]}')
            metrics.append("\n".join(lines))
        return textwrap.dedent(f"""\
            name = "{name}"
            description = "Simulated experiment (pex.simulate scenario '{self.scenario}')"
            owner = "pex-simulate"
            data = "{data_file}"
            unit = "user_id"
            arm = "arm"
            control = "control"

            [allocation]
            """) + alloc + "\n\n" + "\n\n".join(metrics) + "\n"

    def write(self, directory: str | Path, name: str | None = None, fmt: str = "csv") -> Path:
        """Write data and spec into ``directory``; return the spec's path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = name or self.scenario
        data_file = f"{name}.{'parquet' if fmt == 'parquet' else 'csv'}"
        if fmt == "parquet":
            self.data.to_parquet(directory / data_file, index=False)
        else:
            self.data.to_csv(directory / data_file, index=False)
        spec_path = directory / f"{name}.toml"
        spec_path.write_text(self.spec_toml(name, data_file), encoding="utf-8")
        return spec_path


def simulate(
    n: int = 50_000,
    *,
    scenario: str = "notification_cadence",
    seed: int = 0,
    allocation: dict[str, float] | None = None,
    n_noise: int = 8,
    missing_rate: float = 0.05,
) -> SimulatedExperiment:
    """Simulate a randomized experiment with known potential outcomes.

    Parameters
    ----------
    n
        Number of units.
    scenario
        One of :data:`SCENARIOS` (see the module docstring).
    seed
        Seed of the random generator; the same seed gives the same experiment.
    allocation
        Planned share per arm (defaults to 34/33/33); assignment is an
        independent draw per unit, so realised shares vary as in a real test.
    n_noise
        Extra numeric features that have no effect on anything.
    missing_rate
        Share of missing values in ``age`` and ``platform`` (observed data only;
        outcomes depend on the complete features).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")
    allocation = dict(allocation or DEFAULT_ALLOCATION)
    if sorted(allocation) != sorted(ARMS):
        raise ValueError(f"allocation must cover the arms {ARMS}")
    rng = np.random.default_rng(seed)

    age = np.clip(rng.normal(38, 12, n), 18, 80).round()
    tenure = np.floor(rng.exponential(300, n))
    country = rng.choice(COUNTRIES, n, p=COUNTRY_P)
    platform = rng.choice(PLATFORMS, n, p=PLATFORM_P)
    activity = rng.gamma(shape=2.0, scale=2.0, size=n)  # latent engagement
    noise = rng.normal(size=(n, n_noise))
    sessions_pre = np.maximum(0, activity + rng.normal(0, 1.0, n)).round(1)

    is_new = tenure < 60
    is_old = tenure > 365
    ios = platform == "ios"
    android = platform == "android"
    older = age > 45
    emerging = np.isin(country, ["IN", "BR"])

    base = {
        "sessions": 1.0 + 1.1 * activity + 0.3 * ios - 0.005 * (age - 38),
        "converted": _logit_inv(-2.2 + 0.15 * activity + 0.3 * emerging),
        "unsubscribes": _logit_inv(-3.3 - 0.1 * activity + 0.5 * is_new),
    }
    if scenario == "notification_cadence":
        effects = {
            "daily": {
                "sessions": 0.25 + 1.0 * is_new + 0.4 * ios - 0.3 * older,
                "converted": 0.005 + 0.03 * android,
                "unsubscribes": 0.002 + 0.035 * is_old,
            },
            "weekly": {
                "sessions": 0.15 + 0.5 * older + 0.2 * emerging,
                "converted": 0.01 + 0.01 * older,
                "unsubscribes": 0.001 + 0.004 * is_new,
            },
        }
    elif scenario == "constant":
        effects = {
            "daily": {"sessions": 0.4, "converted": 0.015, "unsubscribes": 0.01},
            "weekly": {"sessions": 0.25, "converted": 0.01, "unsubscribes": 0.002},
        }
    else:
        effects = {arm: {m: 0.0 for m in METRICS} for arm in ("daily", "weekly")}

    expected: dict[str, dict[str, np.ndarray]] = {}
    for metric, mu0 in base.items():
        expected[metric] = {"control": mu0}
        for arm in ("daily", "weekly"):
            mu = mu0 + np.broadcast_to(effects[arm][metric], (n,))
            if METRICS[metric]["kind"] == "binary":
                mu = np.clip(mu, 0.0, 1.0)
            expected[metric][arm] = mu

    # Potential outcomes share one noise draw per unit (common random numbers),
    # so Y(a) - Y(b) differs only through the effect: realistic and low-variance.
    outcomes: dict[str, dict[str, np.ndarray]] = {}
    for metric, by_arm in expected.items():
        if METRICS[metric]["kind"] == "binary":
            u = rng.uniform(size=n)
            outcomes[metric] = {arm: (u < mu).astype(float) for arm, mu in by_arm.items()}
        else:
            eps = rng.normal(0, 2.0, n)
            outcomes[metric] = {arm: (mu + eps).round(3) for arm, mu in by_arm.items()}

    arms = list(allocation)
    probs = np.array([allocation[a] for a in arms], dtype=float)
    assigned = rng.choice(arms, n, p=probs / probs.sum())

    age_obs = age.copy()
    age_obs[rng.uniform(size=n) < missing_rate] = np.nan
    platform_obs = platform.astype(object)
    platform_obs[rng.uniform(size=n) < missing_rate] = None

    data = pd.DataFrame({
        "user_id": [f"u{i:07d}" for i in range(n)],
        "arm": assigned,
        "age": age_obs,
        "tenure_days": tenure,
        "country": country,
        "platform": platform_obs,
        **{f"x{j}": noise[:, j].round(4) for j in range(n_noise)},
        "sessions_pre": sessions_pre,
    })
    for metric in METRICS:
        data[metric] = np.select([assigned == a for a in arms], [outcomes[metric][a] for a in arms])
    truth = Truth(
        arms=ARMS, control="control", expected=expected, outcomes=outcomes,
        feature_names=[c for c in data.columns if c not in ("user_id", "arm", "sessions_pre", *METRICS)],
    )
    return SimulatedExperiment(data=data, truth=truth, scenario=scenario, allocation=allocation)


def write_product_export(directory: str | Path, n: int = 8_000, seed: int = 0) -> Path:
    """A randomized pricing-page test as a product database would export it; returns the spec's path.

    Unlike :func:`simulate`, the file looks like real data: string ids in a column named "Customer ID",
    two arms with their own labels ("free" control, "trial"), column names with spaces and units,
    categorical features with missing values, a skewed revenue metric and a rare refund guardrail.
    The trial offer lifts revenue by 2 on mobile devices and lowers it by 3 on desktop (no effect
    when the device is unknown) and raises refunds from 4% to 5%, so the right policy is personal.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = rng.choice(["free", "trial"], p=[0.5, 0.5], size=n)
    device = rng.choice(["iPhone", "Android phone", "Desktop", None], p=[0.35, 0.35, 0.2, 0.1], size=n)
    region = rng.choice(["EMEA", "NA", "APAC", "LATAM"], size=n)
    visits = rng.poisson(4, size=n).astype(float)
    visits[rng.uniform(size=n) < 0.08] = np.nan
    age = rng.normal(38, 11, size=n).round()
    age[rng.uniform(size=n) < 0.05] = np.nan
    mobile = np.isin(device, ["iPhone", "Android phone"])
    uplift = np.select([mobile, device == "Desktop"], [2.0, -3.0], 0.0) * (plan == "trial")
    revenue = np.maximum(0, rng.gamma(2.0, 2.0, size=n) + 3.0 + uplift + 0.3 * np.nan_to_num(visits))
    refunds = rng.binomial(1, 0.04 + 0.01 * (plan == "trial"), size=n)
    frame = pd.DataFrame({"Customer ID": [f"C-{i:06d}" for i in range(n)], "Plan Shown": plan, "Device Type": device,
                          "Region": region, "Visits (30d)": visits, "Age": age, "Revenue (USD)": revenue.round(2),
                          "Refunded": refunds})
    frame.to_csv(directory / "pricing.csv", index=False)
    (directory / "pricing.toml").write_text(textwrap.dedent('''\
        name = "pricing-page"
        description = "Free plan vs trial offer on the pricing page"
        data = "pricing.csv"
        unit = "Customer ID"
        arm = "Plan Shown"
        control = "free"
        features = ["Device Type", "Region", "Visits (30d)", "Age"]

        [allocation]
        free = 0.5
        trial = 0.5

        [metrics.revenue]
        column = "Revenue (USD)"
        goal = "increase"
        role = "primary"

        [metrics.refunds]
        column = "Refunded"
        goal = "decrease"
        role = "guardrail"
        max_harm = 0.5
        '''), encoding="utf-8")
    return directory / "pricing.toml"


def population_ate(scenario: str, metric: str, arm: str, n: int = 1_000_000, seed: int = 987_654) -> float:
    """The population average effect, by Monte Carlo over a large draw of units."""
    sim = simulate(n, scenario=scenario, seed=seed, n_noise=0, missing_rate=0.0)
    return sim.truth.ate(metric, arm)


def _logit_inv(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
