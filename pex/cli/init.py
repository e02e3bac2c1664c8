"""``pex init DATA``: propose an experiment spec from a table's columns and write it next to the data."""

from __future__ import annotations

import shlex

import click

from pex.cli.common import _echo_json


@click.command(name="init")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Experiment name (default: made from DATA's file name).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Spec file to write (default: DATA's name with .toml).")
@click.option("--force", is_flag=True, help="Overwrite the spec file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the proposed spec and the reasons as JSON.")
def init_command(data: str, name: str | None, out_path: str | None, force: bool, as_json: bool) -> None:
    """Propose a spec for DATA (CSV or Parquet, one row per unit) and write it, saying why for every guess.

    pex guesses the unit id, the arm and its control, the metrics (goal and role; guardrails get max_harm 0.05),
    pre-period covariates, features and the planned split from the columns' names and values. Read the spec, correct
    it, then run `pex run SPEC`.
    """
    from pex.services.upload import init_spec

    done = init_spec(data, name=name, out=out_path, force=force)
    if as_json:
        _echo_json(done.to_dict())
        return
    shown = shlex.quote(click.format_filename(done.spec_path))  # a command to paste, spaces and all
    click.echo(f"wrote {shown}; pex guessed, check each line:")
    for note in done.notes:
        click.echo(f"  {note['field']}: {note['reason']}")
    if done.problem:
        click.echo(f"the data does not pass as proposed: {done.problem.message}", err=True)
        if done.problem.hint:
            click.echo(f"hint: {done.problem.hint}", err=True)
        click.echo(f"fix it (spec key {done.problem.field or 'data'}), then: pex run {shown}")
    else:
        click.echo(f"next: pex run {shown}")


def register(cli: click.Group) -> None:
    """Add ``pex init`` to the command line."""
    cli.add_command(init_command)
