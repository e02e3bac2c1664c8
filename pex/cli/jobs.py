"""Commands of the background jobs: `pex worker` runs them, `pex jobs list|show|cancel|rerun` looks after them."""

from __future__ import annotations

import getpass
import signal
from pathlib import Path

import click

from pex.cli.common import _echo_json, _workspace


def cli_actor() -> str:
    """Who is asking, as jobs record it: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli:unknown"


@click.command()
@click.option("--poll", type=click.FloatRange(min=0.1, max=60.0), default=1.0, show_default=True,
              help="Seconds between looks for a queued job when idle.")
@click.option("--once", is_flag=True, help="Mark dead workers' jobs interrupted, refresh the monitor's counts, run at "
                                           "most one queued job, then exit.")
@click.pass_context
def worker(ctx: click.Context, poll: float, once: bool) -> None:
    """Run queued jobs (pipeline runs, online rounds), one at a time, each in a child process.

    SIGTERM or Ctrl-C stops it: it claims no more jobs and stops the running one, which ends 'interrupted'
    (run it again with `pex jobs rerun ID`).
    """
    from pex.services.worker import Worker

    ws = _workspace(ctx, create=True)  # opened (and migrated) here, so that a bad PEX_HOME fails with exit 2 at once
    runner = Worker(Path(ws.home), poll=poll)

    def stop(_signum: int, _frame: object) -> None:
        runner.stopping.set()

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if once:
            ended = runner.once(ws)
            click.echo("no job queued" if ended is None else f"job {ended.id} {ended.status}")
        else:
            runner.loop()
    finally:  # (in-process callers, e.g. tests, get their own handlers back)
        for sig, handler in before.items():
            signal.signal(sig, handler)


@click.group()
def jobs() -> None:
    """Background jobs: pipeline runs and online rounds asked for in the UI (or here), run by `pex worker`."""


def _job_id(value: str) -> int:
    if not value.isdigit():
        from pex.errors import PexError

        raise PexError(f"a job id is a number, got {value!r}", "`pex jobs list` shows the jobs and their ids")
    return int(value)


@jobs.command("list")
@click.option("--experiment", default=None, help="Only this experiment's jobs.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def jobs_list(ctx: click.Context, experiment: str | None, limit: int, as_json: bool) -> None:
    """Jobs newest first."""
    from pex.services.jobs import list_jobs

    ws = _workspace(ctx, create=False)
    if experiment is not None:
        ws.dataset_version(experiment)  # an unknown experiment is an error with the known names, not an empty list
    found = list_jobs(ws, experiment=experiment, limit=limit)
    if as_json:
        _echo_json([j.to_dict() for j in found])
        return
    if not found:
        click.echo("no jobs yet")
    for j in found:
        progress = f"{j.stage or '-'} {j.fraction:.0%}" if j.status == "running" else (f"run {j.run_id}" if j.run_id else "")
        click.echo(f"{j.id:>5}  {j.status:<11}  {j.kind:<15}  {j.experiment or '-':<24}  {j.created_at:%Y-%m-%d %H:%M}  "
                   f"{j.actor:<20}  {progress}")


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """One job: status, stage, progress, log tail, error and hint."""
    from pex.services.jobs import get_job

    job = get_job(_workspace(ctx, create=False), _job_id(job_id))
    if as_json:
        _echo_json(job.to_dict())
        return
    click.echo(f"job {job.id}: {job.kind} {job.experiment or ''} - {job.status}"
               + (" (cancel requested)" if job.cancel_requested and not job.finished else ""))
    click.echo(f"  asked by {job.actor} at {job.created_at:%Y-%m-%d %H:%M:%S} UTC; parameters {job.params}")
    if job.stage:
        click.echo(f"  stage {job.stage} ({job.fraction:.0%}): {job.message or ''}")
    if job.run_id is not None:
        click.echo(f"  run {job.run_id}")
    if job.error:
        click.echo(f"  error: {job.error}")
    if job.hint:
        click.echo(f"  hint: {job.hint}")
    for line in job.log_tail:
        click.echo(f"  | {line}")


@jobs.command("cancel")
@click.argument("job_id")
@click.pass_context
def jobs_cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a queued job, or ask the worker to stop a running one."""
    from pex.services.jobs import cancel

    job = cancel(_workspace(ctx, create=True), _job_id(job_id), cli_actor())
    click.echo(f"job {job.id} cancelled" if job.status == "cancelled"
               else f"job {job.id}: cancel requested; its worker stops it within seconds")


@jobs.command("rerun")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the new job as JSON.")
@click.pass_context
def jobs_rerun(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Queue a failed, cancelled or interrupted job again (a new job with the same parameters)."""
    from pex.services.jobs import rerun

    job = rerun(_workspace(ctx, create=True), _job_id(job_id), cli_actor())
    if as_json:
        _echo_json(job.to_dict())
        return
    click.echo(f"queued job {job.id} ({job.kind} {job.experiment}); `pex worker` runs it")


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(worker)
    cli.add_command(jobs)
