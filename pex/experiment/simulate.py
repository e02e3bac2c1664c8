"""Simulated randomized experiments with known potential outcomes.

Every simulated unit has expected and realised outcomes under *every* arm, so
tests, benchmarks and the demo can compare estimates with the truth: average
effects, conditional effects per unit, and policy values (:func:`policy_truth`,
:func:`constrained_oracle`).

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

Every scenario draws the same kind of units (age, tenure, country, platform,
noise features ``x0..``, missing values) so they all look alike to the pipeline;
a scenario fixes its own arms, metrics and default allocation (:func:`scenario_design`).
"""

from __future__ import annotations

import copy
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pex.policy.base import Policy

SCENARIOS = ("notification_cadence", "constant", "null", "segment_harm", "aligned_harm")
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


# -- policy values under the truth -------------------------------------------------------

TOLERANCE = 1e-9  # harms within this of the limit count as within it (floating-point sums, not statistics)


def expected_matrix(sim: SimulatedExperiment, metric: str) -> np.ndarray:
    """E[Y(a) | x] of ``metric`` per unit and arm, shape (n_units, n_arms) in ``sim.arms`` order."""
    return np.column_stack([sim.truth.expected[metric][arm] for arm in sim.arms])


def policy_probabilities(policy: Policy, sim: SimulatedExperiment) -> np.ndarray:
    """``policy.action_probabilities(sim.data)`` with its columns in ``sim.arms`` order (exploration included).

    The policy reads the *observed* features (missing values and all), as it would when serving.
    """
    probs = policy.action_probabilities(sim.data)
    out = np.zeros((len(sim.data), len(sim.arms)))
    for j, arm in enumerate(policy.arms):
        if arm not in sim.arms:
            raise ValueError(f"policy {policy.name!r} has arm {arm!r}, which scenario {sim.scenario!r} does not know ({sim.arms})")
        out[:, sim.arms.index(arm)] = probs[:, j]
    return out


def distribution_truth(probabilities: np.ndarray, sim: SimulatedExperiment) -> dict[str, Any]:
    """True values of serving arm probabilities ``probabilities`` (n_units, n_arms in ``sim.arms`` order).

    Returns
    -------
    dict
        ``metrics[m]``: ``value`` (mean over units of sum_a pi(a|x) E[Y_m(a)|x]), ``control``
        (all-control's value) and ``lift`` (value - control); guardrails with a ``max_harm`` also
        carry ``harm`` (the change in the harmful direction relative to the control mean, or absolute
        when the control mean is 0), ``limit`` (``max_harm``, or 0 when absolute, as in
        :mod:`pex.experiment.guardrail`), ``basis`` and ``within``. Top level: ``primary``, ``gain`` (the primary's
        lift in its goal's direction), ``harm`` (guardrail -> harm), ``exceeds`` (some guardrail's
        harm is beyond its limit) and ``arm_shares``.
    """
    probs = np.asarray(probabilities, dtype=float)
    if probs.shape != (len(sim.data), len(sim.arms)):
        raise ValueError(f"probabilities must have shape {(len(sim.data), len(sim.arms))}, got {probs.shape}")
    c = sim.arms.index(sim.control)
    guardrails = set(sim.guardrails)
    metrics: dict[str, dict[str, Any]] = {}
    harm: dict[str, float] = {}
    for metric, meta in sim.metrics.items():
        table = expected_matrix(sim, metric)
        value = float((probs * table).sum(axis=1).mean())
        control = float(table[:, c].mean())
        entry: dict[str, Any] = {"value": value, "control": control, "lift": value - control}
        if metric in guardrails:
            rule = _GuardrailTruth.of(meta, control)
            entry.update(harm=rule.harm(value - control), limit=rule.limit, max_harm=float(meta["max_harm"]), basis=rule.basis)
            entry["within"] = entry["harm"] <= rule.limit + TOLERANCE
            harm[metric] = entry["harm"]
        metrics[metric] = entry
    primary = sim.primary
    sign = 1.0 if sim.metrics[primary]["goal"] == "increase" else -1.0
    return {
        "metrics": metrics,
        "primary": primary,
        "gain": sign * metrics[primary]["lift"],
        "harm": harm,
        "exceeds": not all(metrics[g]["within"] for g in harm),
        "arm_shares": {arm: float(probs[:, j].mean()) for j, arm in enumerate(sim.arms)},
    }


