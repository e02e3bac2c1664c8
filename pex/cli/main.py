"""The ``pex`` command line.

Every command exits 0 on success and 2 on bad input, printing a one-line
cause and a hint on stderr (``--verbose`` adds the traceback). Commands that
print results accept ``--json``.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from pathlib import Path

import click
from click.core import ParameterSource

from pex.cli.common import _echo_json, _lazy_workspace, _units_file_options, _workspace, parse_pairs
from pex.errors import PexError
from pex.evaluation.procedures import CERTIFICATIONS
from pex.experiment.simulate import SCENARIOS
from pex.experiment.split import HOLDOUT
from pex.version import __version__

_state = {"verbose": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pex")
@click.option("--home", type=click.Path(file_okay=False), default=None, envvar="PEX_HOME",
              help="Workspace directory (default: $PEX_HOME or ./.pex).")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: bool) -> None:
    """pex: personalized experimentation from randomized A/B tests."""
    _state["verbose"] = verbose
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


@cli.command()
@click.argument("spec")
@click.option("--drop-invalid", is_flag=True, help="Drop rows with a missing arm, unit id or metric value (counted and recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the stored dataset version as JSON.")
@click.pass_context
def ingest(ctx: click.Context, spec: str, drop_invalid: bool, as_json: bool) -> None:
    """Validate SPEC's data and store it as a new dataset version."""
    from pex.services.experiments import ingest as ingest_spec

    done = ingest_spec(lambda: _workspace(ctx, create=True), spec, drop_invalid=drop_invalid)
    dataset, dv = done.dataset, done.version
    if as_json:
        _echo_json({**dv.to_dict(), "dataset": dataset.summary()})
        return
    state = "stored as new" if dv.created else "identical to existing"
    click.echo(f"{dataset.spec.name}: {dataset.n_units:,} units, {len(dataset.arms)} arms, {len(dataset.features)} features, "
               f"{len(dataset.spec.metrics)} metrics; {state} dataset version {dv.version} ({dv.id})")
    if dataset.n_dropped:
        click.echo(f"dropped {dataset.n_dropped:,} invalid rows: " + ", ".join(f"{k} ({v})" for k, v in dataset.dropped.items()))
    for w in dataset.warnings:
        click.echo(f"warning: {w}", err=True)


