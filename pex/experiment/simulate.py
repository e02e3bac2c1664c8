"""Simulated randomized experiments with known potential outcomes.

Every simulated unit has expected and realised outcomes under *every* arm, so
tests, benchmarks and the demo can compare estimates with the truth: average
effects and conditional effects per unit (:class:`Truth`). Policy values under
the truth, the oracles and the certification ceiling are in :mod:`pex.experiment.truth`.

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
``segment_harm``
    Two arms (control, treat, 50/50). ``treat`` lifts ``revenue`` for everyone
    (more for active users) but raises the ``complaints`` guardrail (base rate
    about 30%, ``max_harm`` 10%) by 60% relative on Android (40% of units) and
    leaves it unchanged elsewhere: treating everyone costs about +21%, a
    depth-1 tree that withholds ``treat`` from Android keeps the guardrail and
    earns about two thirds of the best gain achievable within the limit.
``aligned_harm``
    Two arms (control, upsell, 50/50). The ``spend`` lift and the harm on the
    ``churned`` guardrail (base rate about 15%, ``max_harm`` 8%) both grow
    with the same latent engagement (seen through ``spend_pre``), the harm
    faster than the lift, and the least engaged lose spend: the best policy
    within the limit treats a middle slice, not the top gainers.
``canary``
    Three arms (control, lite, heavy), the release scenario of staged rollouts. ``lite`` (a light
    recommendations widget) lifts ``orders`` for everyone (more for active users) and makes pages 1%
    faster; ``heavy`` (the same widget with a slow, buggy loader) lifts ``orders`` less and raises the
    continuous ``latency`` guardrail (mean about 20, ``max_harm`` 5%) by 15% relative for every unit. So
    all-``lite`` is a good version to ramp to 100% and all-``heavy`` a harmful one a canary must roll back;
    ``latency``'s small relative spread lets a 5% canary judge that on a few hundred units.

:func:`drifted` changes the *observed* features of drawn units (a shifted feature, a feature going
missing), as a client release that reports a field differently would, for drift monitoring.

Every scenario draws the same kind of units (age, tenure, country, platform,
noise features ``x0..``, missing values) so they all look alike to the pipeline;
a scenario fixes its own arms, metrics and default allocation (:func:`scenario_design`).
"""

from __future__ import annotations

import copy
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCENARIOS = ("notification_cadence", "constant", "null", "segment_harm", "aligned_harm", "canary")
COUNTRIES = ["US", "IN", "BR", "DE", "GB", "FR"]
COUNTRY_P = [0.35, 0.2, 0.15, 0.1, 0.1, 0.1]
PLATFORMS = ["ios", "android", "web"]
PLATFORM_P = [0.4, 0.4, 0.2]
# The defaults: arms, allocation and metrics of the notification_cadence, constant and null
# scenarios (other code imports these); other scenarios have their own (see scenario_design).
ARMS = ["control", "daily", "weekly"]
DEFAULT_ALLOCATION = {"control": 0.34, "daily": 0.33, "weekly": 0.33}
METRICS = {
    "sessions": {"goal": "increase", "role": "primary", "pre": "sessions_pre", "kind": "continuous"},
    "converted": {"goal": "increase", "role": "secondary", "kind": "binary"},
    "unsubscribes": {"goal": "decrease", "role": "guardrail", "max_harm": 0.05, "kind": "binary"},
}
SEGMENT_HARM_METRICS = {
    "revenue": {"goal": "increase", "role": "primary", "pre": "revenue_pre", "kind": "continuous"},
    "complaints": {"goal": "decrease", "role": "guardrail", "max_harm": 0.10, "kind": "binary"},
}
ALIGNED_HARM_METRICS = {
    "spend": {"goal": "increase", "role": "primary", "pre": "spend_pre", "kind": "continuous"},
    "churned": {"goal": "decrease", "role": "guardrail", "max_harm": 0.08, "kind": "binary"},
}

