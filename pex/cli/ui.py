"""``pex ui``: the web UI for experiment owners, in its own gunicorn server next to ``pex serve``, with one job
worker (``pex worker``) beside it.

The UI runs in its own processes so that a large upload or a slow page never holds a worker that answers decisions.
``pex ui`` stays the parent of both children (it cannot simply become gunicorn, as ``pex serve`` does: there are two
programs to run and to stop together): it forwards SIGTERM and SIGINT to both, waits for them, and stops the other
when one ends on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from pex.cli.common import _workspace

# how long the children get to stop after SIGTERM before they are killed: gunicorn's graceful timeout (30 s) for
# requests in flight, and the worker's time to stop its running job cleanly
STOP_SECONDS = 45.0
WORKER_ARGV = [sys.executable, "-c", "from pex.cli.main import entry; entry()", "worker"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(min=1, max=65535), default=8001, show_default=True)
@click.option("--workers", type=click.IntRange(min=1, max=64), default=2, show_default=True,
              help="gunicorn worker processes serving the pages.")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=4, show_default=True,
              help="Request threads per worker process (an upload holds one while it arrives).")
@click.option("--no-worker", is_flag=True,
              help="Do not start a job worker: run `pex worker` yourself (jobs wait queued until one runs).")
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, workers: int, threads: int, no_worker: bool) -> None:
    """Serve the web UI: experiments, uploads, pipeline runs as jobs, policies, the live monitor.

    Log in with a `view` or `admin` token (`pex token create --scope view --name alice`). Upgrades the workspace's
    schema if needed; on a workspace with no token, creates an admin token and prints it once. Starts one job worker
    (`pex worker`) unless --no-worker. SIGTERM or Ctrl-C stops both: requests in flight finish, and a running job
    stops cleanly (nothing half-written) and ends 'interrupted', to be run again from its page.
    """
    from pex.services.access import first_start_token
    from pex.services.settings import load_config

    load_config()  # bad PEX_* settings or PEX_CONFIG file: exit 2 here, not a worker that fails to boot
    from pex.cli.serving import _check_port_free

    _check_port_free(host, port)
    ws = _workspace(ctx, create=True)  # creates or upgrades the schema before any process opens it
    token = first_start_token(ws)
    if token is not None:
        click.echo("created an admin token (shown only now; store it safely; log in with it):", err=True)
        click.echo(token)
    home = str(ws.home)
    ws.close()
    env = {**os.environ, "PEX_HOME": home}
    server = [sys.executable, "-m", "gunicorn", "--config", "python:web.ui.gunicorn_conf", "--workers", str(workers),
              "--threads", str(threads), "--bind", f"{host}:{port}", "web.ui:create_ui_app()"]
    _supervise(server, None if no_worker else WORKER_ARGV, env, f"http://{host}:{port}/ui/", workers, threads)


def _supervise(server: list[str], worker: list[str] | None, env: dict[str, str], url: str, workers: int,
               threads: int) -> None:
    """Run gunicorn and the job worker as children until SIGTERM/SIGINT (then return) or until one of them ends
    on its own (then stop the other and raise a PexError: exit 2)."""
    from pex.errors import PexError

    stopping: list[int] = []

    def forward(signum: int, frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: dict[str, subprocess.Popen] = {}
    try:
        children["gunicorn"] = subprocess.Popen(server, env=env)
        if worker is not None:
            children["worker"] = subprocess.Popen(worker, env=env)
        how = f"gunicorn, {workers} worker{'s' if workers != 1 else ''} x {threads} threads"
        job = f"job worker pid {children['worker'].pid}" if worker is not None else "no job worker (--no-worker)"
        click.echo(f"serving the UI on {url} ({how}; {job})", err=True)
        sys.stderr.flush()
        ended: tuple[str, int] | None = None
        while not stopping and ended is None:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    ended = (name, code)
                    break
            else:
                time.sleep(0.2)
        _stop(children, signal.SIGTERM)
        if ended is not None:
            name, code = ended
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise PexError(f"the UI's {name} stopped ({how}), so pex ui stopped the rest",
                           "its messages above say why; start `pex ui` again")
    finally:
        _stop(children, signal.SIGKILL, wait=5.0)  # anything still running after the grace period
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(children: dict[str, subprocess.Popen], sig: int, wait: float = STOP_SECONDS) -> None:
    """Send ``sig`` to every running child and wait up to ``wait`` seconds for all of them."""
    for child in children.values():
        if child.poll() is None:
            try:
                child.send_signal(sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + wait
    for child in children.values():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def register(cli: click.Group) -> None:
    """Add ``pex ui`` to the ``pex`` group."""
    cli.add_command(ui)