def policy_truth(policy: Policy, sim: SimulatedExperiment) -> dict[str, Any]:
    """True value, lift vs all-control and guardrail harm of ``policy`` on the units of ``sim``.

    Pass a large, fresh draw of the scenario (not the experiment the policy was built on), so the
    numbers are the policy's population values rather than values on its own training units.
    The result is :func:`distribution_truth` of the policy's action probabilities (exploration included).
    """
    return distribution_truth(policy_probabilities(policy, sim), sim)


@dataclass(frozen=True)
class _GuardrailTruth:
    """The guardrail rule of :mod:`pex.experiment.guardrail` applied to true means (no sampling error)."""

    sign: float  # +1 when a rise is harm
    scale: float  # |control mean|, or 1 when that mean is 0
    limit: float
    basis: str

    @classmethod
    def of(cls, meta: dict[str, Any], control_mean: float) -> _GuardrailTruth:
        relative = control_mean != 0.0
        return cls(sign=1.0 if meta["goal"] == "decrease" else -1.0, scale=abs(control_mean) if relative else 1.0,
                   limit=float(meta["max_harm"]) if relative else 0.0, basis="relative" if relative else "absolute")

    def harm(self, change: float | np.ndarray) -> float | np.ndarray:
        return self.sign * change / self.scale


@dataclass
class _OracleFamily:
    """The truth's Lagrangian policies: per unit, the arm maximising its true primary effect minus
    ``lambda`` times its true guardrail harms (each normalised by its limit), served with exploration."""

    n: int
    k: int
    c: int
    exploration: float
    effect: np.ndarray  # (n, k): goal-signed true primary effect vs control
    contributions: dict[str, np.ndarray]  # guardrail -> (n, k): a policy's harm is the mean of its chosen entries
    limits: dict[str, float]
    penalty: np.ndarray  # (n, k): sum over guardrails of contribution / limit

    @classmethod
    def of(cls, sim: SimulatedExperiment, exploration: float) -> _OracleFamily:
        if not 0.0 <= exploration <= 1.0:
            raise ValueError(f"exploration must be in [0, 1], got {exploration}")
        n, k = len(sim.data), len(sim.arms)
        c = sim.arms.index(sim.control)
        sign = 1.0 if sim.metrics[sim.primary]["goal"] == "increase" else -1.0
        table = expected_matrix(sim, sim.primary)
        contributions: dict[str, np.ndarray] = {}
        limits: dict[str, float] = {}
        penalty = np.zeros((n, k))
        for g in sim.guardrails:
            table_g = expected_matrix(sim, g)
            rule = _GuardrailTruth.of(sim.metrics[g], float(table_g[:, c].mean()))
            contributions[g] = rule.harm(table_g - table_g[:, [c]])
            limits[g] = rule.limit
            # A zero (absolute) limit gives no scale; the bisection over lambda finds it instead.
            penalty += contributions[g] / (rule.limit if rule.limit > 0 else 1.0)
        return cls(n=n, k=k, c=c, exploration=float(exploration), effect=sign * (table - table[:, [c]]),
                   contributions=contributions, limits=limits, penalty=penalty)

    def served(self, greedy: np.ndarray) -> np.ndarray:
        probs = np.full((self.n, self.k), self.exploration / self.k)
        probs[np.arange(self.n), greedy] += 1.0 - self.exploration
        return probs

    def harms(self, probs: np.ndarray) -> dict[str, float]:
        return {g: float((probs * self.contributions[g]).sum(axis=1).mean()) for g in self.contributions}

    def keeps(self, probs: np.ndarray) -> bool:
        h = self.harms(probs)
        return all(h[g] <= self.limits[g] + TOLERANCE for g in h)

    def greedy(self, lam: float) -> np.ndarray:
        score = self.effect - lam * self.penalty
        best = np.argmax(score, axis=1)
        # control scores exactly 0; ties go to control, so "no better arm" never treats
        return np.where(score[np.arange(self.n), best] > score[:, self.c], best, self.c)

    def gain(self, probs: np.ndarray) -> float:
        return float((probs * self.effect).sum(axis=1).mean())

    def lambda_scale(self) -> float:
        """The lambda at which an average effect and an average limit-sized harm weigh the same."""
        return max(float(np.abs(self.effect).mean()), 1e-12) / max(float(np.abs(self.penalty).mean()), 1e-12)


