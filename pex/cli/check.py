"""`pex check [NAME]`: every alert rule, one line per firing rule, non-zero exit when any fires."""

from __future__ import annotations

import click

from pex.cli.common import _echo_json, _workspace


class AlertsFiring(click.ClickException):
    """Exit code 1 (an alert fires) through pex's CLI runner, which returns a ClickException's ``exit_code``; the
    alert lines are already printed, so it shows nothing more."""

    exit_code = 1

    def __init__(self) -> None:
        super().__init__("alerts fire")

    def show(self, file: object = None) -> None:
        """Nothing to add: the lines above are the message."""


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(check)


@click.command()
@click.argument("name", required=False)
@click.option("--url", default=None, help="Also check this `pex serve` (its /readyz and /metrics), e.g. "
                                          "http://127.0.0.1:8000.")
@click.option("--token", default=None, envvar="PEX_TOKEN",
              help="An admin token for --url (or PEX_TOKEN): /metrics and the cause of a not-ready answer need it.")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts and the parts not checked as JSON.")
@click.pass_context
def check(ctx: click.Context, name: str | None, url: str | None, token: str | None, as_json: bool) -> None:
    """Evaluate every alert rule (readiness, 5xx rate, decision-log backlog, outcome lag, drift, staleness, live
    guardrail harm, offline/online disagreement, missing monitor reports) for every experiment, or NAME's (an
    experiment or a live policy). Prints one line per firing alert with its owner and on-call; exits 1 when any
    fires, 0 when none does, 2 on bad input. The rules and their fixes are in docs/operations.md."""
    from pex.services.checks import check as run

    done = run(_workspace(ctx, create=False), name, url=url, token=token)
    if as_json:
        _echo_json(done.to_dict())
    else:
        for alert in done.alerts:
            click.echo(alert.to_line())
        for line in done.not_checked:
            click.echo(line)
        if not done.alerts:
            click.echo("all clear: no alert fires" + (f" ({len(done.not_checked)} part(s) not checked, above)"
                                                      if done.not_checked else ""))
    if done.alerts:
        raise AlertsFiring