CANARY_METRICS = {
    "orders": {"goal": "increase", "role": "primary", "pre": "orders_pre", "kind": "continuous"},
    "latency": {"goal": "decrease", "role": "guardrail", "max_harm": 0.05, "kind": "continuous"},
}
CANARY_LATENCY_CHANGE = {"control": 1.0, "lite": 0.99, "heavy": 1.15}  # each arm's latency, relative to control


@dataclass
class ScenarioDesign:
    """What a scenario fixes before any unit is drawn: its arms (control first), default allocation and metrics.

    ``metrics[name]`` holds ``goal``, ``role``, ``kind`` (``continuous`` or ``binary``) and, where
    they apply, ``pre`` (the pre-period covariate's column) and ``max_harm`` (guardrails).
    """

    arms: list[str]
    allocation: dict[str, float]
    metrics: dict[str, dict[str, Any]]
    control: str = "control"


_DESIGNS = {
    "notification_cadence": ScenarioDesign(ARMS, DEFAULT_ALLOCATION, METRICS),
    "constant": ScenarioDesign(ARMS, DEFAULT_ALLOCATION, METRICS),
    "null": ScenarioDesign(ARMS, DEFAULT_ALLOCATION, METRICS),
    "segment_harm": ScenarioDesign(["control", "treat"], {"control": 0.5, "treat": 0.5}, SEGMENT_HARM_METRICS),
    "aligned_harm": ScenarioDesign(["control", "upsell"], {"control": 0.5, "upsell": 0.5}, ALIGNED_HARM_METRICS),
    "canary": ScenarioDesign(["control", "lite", "heavy"], {"control": 0.34, "lite": 0.33, "heavy": 0.33}, CANARY_METRICS),
}


