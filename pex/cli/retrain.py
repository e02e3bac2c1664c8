"""`pex retrain NAME`: a new dataset version from the decision log joined with outcomes, fitted, certified and proposed as a canary."""

from __future__ import annotations

from datetime import datetime

import click

from pex.cli.common import _echo_json, _workspace


def _percent(value: float, option: str) -> float:
    if not 0 < value <= 100:
        raise click.BadParameter(f"{value:g} is not a percentage in (0, 100]", param_hint=option)
    return value / 100


def _ramp(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """``5,25,50,100`` as shares of traffic."""
    if value is None:
        return None
    try:
        steps = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of percentages, e.g. 5,25,50,100") from None
    return [_percent(v, "--ramp") for v in steps]


@click.command(name="retrain")
@click.argument("name")
@click.option("--pool", is_flag=True, help="Append the experiment's original randomized data to the logged units.")
@click.option("--policy", default=None, help="Only the decisions of this policy (default: NAME's live policies).")
@click.option("--since", type=click.DateTime(), default=None,
              help="Only units first decided at or after this time (UTC unless the value says otherwise).")
@click.option("--canary", type=float, default=5.0, show_default=True,
              help="Percent of traffic the certified recommendation starts with.")
@click.option("--ramp", callback=_ramp, default=None, help="The canary's later steps in percent, e.g. 5,25,50,100.")
@click.option("--holdout", type=float, default=5.0, show_default=True,
              help="Percent of traffic kept on control while the canary runs (guardrail harm is measured against it).")
@click.option("--no-canary", "no_canary", is_flag=True, help="Report the proposal without starting it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def retrain_command(ctx: click.Context, name: str, pool: bool, policy: str | None, since: datetime | None, canary: float,
                    ramp: list[float] | None, holdout: float, no_canary: bool, seed: int, quiet: bool, as_json: bool) -> None:
    """Retrain NAME from its decision log: the served units with their outcomes and logged propensities become a new
    dataset version, the pipeline fits and certifies policies on it, and a certified recommendation starts as a
    canary (never at 100%). Each unit counts once, with its first decision; units without outcomes are dropped
    and counted."""
    from pex.services.retrain import retrain

    share = None if no_canary else _percent(canary, "--canary")
    if not 0 <= holdout < 100:
        raise click.BadParameter(f"{holdout:g} is not a percentage in [0, 100)", param_hint="--holdout")
    quiet = quiet or as_json
    result = retrain(_workspace(ctx, create=False), name, pool=pool, canary=share, ramp=ramp, holdout=holdout / 100,
                     seed=seed, policy=policy, since=since, say=None if quiet else (lambda m: click.echo(m, err=True)))
    if as_json:
        _echo_json(result)
        return
    dv, rec, proposal = result["dataset_version"], result["recommendation"], result["canary"]
    click.echo(f"dataset version {dv['version']} of {name}: {result['log']['n_units']:,} units ({dv['source']})")
    for note in result["log"]["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"run {result['run']}: {rec['headline']}")
    click.echo(f"recommended: {rec['policy']} v{rec['version']} ({'certified' if rec['certified'] else 'not certified'})")
    click.echo(f"canary: {proposal['reason']}")
    if proposal.get("hint"):
        click.echo(f"hint: {proposal['hint']}")


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(retrain_command)