def constrained_oracle(sim: SimulatedExperiment, exploration: float = 0.05) -> dict[str, Any]:
    """The best policy under the truth whose true harm on every guardrail is within its limit.

    Every unit gets the arm maximising its true primary effect (goal-signed) minus
    ``lambda`` times the sum over guardrails of its true harm contribution, normalised by the
    control mean (as the harm is) and by the limit (so one ``lambda`` weighs guardrails with
    different limits alike). The served policy is ``(1 - exploration) * greedy + exploration *
    uniform``, as the pipeline's policies are, and the smallest ``lambda`` whose served policy keeps
    every guardrail is found by bisection. Units whose scores tie (effects that depend on a few
    categories only) would make the greedy policy jump past the limit, so the result mixes the
    policies just below and just above that ``lambda`` as far as the limits allow: the linear
    programme's solution for one guardrail, close to it for several.

    The oracle knows every unit's expected outcomes, latent features included, so no policy built
    on observed features can beat it; a policy's gain divided by the oracle's measures how much of
    the achievable gain within the limits it takes.

    Parameters
    ----------
    sim
        A (large, fresh) draw of the scenario.
    exploration
        Share of decisions spread uniformly over the arms, as in the served policies.

    Returns
    -------
    dict
        ``gain`` (true primary gain per unit vs all-control), ``harm`` (guardrail -> true harm),
        ``feasible`` (False when even all-control with exploration breaks a limit: then ``gain`` is 0),
        ``lambda``, ``mix`` (weight of the below-``lambda`` policy), ``exploration``, ``arm_shares``,
        ``truth`` (:func:`distribution_truth` of the served policy) and ``probabilities``
        (n_units, n_arms), the served policy.
    """
    family = _OracleFamily.of(sim, exploration)
    n, c = family.n, family.c
    served, harms, keeps, greedy = family.served, family.harms, family.keeps, family.greedy

    all_control = served(np.full(n, c))
    result: dict[str, Any] = {"exploration": float(exploration), "mix": 0.0}
    if not keeps(all_control):
        truth = distribution_truth(all_control, sim)
        return {**result, "gain": 0.0, "harm": truth["harm"], "feasible": False, "lambda": math.inf,
                "arm_shares": truth["arm_shares"], "truth": truth, "probabilities": all_control}

    lo, probs_lo = 0.0, served(greedy(0.0))
    if keeps(probs_lo):
        lam, probs = 0.0, probs_lo
    else:
        # lambda at which an average effect and an average limit-sized harm weigh the same, doubled until feasible
        hi = family.lambda_scale()
        probs_hi = served(greedy(hi))
        for _ in range(200):
            if keeps(probs_hi):
                break
            lo, probs_lo = hi, probs_hi
            hi *= 2.0
            probs_hi = served(greedy(hi))
        else:  # no lambda keeps every guardrail at once (several guardrails pulling apart): all-control does
            hi, probs_hi = math.inf, all_control
        if math.isfinite(hi):
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                if mid <= lo or mid >= hi:
                    break
                probs_mid = served(greedy(mid))
                if keeps(probs_mid):
                    hi, probs_hi = mid, probs_mid
                else:
                    lo, probs_lo = mid, probs_mid
        lam, probs = hi, probs_hi
        # Harms and gain are linear in the mixing weight t of the infeasible policy: take the largest t that keeps all.
        h_lo, h_hi = harms(probs_lo), harms(probs_hi)
        t = 1.0
        for g in h_lo:
            if h_lo[g] > h_hi[g]:
                t = min(t, (family.limits[g] - h_hi[g]) / (h_lo[g] - h_hi[g]))
        t = float(np.clip(t, 0.0, 1.0))
        gain_lo, gain_hi = family.gain(probs_lo), family.gain(probs_hi)
        if t > 0.0 and gain_lo > gain_hi:
            probs = t * probs_lo + (1.0 - t) * probs_hi
            result["mix"] = t
    truth = distribution_truth(probs, sim)
    return {**result, "gain": truth["gain"], "harm": truth["harm"], "feasible": True, "lambda": lam,
            "arm_shares": truth["arm_shares"], "truth": truth, "probabilities": probs}