def scenario_design(scenario: str) -> ScenarioDesign:
    """The arms, default allocation and metrics of ``scenario`` (a copy: changing it changes nothing here)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")
    return copy.deepcopy(_DESIGNS[scenario])


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
    """Observed data plus the truth behind it, with the scenario's arms and metrics.

    ``arms`` and ``metrics`` default to the module's :data:`ARMS` and :data:`METRICS`
    (the notification-cadence design); scenarios with their own design set them.
    """

    data: pd.DataFrame
    truth: Truth
    scenario: str
    allocation: dict[str, float]
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    metrics: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(METRICS))
    control: str = "control"

    @property
    def primary(self) -> str:
        """The primary metric (the first one with role ``primary``)."""
        return next(m for m, meta in self.metrics.items() if meta["role"] == "primary")

    @property
    def guardrails(self) -> list[str]:
        """Guardrail metrics that carry a ``max_harm``."""
        return [m for m, meta in self.metrics.items() if meta["role"] == "guardrail" and meta.get("max_harm") is not None]

    def spec_toml(self, name: str, data_file: str) -> str:
        """A spec matching this data, as TOML text."""
        alloc = "\n".join(f"{arm} = {share}" for arm, share in self.allocation.items())
        metrics = []
        for metric, meta in self.metrics.items():
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
            control = "{self.control}"

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


@dataclass
class _Units:
    """The complete (never missing) unit features every scenario's outcomes are built from."""

    age: np.ndarray
    tenure: np.ndarray
    country: np.ndarray
    platform: np.ndarray
    activity: np.ndarray  # latent engagement, never observed directly
    pre_noise: np.ndarray  # the pre-period covariate's noise around activity

    @property
    def n(self) -> int:
        return len(self.age)


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
        Planned share per arm (defaults to the scenario's, 34/33/33 for the three-arm
        scenarios); assignment is an independent draw per unit, so realised shares vary as in a real test.
    n_noise
        Extra numeric features that have no effect on anything.
    missing_rate
        Share of missing values in ``age`` and ``platform`` (observed data only;
        outcomes depend on the complete features).
    """
    design = scenario_design(scenario)
    allocation = dict(allocation or design.allocation)
    if sorted(allocation) != sorted(design.arms):
        raise ValueError(f"allocation must cover the arms {design.arms}")
    rng = np.random.default_rng(seed)

    # The draw order below is fixed: the first scenarios' experiments must stay bit-identical
    # across versions (tests pin them), so new scenarios only change what is computed from the draws.
    age = np.clip(rng.normal(38, 12, n), 18, 80).round()
    tenure = np.floor(rng.exponential(300, n))
    country = rng.choice(COUNTRIES, n, p=COUNTRY_P)
    platform = rng.choice(PLATFORMS, n, p=PLATFORM_P)
    activity = rng.gamma(shape=2.0, scale=2.0, size=n)  # latent engagement
    noise = rng.normal(size=(n, n_noise))
    pre_noise = rng.normal(0, 1.0, n)
    units = _Units(age=age, tenure=tenure, country=country, platform=platform, activity=activity, pre_noise=pre_noise)

    if scenario == "segment_harm":
        expected, pre = _segment_harm_truth(units)
    elif scenario == "aligned_harm":
        expected, pre = _aligned_harm_truth(units)
    elif scenario == "canary":
        expected, pre = _canary_truth(units)
    else:
        expected, pre = _cadence_truth(units, scenario)
    metrics = design.metrics
    assert list(expected) == list(metrics), "outcomes are drawn in the metrics' order"

    # Potential outcomes share one noise draw per unit (common random numbers),
    # so Y(a) - Y(b) differs only through the effect: realistic and low-variance.
    outcomes: dict[str, dict[str, np.ndarray]] = {}
    for metric, by_arm in expected.items():
        if metrics[metric]["kind"] == "binary":
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
        **pre,
    })
    for metric in metrics:
        data[metric] = np.select([assigned == a for a in arms], [outcomes[metric][a] for a in arms])
    truth = Truth(
        arms=list(design.arms), control=design.control, expected=expected, outcomes=outcomes,
        feature_names=[c for c in data.columns if c not in ("user_id", "arm", *pre, *metrics)],
    )
    return SimulatedExperiment(data=data, truth=truth, scenario=scenario, allocation=allocation, arms=list(design.arms),
                               metrics=metrics, control=design.control)


def _cadence_truth(u: _Units, scenario: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Expected outcomes and the pre-period covariate of ``notification_cadence``, ``constant`` and ``null``."""
    n, activity, age = u.n, u.activity, u.age
    sessions_pre = np.maximum(0, activity + u.pre_noise).round(1)
    is_new = u.tenure < 60
    is_old = u.tenure > 365
    ios = u.platform == "ios"
    android = u.platform == "android"
    older = age > 45
    emerging = np.isin(u.country, ["IN", "BR"])

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
    return expected, {"sessions_pre": sessions_pre}


def _segment_harm_truth(u: _Units) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """``segment_harm``: ``treat`` lifts revenue for all, and raises complaints by 60% relative on Android only."""
    activity, age = u.activity, u.age
    ios = u.platform == "ios"
    android = u.platform == "android"
    is_new = u.tenure < 60
    emerging = np.isin(u.country, ["IN", "BR"])
    revenue_pre = np.maximum(0, 2.0 + 1.2 * (activity + u.pre_noise)).round(2)
    revenue0 = 2.0 + 1.2 * activity + 0.3 * ios - 0.005 * (age - 38)
    # Positive for everyone, larger for active users; Android users gain somewhat more,
    # so withholding treat from the whole segment leaves real gain on the table.
    lift = 0.2 + 0.1 * activity + 0.1 * emerging + 0.3 * android
    complaints0 = _logit_inv(-0.85 - 0.05 * (activity - 4.0) + 0.3 * is_new - 0.2 * android)
    # Multiplicative, so the segment's relative harm is exactly 60% whatever its base rate; Android's
    # slightly lower base rate puts treating everyone at about +21% overall.
    complaints1 = np.clip(complaints0 * (1.0 + 0.6 * android), 0.0, 1.0)
    expected = {
        "revenue": {"control": revenue0, "treat": revenue0 + lift},
        "complaints": {"control": complaints0, "treat": complaints1},
    }
    return expected, {"revenue_pre": revenue_pre}