@cli.command()
@click.argument("name")
@click.option("--version", "version", type=int, default=None, help="Dataset version (default: latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
@click.pass_context
def analyze(ctx: click.Context, name: str, version: int | None, as_json: bool) -> None:
    """Sample-ratio check and average effects per arm and metric for experiment NAME."""
    from pex.report.text import render_analysis
    from pex.services.experiments import analyze_stored

    analysis, result = analyze_stored(_workspace(ctx, create=False), name, version)
    if as_json:
        _echo_json(result)
    else:
        click.echo(render_analysis(analysis))


class _Progress:
    """Model-by-model progress on stderr: one updating line on a terminal, a line per step otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int, message: str) -> None:
        line = f"[{done:>3}/{total}] {time.perf_counter() - self.started:6.1f}s  {message}"
        if self.tty:
            click.echo("\r" + line[:110].ljust(110), err=True, nl=done == total)
        else:
            click.echo(line, err=True)


@cli.command()
@click.argument("name")
@click.option("--learner", type=click.Choice(["auto", "t", "x", "s", "dr"]), default="auto", show_default=True,
              help="auto fits all four and keeps the best per metric (or their mean).")
@click.option("--folds", type=click.IntRange(min=2, max=10), default=2, show_default=True, help="Cross-fitting folds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--holdout", type=click.FloatRange(min=0.0, max=0.9), default=HOLDOUT, show_default=True,
              help="Share of units kept out of every model, to evaluate policies on (0: fit on all units).")
@click.option("--version", "version", type=int, default=None, help="Dataset version (default: current).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit summary as JSON.")
@click.pass_context
def fit(ctx: click.Context, name: str, learner: str, folds: int, seed: int, holdout: float, version: int | None, quiet: bool,
        as_json: bool) -> None:
    """Fit heterogeneous-effect models for experiment NAME and print the leaderboard."""
    from pex.report.text import render_fit
    from pex.services.fitting import fit as fit_models

    record, summary = fit_models(_workspace(ctx, create=False), name, version=version, learner=learner, folds=folds, seed=seed,
                                 holdout=holdout, progress=None if quiet else _Progress())
    if as_json:
        _echo_json({"fit": record.to_dict(), **summary})
    else:
        click.echo(render_fit(summary, record.id))


@cli.command()
@click.argument("name")
@_units_file_options
@click.option("--fit", "fit_id", default=None, help="Fit id (default: the newest fit of NAME).")
@click.pass_context
def predict(ctx: click.Context, name: str, data_path: str, out_path: str, fit_id: str | None) -> None:
    """Write predicted effects per unit: the unit column plus cate__<metric>__<arm> columns."""
    from pex.services.fitting import predict as predict_effects
    from pex.services.tables import check_output, write_table

    out = check_output(out_path, "effects")
    result, record = predict_effects(_workspace(ctx, create=False), name, data_path, fit_id)
    write_table(result, out)
    click.echo(f"wrote {len(result):,} rows x {len(result.columns) - 1} effect columns to {out} (fit {record.id})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def experiments(ctx: click.Context, as_json: bool) -> None:
    """List the experiments in the workspace; "stale": a live policy of it (or its data) is older than the spec's
    max_age_days (- when none is live)."""
    from pex.report.text import table
    from pex.services.experiments import list_experiments
    from pex.services.monitoring import staleness

    home, rows = list_experiments(lambda: _workspace(ctx, create=False), ctx.obj.get("home"))
    rows = [{**r, "stale": staleness(_workspace(ctx, create=False), r["name"])["stale"]} for r in rows]
    if as_json:
        _echo_json(rows)
    elif not rows:
        click.echo(f"no experiments in {home.resolve()}; add one with `pex ingest SPEC`")
    else:
        stale = {True: "stale", False: "no", None: "-"}
        click.echo(table([[r["name"], str(r["current_version"] or "-"), f"{r['n_units'] or 0:,}", stale[r["stale"]],
                           r["owner"], r["description"]] for r in rows],
                         ["name", "version", "units", "stale", "owner", "description"], right={1, 2}))


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--scenario", type=click.Choice(SCENARIOS), default="notification_cadence", show_default=True,
              help="One of pex.experiment.simulate's scenarios (the README's and the benchmarks').")
@click.option("-n", "--units", type=click.IntRange(min=10), default=50_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default=None, callback=lambda ctx, param, value: _check_name(value),
              help="Experiment name (default: the scenario).")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
def simulate(out_dir: str, scenario: str, units: int, seed: int, name: str | None, fmt: str) -> None:
    """Write a simulated experiment (data + spec) into OUT_DIR."""
    from pex.experiment.simulate import simulate as run_simulation

    sim = run_simulation(units, scenario=scenario, seed=seed)
    spec_path = sim.write(out_dir, name=name, fmt=fmt)
    click.echo(f"wrote {spec_path} and its data ({units:,} units, scenario {scenario!r})")


def _check_name(value: str | None) -> str | None:
    from pex.experiment.spec import NAME_PATTERN

    if value is not None and not NAME_PATTERN.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a valid experiment name: use 1-64 lowercase letters, digits, '_' or '-'")
    return value


def _demo_spec_path() -> Path:
    """The bundled demo spec, beside the package in a checkout (``notification_cadence.toml`` beside it is the
    hard example, where only a cautious policy can be certified)."""
    return Path(__file__).resolve().parents[2] / "experiments" / "checkout_offer.toml"


# The demo's size: like a well-powered test of its experiment, it certifies a personalized policy.
DEMO_UNITS = 20_000
# Simulated users the demo sends through the published policy, so the UI's monitor page has live traffic to show.
DEMO_TRAFFIC_UNITS = 3_000


@cli.command()
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), default=str(_demo_spec_path()), show_default=True,
              help="Demo experiment spec; its data is simulated when the file is absent.")
@click.option("-n", "--units", type=click.IntRange(min=100), default=DEMO_UNITS, show_default=True,
              help="Units to simulate when the spec's data file is absent.")
@click.option("--fit/--no-fit", "fit_models", default=True, show_default=True,
              help="Run the whole pipeline (effect models, policies, weight search, report); --no-fit only checks and analyses.")
@click.option("--out", default="pex-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for summary.json, report.html and policies/.")
@click.option("--trials", type=click.IntRange(min=0), default=0, show_default=True,
              help="Ax weight vectors refining the weight search (0: the dense sweep alone).")
@click.option("--publish/--no-publish", "publish_policy", default=True, show_default=True,
              help="Make the recommended policy live when it is certified and does more than keep control.")
@click.option("--traffic", "traffic_units", type=click.IntRange(min=0), default=DEMO_TRAFFIC_UNITS, show_default=True,
              help="Simulated users sent through the published policy by a `pex serve` the demo starts and stops "
                   "(decisions and outcomes for the UI's monitor page); 0 sends none.")
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="Serve the web UI (`pex ui`, with its worker) when done; --no-serve ends after the pipeline and traffic.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="The UI's port (0: any free one).")
@click.pass_context
def demo(ctx: click.Context, spec_path: str, units: int, fit_models: bool, out: str, trials: int, publish_policy: bool,
         traffic_units: int, serve: bool, host: str, port: int) -> None:
    """Run the whole pipeline on the bundled demo experiment, publish the policy it certifies, send it some simulated
    traffic and serve the web UI, where the experiment, its run, the live policy and its traffic are shown."""
    from pex.report.text import render_analysis
    from pex.services.demo import demo_spec
    from pex.services.experiments import ingest_and_analyze

    started = time.perf_counter()
    if not fit_models:
        steps = _DemoSteps(2)
        spec = demo_spec(spec_path, units, say=lambda m: click.echo(f"{steps.next()} {m}"))
        click.echo(f"{steps.next()} validating, storing and analysing the data")
        done, analysis = ingest_and_analyze(lambda: _workspace(ctx, create=True), spec)
        dv = done.version
        click.echo(f"      dataset version {dv.version} ({dv.id}, {'new' if dv.created else 'already stored'}) "
                   f"in {_workspace(ctx, create=True).home.resolve()}")
        click.echo("")
        click.echo(render_analysis(analysis))
        click.echo(f"\ndone in {time.perf_counter() - started:.1f}s")
        return
    from pex.services.run import run as run_pipeline

    steps = _DemoSteps(2 + publish_policy + (publish_policy and traffic_units > 0) + serve)
    spec = demo_spec(spec_path, units, say=lambda m: click.echo(f"{steps.next()} {m}"))
    click.echo(f"{steps.next()} the whole offline pipeline (pex run)")
    result = run_pipeline(spec_path, out, home=ctx.obj.get("home"), seed=0, trials=trials, use_ax=trials > 0,
                          say=lambda m: click.echo(f"      {m}"), progress=_Progress())
    _print_run(result)
    click.echo(f"\npipeline done in {time.perf_counter() - started:.1f}s")
    if publish_policy:
        published = _publish_demo(ctx, spec, result, steps)
        if traffic_units and published.published:
            _demo_traffic(ctx, spec, published, traffic_units, steps)
        elif traffic_units:
            click.echo(f"{steps.next()} no simulated traffic: no policy is live to send it to")
    if serve:
        _serve_demo_ui(ctx, host, port, steps)


class _DemoSteps:
    """The demo's numbered steps, ``[i/n]``, counted as they are announced."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def next(self) -> str:
        self.done += 1
        return f"\n[{self.done}/{self.total}]" if self.done > 1 else f"[1/{self.total}]"


def _publish_demo(ctx: click.Context, spec, result, steps: _DemoSteps):
    """Publish what the demo's run certified, and show what a server answers with it."""
    from pex.services.demo import first_decisions, publish_recommendation

    click.echo(f"{steps.next()} publishing the recommendation (pex publish)")
    ws = _workspace(ctx, create=True)
    done = publish_recommendation(ws, result.typed.recommendation, result.policy_objects)
    click.echo(f"      {done.reason}")
    if not done.published:
        return done
    click.echo(f"      what `pex serve` answers with it (POST /api/v1/policies/{done.policy}/decide), first units of the data:")
    for d in first_decisions(ws, done, spec):
        features = ", ".join(f"{k}={v}" for k, v in d["features"].items())
        click.echo(f"        {d['unit']} ({features}) -> {d['arm']} (propensity {d['propensity']:.3f})")
    return done


def _demo_traffic(ctx: click.Context, spec, published, units: int, steps: _DemoSteps) -> None:
    """Simulated users through the published policy by a `pex serve` started for it (:func:`pex.services.demo.live_traffic`)."""
    from pex.services.demo import live_traffic

    click.echo(f"{steps.next()} simulated traffic through {published.policy} v{published.version} (pex serve + "
               f"pex simulate-traffic)")
    done = live_traffic(_workspace(ctx, create=True), spec, published, units, say=lambda m: click.echo(f"      {m}"))
    arms = ", ".join(f"{a} {n:,}" for a, n in sorted(done.arms.items()))
    click.echo(f"      {done.decisions:,} decisions ({arms}) and {done.outcomes_posted:,} outcomes in {done.seconds:.1f}s; "
               f"{done.units_without_outcomes:,} users never reported")
    click.echo("      the monitor's hourly counts are up to date")


def _serve_demo_ui(ctx: click.Context, host: str, port: int, steps: _DemoSteps) -> None:
    """Print the UI's address and an owner's token, then become `pex ui` (with its worker) on ``host:port``."""
    from pex.services.demo import owner_token

    if port == 0:
        import socket

        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    owner = owner_token(_workspace(ctx, create=True))
    click.echo(f"{steps.next()} the web UI (pex ui, with its job worker)")
    click.echo(f"      {owner.note()}")
    click.echo(f"      open http://{host}:{port}/ui/login and paste this token:")
    click.echo(f"      token: {owner.secret}")
    click.echo(f"      serving the UI at http://{host}:{port}/ui/ (Ctrl-C stops it)")
    sys.stdout.flush()
    ctx.invoke(cli.get_command(ctx, "ui"), host=host, port=port)


def _print_run(result) -> None:
    """The text version of a pipeline run: health, effects, HTE, policies, weight search, recommendation."""
    from pex.report.text import (
        render_analysis,
        render_fit,
        render_history,
        render_policies,
        render_recommendation,
        render_tuning,
    )

    d = result.details
    click.echo("")
    click.echo(render_analysis(d["analysis"]))
    click.echo("")
    click.echo(render_fit(d["fit"], d["fit_id"]))
    click.echo("")
    click.echo(render_policies(d["rows"], d["build_report"]))
    click.echo("")
    click.echo(render_tuning(result.summary["pareto"], result.summary["policies"]))
    click.echo("")
    click.echo(render_recommendation(result.summary))
    history = render_history(result.summary)
    if history:
        click.echo("\n" + history)
    if result.out is not None:
        click.echo(f"\nwrote {result.out / 'summary.json'}, {result.out / 'report.html'} and {result.out / 'policies'}/")


@cli.command()
@click.argument("name")
@click.option("--rebuild", is_flag=True, help="Build a new policy set even when the newest fit already has one.")
@click.option("--fit", "fit_id", default=None, help="Fit id to build from (default: the newest fit of NAME).")
@click.option("--weight", "weights", multiple=True, metavar="METRIC=W",
              help="Metric weight in the value model (repeatable; default: spec weight, else primary 1, secondary 0.5, guardrail 0).")
@click.option("--guardrails", type=click.Choice(["constraint", "penalty"]), default="constraint", show_default=True,
              help="constraint: keep each guardrail within its max_harm; penalty: weigh it like any metric.")
@click.option("--budget", type=click.FloatRange(min=0.0, max=1.0), default=None,
              help="Largest share of units given a non-control arm.")
@click.option("--exploration", type=click.FloatRange(min=0.0, max=1.0), default=0.05, show_default=True,
              help="Share of decisions spread uniformly over arms (value and tree policies).")
@click.option("--min-leaf", "min_leaf", type=click.FloatRange(min=0.001, max=0.49), default=0.05, show_default=True,
              help="Smallest share of units in a tree leaf.")
@click.option("--json", "as_json", is_flag=True, help="Print the policies and their evaluation as JSON.")
@click.pass_context
def policies(ctx: click.Context, name: str, rebuild: bool, fit_id: str | None, weights: tuple[str, ...], guardrails: str,
             budget: float | None, exploration: float, min_leaf: float, as_json: bool) -> None:
    """List NAME's policies with their off-policy values; builds the set from the newest fit when needed."""
    from pex.report.text import render_policies
    from pex.services.catalog import policy_set
    from pex.services.policies import BuildOptions

    # a rebuild, or any build option given on the command line, means "build with it", never "ignore it"
    given = [p for p in ("weights", "guardrails", "budget", "exploration", "min_leaf")
             if ctx.get_parameter_source(p) not in (ParameterSource.DEFAULT, None)]
    parsed = parse_pairs("--weight", weights, "METRIC", "--weight sessions=1 --weight converted=0.5")
    options = (BuildOptions(weights=parsed, guardrails=guardrails, budget=budget, exploration=exploration,
                            min_leaf_share=min_leaf) if rebuild or given else None)
    found = policy_set(_workspace(ctx, create=False), name, fit_id=fit_id, options=options,
                       say=None if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        _echo_json({"fit": found.fit.id, "built": found.built, "report": found.report,
                    "policies": [{**r.to_dict(), "document": r.document, "evaluation": r.evaluation} for r in found.policies]})
    else:
        click.echo(render_policies([r.evaluation for r in found.policies if r.evaluation], found.report))


@cli.command()
@click.argument("name")
@click.argument("policy")
@click.option("--fit", "fit_id", default=None,
              help="Whose held-out units to evaluate on (default: the fit the policy was built from, else the newest).")
@click.option("--logged", "logged_path", default=None, type=click.Path(dir_okay=False),
              help="Value POLICY instead on this logged-feedback file (`pex decisions NAME --out FILE`): IPS and SNIPS "
                   "with the served propensities, beside the served policy's observed mean.")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.pass_context
def evaluate(ctx: click.Context, name: str, policy: str, fit_id: str | None, logged_path: str | None, as_json: bool) -> None:
    """Off-policy value of POLICY (stored name or JSON file) on NAME's held-out units, or with --logged on logged
    decisions, per metric with CIs."""
    from pex.report.text import render_evaluation, render_logged_evaluation
    from pex.services.evaluate import evaluate_logged, evaluate_policy

    if logged_path is not None and fit_id is not None:
        raise click.UsageError("--fit and --logged exclude each other: --logged values the policy on the logged decisions")
    if logged_path is not None:
        row = evaluate_logged(_lazy_workspace(ctx), name, policy, logged_path)
        render = render_logged_evaluation
    else:
        row = evaluate_policy(_lazy_workspace(ctx), name, policy, fit_id)
        render = render_evaluation
    if as_json:
        _echo_json(row)
    else:
        click.echo(render(row))


@cli.command()
@click.argument("policy")
@_units_file_options
@click.option("--unit", "unit", default=None, help="Unit id column (default: the experiment's unit column).")
@click.option("--seed", type=int, default=None,
              help="Salt of the exploration draws. Decisions are reproducible per unit: the same policy version, unit "
                   "and seed always give the same arm.")
@click.pass_context
def decide(ctx: click.Context, policy: str, data_path: str, out_path: str, unit: str | None, seed: int | None) -> None:
    """Batch decisions: write the unit column, the chosen arm and its propensity for every row of --data."""
    from pex.services.decisions import decide_file
    from pex.services.tables import check_output, write_table

    out = check_output(out_path, "decisions")
    made = decide_file(_lazy_workspace(ctx), policy, data_path, unit=unit, seed=seed)
    write_table(made.frame, out)
    click.echo(f"wrote {len(made.frame):,} decisions to {out} (policy {made.policy.name} v{made.policy.version}): "
               + ", ".join(f"{a} {share:.1%}" for a, share in made.shares().items()))


@cli.command(name="export")
@click.argument("policy")
@click.option("--format", "fmt", type=click.Choice(["sql", "json", "onnx"]), required=True,
              help="sql: one CASE expression giving each row's greedy arm (constant and tree policies); json: the document; "
                   "onnx: one ONNX graph from the raw features to each row's greedy arm and the arms' scores (value and tree "
                   "policies; needs --out).")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="File to write (default: standard output).")
@click.pass_context
def export_command(ctx: click.Context, policy: str, fmt: str, out_path: str | None) -> None:
    """Write POLICY (stored name or JSON file) for use outside pex: as SQL for a warehouse, as an ONNX model for any
    ONNX runtime, or its JSON document."""
    from pex.files import write_atomic
    from pex.services.exports import BINARY_FORMATS, export_policy

    if out_path is None and fmt in BINARY_FORMATS:
        raise PexError(f"--format {fmt} writes a binary file and needs --out",
                       f"e.g. pex export {policy} --format {fmt} --out policy.{fmt}")
    text, exported = export_policy(_lazy_workspace(ctx), policy, fmt)
    if out_path is None:
        click.echo(text, nl=False)
        return
    write_atomic(Path(out_path), text)
    click.echo(f"wrote {out_path} ({fmt}, policy {exported.name} v{exported.version})")


@cli.command(name="run")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Folder for summary.json, report.html and policies/ (default: pex-run-<experiment>).")
@click.option("--learner", type=click.Choice(["auto", "t", "x", "s", "dr"]), default="auto", show_default=True,
              help="Effect learner; auto fits all and keeps the best on held-out data per metric.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the models and the weight search: a re-run gives the same result. The held-out split does not "
                   "depend on it (its key is the dataset version's).")
@click.option("--crossfit/--no-crossfit", default=True, show_default=True,
              help="Fit twice, each on half the units, and certify routing policies on every unit (each unit decided by "
                   "the half that never saw it); --no-crossfit fits once and certifies on the --holdout share.")
@click.option("--holdout", type=click.FloatRange(min=0.05, max=0.9), default=None,
              help=f"With --no-crossfit: share of units kept out of every model, policies are certified on them [default: {HOLDOUT}].")
@click.option("--trials", type=click.IntRange(min=0), default=0, show_default=True,
              help="Ax weight vectors refining the dense sweep's front (0: the dense sweep alone, which finds the larger front offline).")
@click.option("--ax-seconds", "ax_seconds", type=click.FloatRange(min=1.0, max=20.0), default=20.0, show_default=True,
              help="Ax asks for no new batch of weight vectors after this many seconds (at most 20: offline it rarely earns more).")
@click.option("--dense", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Quasi-random weight vectors of the dense sweep (each valued at every treated-share cap).")
@click.option("--budget", type=click.FloatRange(min=0.0, max=1.0), default=None,
              help="Largest share of units a policy may give a non-control arm.")
@click.option("--certification", type=click.Choice(CERTIFICATIONS), default=CERTIFICATIONS[0], show_default=True,
              help="How the held-out test covers every candidate at once: graphical (the safest planned first with half "
                   "the error, the rest together with the other half, a pass handing its share on), gated (the safest "
                   "alone, the rest only once it passed), fixed-sequence (stop at the first failure) or step-down "
                   "(max-t over all candidates together).")
@click.option("--accept-srm", "accept_srm", default=None, metavar="REASON",
              help="Certify although the sample-ratio check failed, recording REASON (why the mismatch cannot bias the "
                   "comparison); without it a failed check keeps control.")
@click.option("--reason", default=None, metavar="TEXT",
              help="Why this run's recommendation should replace the earlier runs' on the same dataset version (recorded "
                   "and shown). Without it, a later run on the same data recommends the first run's recommendation.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the text report.")
@click.pass_context
def run_command(ctx: click.Context, spec: str, out: str | None, learner: str, seed: int, crossfit: bool, holdout: float | None,
                trials: int, ax_seconds: float, dense: int, budget: float | None, certification: str,
                accept_srm: str | None, reason: str | None, quiet: bool, as_json: bool) -> None:
    """The whole offline pipeline on SPEC: checks, effects, HTE, policies, weight search, recommendation, report."""
    from pex.services.policies import BuildOptions
    from pex.services.run import RunOptions, run

    if crossfit and holdout is not None:
        raise click.UsageError("--holdout sets the held-out share of a single fit, but cross-fitted runs certify on every "
                               "unit; add --no-crossfit to fit once with that share")
    options = RunOptions(learner=learner, seed=seed, holdout=HOLDOUT if holdout is None else holdout, trials=trials,
                         ax_seconds=ax_seconds, dense=dense, use_ax=trials > 0, certification=certification,
                         crossfit=crossfit, accept_srm=accept_srm, build=BuildOptions(budget=budget), reason=reason)
    quiet = quiet or as_json
    result = run(spec, out, home=ctx.obj.get("home"), options=options, say=None if quiet else (lambda m: click.echo(m, err=True)),
                 progress=None if quiet else _Progress())
    if as_json:
        _echo_json(result.summary)
    else:
        _print_run(result)


@cli.command()
@click.argument("name")
@click.option("--fit", "fit_id", default=None, help="Fit id to search on (default: the newest fit of NAME).")
@click.option("--trials", type=click.IntRange(min=0), default=0, show_default=True,
              help="Ax weight vectors refining the dense sweep's front (0: the dense sweep alone, which finds the larger front offline).")
@click.option("--dense", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Quasi-random weight vectors of the dense sweep (each valued at every treated-share cap).")
@click.option("--ax-seconds", "ax_seconds", type=click.FloatRange(min=1.0, max=20.0), default=20.0, show_default=True,
              help="Ax asks for no new batch of weight vectors after this many seconds (at most 20: offline it rarely earns more).")
@click.option("--candidates", type=click.IntRange(min=1, max=20), default=2, show_default=True,
              help="Pareto points turned into stored, evaluated value policies (each is one more candidate to certify).")
@click.option("--budget", type=click.FloatRange(min=0.0, max=1.0), default=None,
              help="Largest share of units a policy may give a non-control arm.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the fronts and the candidates' evaluation as JSON.")
@click.pass_context
def optimize(ctx: click.Context, name: str, fit_id: str | None, trials: int, dense: int, ax_seconds: float, candidates: int,
             budget: float | None, seed: int, as_json: bool) -> None:
    """Offline policy search on NAME's fit: the Pareto set of value-model policies (a dense sweep of weights; --trials N adds Ax)."""
    from pex.report.text import render_policies, render_tuning
    from pex.services.optimize import optimize as optimize_weights
    from pex.services.policies import BuildOptions
    from pex.services.run import RunOptions

    options = RunOptions(seed=seed, trials=trials, dense=dense, candidates=candidates, use_ax=trials > 0, ax_seconds=ax_seconds,
                         build=BuildOptions(budget=budget, seed=seed))
    fit, result, rows = optimize_weights(_workspace(ctx, create=False), name, options, fit_id,
                                         say=None if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        _echo_json({"fit": fit, "search": result.to_dict(), "policies": rows})
        return
    click.echo(render_tuning(result.to_dict()))
    if rows:
        click.echo("")
        click.echo(render_policies(rows, None))


@cli.command()
@click.argument("name")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.pass_context
def report(ctx: click.Context, name: str, out_path: str) -> None:
    """Write the offline evaluation report (one self-contained HTML file) of NAME's newest `pex run`."""
    from pex.services.reports import write_report

    summary = write_report(_workspace(ctx, create=False), name, out_path)
    click.echo(f"wrote {out_path} (run of {summary.generated_at}, recommended: {summary.recommended_policy})")


# commands of their own modules (the serving side, and the logged feedback it produces)
from pex.cli import feedback, init, online, serving  # noqa: E402  (they need `cli` to exist)

feedback.register(cli)
init.register(cli)
online.register(cli)
serving.register(cli)

from pex.cli import jobs as jobs_cli  # noqa: E402  (`pex worker`, `pex jobs list|show|cancel|rerun`)

jobs_cli.register(cli)

from pex.cli import ui as ui_cli  # noqa: E402  (`pex ui`: the web UI with its job worker)

ui_cli.register(cli)

# the live lifecycle: staged rollouts, monitoring, alert rules, retraining from the decision log
from pex.cli import check as check_cli  # noqa: E402
from pex.cli import monitoring as monitoring_cli  # noqa: E402
from pex.cli import retrain as retrain_cli  # noqa: E402
from pex.cli import rollout as rollout_cli  # noqa: E402

for _module in (check_cli, monitoring_cli, retrain_cli, rollout_cli):
    _module.register(cli)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 2 bad input)."""
    try:
        cli.main(args=argv, prog_name="pex", standalone_mode=False)
    except PexError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return 2
    except OSError as exc:
        # files and folders the user named: not writable, not a directory, disk full
        if _state["verbose"]:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        click.echo("hint: check that the path exists, is the right kind (file or folder) and is writable", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "pex"
        click.echo(f"error: {exc.format_message()}", err=True)
        click.echo(f"hint: see `{command} --help`", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def entry() -> None:
    """The console script: SIGTERM, and SIGINT even when inherited ignored (a background job), stop a command
    cleanly: the interrupt unwinds through every ``finally`` (temporary files removed, transactions rolled back)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    sys.exit(main())
