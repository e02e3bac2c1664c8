"""Commands for the feedback a served policy produces: outcomes in, logged decisions out."""

from __future__ import annotations

import click

from pex.cli.common import _workspace


@click.command(name="outcomes")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def outcomes_command(ctx: click.Context, name: str, file: str) -> None:
    """Record outcomes of NAME's units from FILE (CSV or Parquet), all or none.

    Two layouts: long, with columns unit (or NAME's unit column), metric and value, a row per outcome; or wide,
    with the unit column and a column per metric (named as NAME's metrics; an empty cell is no outcome, other
    columns are ignored). A unit may report a metric again: the latest value recorded counts.
    """
    from pex.services.outcomes import experiment_spec, read_outcome_file, record_outcomes

    ws = _workspace(ctx, create=False)
    read = read_outcome_file(file, experiment_spec(ws, name))
    # a file is one transaction however long; the per-call bound is for HTTP requests
    n = record_outcomes(ws, name, read.records, max_records=None, where=read.where(click.format_filename(file, shorten=True)))
    click.echo(f"recorded {n:,} outcomes for {name}")
    if read.skipped:
        click.echo(f"({read.layout} file: {', '.join(read.metrics)}; {read.skipped:,} empty cells are no outcome)")


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(outcomes_command)
