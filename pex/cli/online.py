"""Commands of the online loop (`pex online start|complete|status|promote`) and the traffic simulator."""

from __future__ import annotations

import click

from pex.cli.common import _echo_json, _workspace, parse_pairs
from pex.experiment.simulate import SCENARIOS
from pex.online.spending import DEFAULT_ROUNDS


@click.group()
def online() -> None:
    """The online optimization loop: candidate policies as live arms, Ax proposing each next round."""


@online.command()
@click.argument("name")
@click.option("--arms", type=click.IntRange(min=1, max=16), default=4, show_default=True, help="Candidate arms per round.")
@click.option("--holdout", type=float, default=0.2, show_default=True, help="Share of units kept on control, the comparison.")
@click.option("--from-offline", is_flag=True, help="Round 1 from the offline Pareto candidates instead of Ax's quasi-random points.")
@click.option("--exploration", type=float, default=0.05, show_default=True, help="Exploration of every arm.")
@click.option("--method", type=click.Choice(["fast", "random_search"]), default="fast", show_default=True,
              help="How Ax proposes: Bayesian optimization (fast) or quasi-random points (random_search, a baseline).")
@click.option("--rounds", type=int, default=DEFAULT_ROUNDS, show_default=True,
              help="Planned rounds: the loop's 5% error budget is split equally over them, and no round opens beyond.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the loop's status as JSON.")
@click.pass_context
def start(ctx: click.Context, name: str, arms: int, holdout: float, from_offline: bool, exploration: float, method: str,
          rounds: int, seed: int, as_json: bool) -> None:
    """Start NAME's loop: round 1's arms are built from the newest fit and served as NAME-online."""
    from pex.services.online import LoopOptions, start_loop

    options = LoopOptions(arms=arms, holdout=holdout, from_offline=from_offline, exploration=exploration, seed=seed,
                          method=method, rounds=rounds)
    found = start_loop(_workspace(ctx, create=True), name, options, say=lambda m: click.echo(m, err=True))
    _show(found, as_json)


@online.command()
@click.argument("name")
@click.option("--next", "next_round", is_flag=True, help="Then open the next round with Ax's new proposals.")
@click.option("--abandon-empty", is_flag=True, help="Complete even if some arm has too few outcomes (its trial is abandoned).")
@click.option("--json", "as_json", is_flag=True, help="Print the loop's status as JSON.")
@click.pass_context
def complete(ctx: click.Context, name: str, next_round: bool, abandon_empty: bool, as_json: bool) -> None:
    """Measure NAME's open round from the decision log and the outcomes, and tell Ax."""
    from pex.services.online import complete_round

    found = complete_round(_workspace(ctx, create=True), name, next_round=next_round, abandon_empty=abandon_empty,
                           say=lambda m: click.echo(m, err=True))
    _show(found, as_json)


@online.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, name: str, as_json: bool) -> None:
    """Rounds, arms, lifts with CIs, guardrail verdicts, the Pareto front and the best arm so far."""
    from pex.services.online import status as loop_status

    _show(loop_status(_workspace(ctx, create=False), name), as_json)


@online.command()
@click.argument("name")
@click.argument("arm", required=False)
@click.option("--force", is_flag=True, help="Publish ARM even if its guardrails are not certified.")
@click.option("--json", "as_json", is_flag=True, help="Print the promotion as JSON.")
@click.pass_context
def promote(ctx: click.Context, name: str, arm: str | None, force: bool, as_json: bool) -> None:
    """Publish the best arm so far (or ARM, e.g. r2-a3, or control) as NAME-online."""
    from pex.services.online import promote as promote_arm

    found = promote_arm(_workspace(ctx, create=True), name, arm, force=force)
    if as_json:
        _echo_json(found)
    else:
        click.echo(f"{found['policy']} v{found['version']} is live: {found['promoted']}")
        click.echo(f"  why: {found['why']}")


@click.command(name="simulate-traffic")
@click.argument("name")
@click.option("--url", required=True, help="The server, e.g. http://127.0.0.1:8000.")
@click.option("--token", required=True, envvar="PEX_TOKEN", help="A decide-scope API token (or PEX_TOKEN).")
@click.option("--units", type=click.IntRange(min=1), required=True, help="Simulated users.")
@click.option("--days", type=click.IntRange(min=1), default=1, show_default=True, help="Simulated days they arrive over.")
@click.option("--policy", default=None, help="Policy to ask (default: NAME-online, the loop's).")
@click.option("--scenario", type=click.Choice(SCENARIOS), default="notification_cadence", show_default=True,
              help="pex.simulate scenario of the users.")
@click.option("--missing", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="Share of users whose outcomes never arrive.")
@click.option("--pace", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Real seconds between simulated days.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the users (new ids per seed).")
@click.option("--shift", "shifts", multiple=True, metavar="FEATURE=AMOUNT",
              help="Send a numeric feature moved by AMOUNT (drift; repeatable). Outcomes stay the users' own.")
@click.option("--feature-missing", "blanks", multiple=True, metavar="FEATURE=SHARE",
              help="Send a feature missing for SHARE of the users (0-1; repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def simulate_traffic(name: str, url: str, token: str, units: int, days: int, policy: str | None, scenario: str,
                     missing: float, pace: float, seed: int, shifts: tuple[str, ...], blanks: tuple[str, ...],
                     as_json: bool) -> None:
    """Play simulated users of experiment NAME against a running server: decisions, then their true outcomes.

    POLICY may be any served name, e.g. a policy under a staged rollout (`pex publish POLICY --canary ...`): the
    server routes each user to the canary, the base or the holdout."""
    from pex.online.traffic import Client, play, population

    sim = population(name, units, scenario, seed, shift=parse_pairs("--shift", shifts, "FEATURE", "--shift age=10"),
                     missing_features=parse_pairs("--feature-missing", blanks, "FEATURE", "--feature-missing age=0.3"))
    result = play(Client(url, token), name, policy or f"{name}-online", sim, unit_column="user_id", days=days,
                  missing=missing, seed=seed, pace=pace, say=lambda m: click.echo(m, err=True))
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(f"{result.decisions:,} decisions ({', '.join(f'{a} {n:,}' for a, n in sorted(result.arms.items()))}); "
                   f"{result.outcomes_posted:,} outcomes posted, {result.units_without_outcomes:,} users never reported")


def _show(found: dict, as_json: bool) -> None:
    if as_json:
        _echo_json(found)
        return
    from pex.report.online import status_text

    click.echo(status_text(found))


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(online)
    cli.add_command(simulate_traffic)