def _aligned_harm_truth(u: _Units) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """``aligned_harm``: the spend lift and the churn harm both grow with engagement, the harm faster."""
    activity, age = u.activity, u.age
    is_new = u.tenure < 60
    ios = u.platform == "ios"
    spend_pre = np.maximum(0, 1.5 + 1.0 * (activity + u.pre_noise)).round(2)
    spend0 = 1.5 + 1.0 * activity + 0.2 * ios - 0.004 * (age - 38)
    # Linear in engagement and negative for the least engaged (an upsell annoys light users) ...
    lift = 0.25 * (activity - 1.0)
    churn0 = _logit_inv(-1.75 + 0.3 * is_new - 0.03 * (activity - 4.0))
    # ... while the churn it causes grows faster than linearly: the lift per unit of harm peaks in the middle.
    churn1 = np.clip(churn0 + 0.0025 * activity**1.6, 0.0, 1.0)
    expected = {
        "spend": {"control": spend0, "upsell": spend0 + lift},
        "churned": {"control": churn0, "upsell": churn1},
    }
    return expected, {"spend_pre": spend_pre}


def _canary_truth(u: _Units) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """``canary``: ``lite`` lifts orders and speeds pages up a little; ``heavy`` lifts orders less and slows pages by 15%."""
    activity, age = u.activity, u.age
    ios = u.platform == "ios"
    android = u.platform == "android"
    orders_pre = np.maximum(0, 1.5 + 1.0 * (activity + u.pre_noise)).round(2)
    orders0 = 1.5 + 1.0 * activity + 0.2 * ios - 0.004 * (age - 38)
    # heavy's lift is below lite's for every unit: no policy that knows the truth would serve it
    lift = {"control": 0.0, "lite": 0.15 + 0.05 * activity, "heavy": 0.1 + 0.03 * activity}
    # a mean near 20 against the simulator's noise (sd 2): a relative spread near 0.14, so harm is measured cheaply
    latency0 = 18.0 + 0.3 * activity + 1.0 * android
    expected = {
        "orders": {arm: orders0 + lift[arm] for arm in lift},
        "latency": {arm: latency0 * change for arm, change in CANARY_LATENCY_CHANGE.items()},
    }
    return expected, {"orders_pre": orders_pre}


def drifted(sim: SimulatedExperiment, *, shift: dict[str, float] | None = None,
            missing: dict[str, float] | None = None, seed: int = 0) -> SimulatedExperiment:
    """``sim`` with its observed features drifted: each numeric feature of ``shift`` moved by its amount, each
    feature of ``missing`` made missing in that share of the units (drawn with ``seed``; missing already stays missing).

    Only what the data shows changes, not the users: the truth (expected and realised outcomes) is ``sim``'s, as when a
    client release starts reporting a field differently or stops sending one. Unknown or non-numeric shifted
    features and rates outside [0, 1] raise ValueError.
    """
    data = sim.data.copy()
    for feature, amount in (shift or {}).items():
        if feature not in sim.truth.feature_names or not pd.api.types.is_numeric_dtype(data[feature]):
            raise ValueError(f"cannot shift {feature!r}: not a numeric feature of scenario {sim.scenario!r}")
        data[feature] = data[feature] + float(amount)
    rng = np.random.default_rng(seed)
    for feature, rate in (missing or {}).items():
        if feature not in sim.truth.feature_names:
            raise ValueError(f"cannot blank {feature!r}: not a feature of scenario {sim.scenario!r}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"the missing share of {feature!r} must be within [0, 1], got {rate}")
        gone = rng.uniform(size=len(data)) < rate
        data[feature] = data[feature].astype(object).where(~gone, None) if data[feature].dtype == object \
            else data[feature].mask(gone)
    return replace(sim, data=data)


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


def _logit_inv(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
