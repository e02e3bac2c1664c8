"""`pex monitor NAME [--watch]`: drift, staleness and live guardrails of live policies."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click

from pex.cli.common import _echo_json, _workspace


@click.command(name="monitor")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--watch", is_flag=True, help="Keep checking: every running rollout and every live policy's report, "
              "every --every seconds, until Ctrl-C.")
@click.option("--every", type=click.FloatRange(min=1.0), default=60.0, show_default=True,
              help="Seconds between two checks of --watch.")
@click.option("--no-store", is_flag=True, help="Do not keep the report (by default /metrics and `pex check` read it).")
@click.pass_context
def monitor_command(ctx: click.Context, name: str | None, as_json: bool, watch: bool, every: float, no_store: bool) -> None:
    """Compare live policy NAME's served traffic with its training data: per feature the population-stability
    index (numeric) or Jensen-Shannon distance (categorical), missing and unseen-category rates; the served arm
    shares against the policy's own; and whether the policy or its data is older than the spec's max_age_days.

    With --watch (NAME not needed), check every running rollout (advance, complete or roll back) and refresh the
    report of every live policy, every --every seconds, printing what each round did.
    """
    if watch:
        _watch(ctx, every, as_json)
        return
    if name is None:
        raise click.UsageError("name a live policy (or pass --watch)")
    from pex.services.monitoring import monitor

    report = monitor(_workspace(ctx, create=False), name, store=not no_store)
    if as_json:
        _echo_json(report)
    else:
        click.echo("\n".join(report_lines(report)))


def _watch(ctx: click.Context, every: float, as_json: bool) -> None:
    from pex.services.watch import tick  # the rollout watcher's round (pex.services.rollout)

    ws = _workspace(ctx, create=False)
    say = None if as_json else click.echo
    try:
        while True:
            done = tick(ws, say=say)
            if as_json:
                _echo_json(done)
            else:
                refreshed = [name for name, what in done.get("monitored", {}).items() if what == "refreshed"]
                click.echo(f"{datetime.now(UTC):%H:%M:%S}Z: {len(done.get('rollouts', {}))} running rollout(s) checked; "
                           f"reports refreshed: {', '.join(refreshed) or 'none due'}")
            time.sleep(every)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as text: a head line, one line per feature with its figures and verdict, arms, staleness."""
    who = ", ".join(x for x in (report.get("owner") and f"owner {report['owner']}",
                                report.get("oncall") and f"on-call {report['oncall']}") if x)
    lines = [f"{report['policy']} v{report['version']} ({report['experiment']}): {report['decisions']:,} decisions "
             f"since {report['since'][:19]}Z" + (f"; {who}" if who else "")]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    section = report["drift"]
    for row in section["features"]:
        figures = [f"{key} {_num(row[key])}" for key in ("psi", "js") if row.get(key) is not None]
        if row.get("missing_rate") is not None:
            figures.append(f"missing {row['missing_rate']:.1%} (training {row['training_missing_rate']:.1%})")
        if row.get("unseen_rate") is not None:
            figures.append(f"unseen {row['unseen_rate']:.1%}")
        verdict = f"DRIFTED ({', '.join(row['flags'])})" if row["drifted"] else row["verdict"]
        lines.append(f"  {row['feature']:<24} {row['kind']:<11} {'  '.join(figures) or '-':<60} {verdict}")
    arms = report["arms"]
    if arms.get("expected"):
        shares = ", ".join(f"{arm} {share:.1%} (expected {arms['expected'].get(arm, 0.0):.1%})"
                           for arm, share in arms["served"].items())
        lines.append(f"arms: {shares}; PSI {_num(arms['psi'])}" + ("  FLAGGED" if arms["flag"] else ""))
    age = report["staleness"]
    state = f"STALE ({' and '.join(age['why'])} too old)" if age["stale"] else "fresh"
    lines.append(f"age: policy {_num(age['policy_age_days'])} days, data {_num(age['data_age_days'])} days, "
                 f"max {age['max_age_days']}: {state}")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(monitor_command)