def oracle_policy(sim: SimulatedExperiment, lam: float, exploration: float = 0.05) -> np.ndarray:
    """Served arm probabilities (n_units, n_arms) of the truth's Lagrangian policy with multiplier ``lam`` on the
    units of ``sim``: the policies :func:`constrained_oracle` and :func:`certification_ceiling` search over."""
    family = _OracleFamily.of(sim, exploration)
    return family.served(family.greedy(float(lam)))


def certification_ceiling(sim: SimulatedExperiment, n_eval: int, exploration: float = 0.05, alpha: float = 0.05,
                          steps: int = 60, draws: int = 4000, seed: int = 0) -> dict[str, Any]:
    """The most primary gain to expect from policies that must be *certified* on ``n_eval`` units.

    A policy is certified when, on ``n_eval`` units that played no part in choosing it, the one-sided
    ``1 - alpha`` upper bound of each guardrail's harm is within its limit (:mod:`pex.experiment.guardrail`).
    Even knowing every unit's true effects, a policy whose harm sits at the limit passes only
    ``alpha`` of the time, so the constrained oracle's gain is out of reach of any honest procedure;
    this is the reference that is not. It takes the oracle's own path of policies (per unit, the arm
    maximising true primary effect minus ``lambda`` times true harm, served with ``exploration``; up to
    ``steps`` of them, from all-control to the unconstrained best) and gives each guardrail harm its
    smallest possible standard error on ``n_eval`` units, the semiparametric efficiency bound of a
    randomized experiment with the scenario's allocation, which doubly-robust estimation with the true
    outcome models attains:

        Var = Var_x(sum_a w_a(x) mu_a(x)) + E_x[sum_a w_a(x)^2 sigma_a^2(x) / p_a],  w = pi - control.

    Two references come out of it:

    * ``single_test``: the best ``P(pass) * gain`` of one policy tested once (normal estimate, the
      smallest pass probability over guardrails);
    * ``fixed_sequence``: the expected gain when the whole path is tested safest first, each at the
      full level, keeping the last policy before the first failure (fixed-sequence testing, as
      :mod:`pex.evaluation.recommendation` does): the estimates along the path are drawn ``draws`` times from their
      joint normal law (covariances as above, from up to 40,000 of the units).

    The control mean's own error (the delta-method term) is left out, which can only flatter both.

    Returns
    -------
    dict
        ``single_test`` and ``fixed_sequence`` (expected gains per unit, 0 when only control can be
        certified), ``best_single`` (the single test's policy: ``gain``, ``harm`` and ``se`` per
        guardrail, ``p_pass``, ``treated_share``, ``lambda``: the path's multiplier, so :func:`oracle_policy`
        rebuilds it on other units), ``steps`` (path policies used) and ``n_eval``.
    """
    from scipy.stats import norm

    if n_eval < 1:
        raise ValueError(f"n_eval must be at least 1, got {n_eval}")
    family = _OracleFamily.of(sim, exploration)
    shares = np.array([sim.allocation[a] for a in sim.arms], dtype=float)
    shares /= shares.sum()
    scales, noise = {}, {}  # per guardrail: |control mean| (or 1), and (n, k) outcome variance per unit and arm
    for g in sim.guardrails:
        table = expected_matrix(sim, g)
        scales[g] = _GuardrailTruth.of(sim.metrics[g], float(table[:, family.c].mean())).scale
        if sim.metrics[g]["kind"] == "binary":
            noise[g] = table * (1.0 - table)
        else:
            realised = np.column_stack([sim.truth.outcomes[g][a] for a in sim.arms])
            noise[g] = np.broadcast_to((realised - table).var(axis=0), table.shape)

    path: list[np.ndarray] = []  # greedy arms, safest (all control) first
    path_lambdas: list[float] = []
    for lam in [*(family.lambda_scale() * np.geomspace(1e4, 1e-4, 801)), 0.0]:
        greedy = family.greedy(float(lam))
        if not path or not np.array_equal(greedy, path[-1]):
            path.append(greedy)
            path_lambdas.append(float(lam))
    # evenly spaced in gain, where it matters, rather than in lambda
    path_gains = np.array([family.gain(family.served(g)) for g in path])
    targets = np.linspace(path_gains.min(), path_gains.max(), max(2, steps))
    keep = np.unique(np.concatenate([[0], np.abs(path_gains[None, :] - targets[:, None]).argmin(axis=1)]))
    keep = keep[np.argsort(path_gains[keep], kind="stable")]
    policies = [family.served(path[i]) for i in keep]
    gains = path_gains[keep]
    guardrails = list(family.contributions)
    rows = np.random.default_rng(seed).permutation(family.n)[:40_000]
    harm = np.zeros((len(guardrails), len(policies)))
    changes = np.zeros((len(guardrails), len(policies), len(rows)))  # per unit, relative to the scale
    weights = []
    for j, probs in enumerate(policies):
        w = probs.copy()
        w[:, family.c] -= 1.0
        weights.append(w[rows])
        for i, g in enumerate(guardrails):
            change = (w * family.contributions[g]).sum(axis=1)
            harm[i, j] = float(change.mean())
            changes[i, j] = change[rows]
    flat = changes.reshape(-1, len(rows))
    cov = np.cov(flat) if flat.shape[0] > 1 else np.atleast_2d(flat.var(ddof=1))
    size = len(policies)
    for i, g in enumerate(guardrails):  # the outcome noise, within each guardrail (simulated metrics draw their noise apart)
        per_arm = noise[g][rows] / shares / scales[g] ** 2
        for j in range(size):
            for k in range(j, size):
                cov[i * size + j, i * size + k] += float((weights[j] * weights[k] * per_arm).sum(axis=1).mean())
                cov[i * size + k, i * size + j] = cov[i * size + j, i * size + k]
    cov /= n_eval
    se = np.sqrt(np.diag(cov)).reshape(len(guardrails), size)
    limits = np.array([family.limits[g] for g in guardrails])[:, None]
    z = float(norm.ppf(1.0 - alpha))

    p_pass = norm.cdf((limits - harm) / np.maximum(se, 1e-300) - z).min(axis=0)
    best = int(np.argmax(p_pass * gains))
    single = float(max(p_pass[best] * gains[best], 0.0))

    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    estimates = harm.reshape(-1) + np.random.default_rng(seed + 1).standard_normal((draws, len(values))) @ root.T
    passed = (estimates.reshape(draws, len(guardrails), size) + z * se <= limits).all(axis=1)
    first_fail = np.where(passed.all(axis=1), size, np.argmin(passed, axis=1))
    kept = np.where(first_fail > 0, gains[np.maximum(first_fail - 1, 0)], 0.0)
    return {
        "single_test": single, "fixed_sequence": float(max(kept.mean(), 0.0)), "n_eval": int(n_eval), "steps": size,
        "best_single": {"gain": float(gains[best]), "p_pass": float(p_pass[best]), "lambda": path_lambdas[keep[best]],
                        "harm": {g: float(harm[i, best]) for i, g in enumerate(guardrails)},
                        "se": {g: float(se[i, best]) for i, g in enumerate(guardrails)},
                        "treated_share": float(1.0 - policies[best][:, family.c].mean())},
    }


def _logit_inv(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
