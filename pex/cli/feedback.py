"""Commands for the feedback a served policy produces: outcomes in, logged decisions out."""

from __future__ import annotations

import click

from pex.cli.common import _echo_json, _workspace


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


@click.command(name="decisions")
@click.argument("name")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Logged-feedback file to write (.csv or .parquet).")
@click.option("--policy", default=None, help="Only the decisions of this policy (default: every policy of NAME).")
@click.option("--version", "version", type=int, default=None, help="Only this version of --policy.")
@click.option("--json", "as_json", is_flag=True, help="Print the join's counts as JSON.")
@click.pass_context
def decisions_command(ctx: click.Context, name: str, out_path: str, policy: str | None, version: int | None,
                      as_json: bool) -> None:
    """Write NAME's logged decisions joined with its outcomes: the logged feedback `pex evaluate --logged` reads.

    A row per (policy version, unit), its first decision: decision_id, decided_at, unit, policy, version, arm,
    propensity, the features the request sent, and a column per metric with the unit's latest outcome (empty
    when none came back). See docs/logged-feedback.md.
    """
    from pex.services.feedback import feedback_table
    from pex.services.tables import check_output, write_table

    out = check_output(out_path, "logged")
    joined = feedback_table(_workspace(ctx, create=False), name, policy, version)
    write_table(joined.frame, out)
    if as_json:
        _echo_json({**joined.summary(), "out": str(out)})
        return
    rows = len(joined.frame)
    with_outcome = ", ".join(f"{m} {n:,}" for m, n in joined.with_outcome.items())
    versions = ", ".join(f"{k} ({v:,})" for k, v in joined.versions.items())
    click.echo(f"wrote {rows:,} logged decisions of {name} to {out}; with an outcome: {with_outcome}; policies: {versions}")
    notes = []
    missing = {m: rows - n for m, n in joined.with_outcome.items() if n < rows}
    if missing:
        notes.append("no outcome yet (empty cells): " + ", ".join(f"{m} {n:,}" for m, n in missing.items()))
    if joined.repeats:
        notes.append(f"{joined.repeats:,} repeated decisions of a unit by the same policy version collapsed into its first"
                     + (f" ({joined.changed_arm:,} units got another arm later: their features changed)"
                        if joined.changed_arm else ""))
    if joined.outcomes_replaced:
        notes.append(f"{joined.outcomes_replaced:,} outcomes superseded by a later one of the same unit and metric")
    if joined.crossed_units:
        notes.append(f"{joined.crossed_units:,} units were decided by more than one policy version and share their outcome; "
                     "evaluate with one version (--policy P --version V) if that matters")
    if joined.units_without_decision:
        notes.append(f"{joined.units_without_decision:,} units with outcomes have no decision here")
    for note in notes:
        click.echo(f"note: {note}")


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(outcomes_command)
    cli.add_command(decisions_command)
