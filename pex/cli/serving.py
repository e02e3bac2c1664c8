"""Commands for serving policies: the HTTP server, publishing versions, API tokens."""

from __future__ import annotations

import itertools
import os
import sys

import click

from pex.cli.common import _echo_json, _workspace


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(min=1, max=65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1, max=64), default=2, show_default=True,
              help="gunicorn worker processes (each holds the live policies and its own decision-log buffer).")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=4, show_default=True,
              help="Request threads per worker. A request holds one while its body is read and it is answered; idle "
                   "and half-sent connections hold none. Decisions are CPU work under Python's GIL, so more threads "
                   "add no speed; they absorb clients that send their bodies slowly.")
@click.option("--dev", is_flag=True, help="Flask's own single-process server instead of gunicorn (for development).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int, threads: int, dev: bool) -> None:
    """Serve the JSON API: decisions from published policies (every one logged), outcomes, publishing.

    Upgrades the workspace's schema if needed. On the first start with no API token, creates an admin token
    and prints it once. SIGTERM stops it gracefully: requests in flight finish and every decision is logged.
    """
    from pex.services.access import first_start_token
    from pex.services.settings import load_config

    load_config()  # bad PEX_* settings or PEX_CONFIG file: exit 2 here, not a worker that fails to boot
    _check_port_free(host, port)
    ws = _workspace(ctx, create=True)  # creates or upgrades the schema before any worker opens it read-only
    if not ws.live_versions():
        click.echo("note: no policy is published yet, so every decide answers 404; `pex publish POLICY` makes one "
                   "live and running servers pick it up within seconds", err=True)
    token = first_start_token(ws)
    if token is not None:
        click.echo("created an admin token (shown only now; store it safely):", err=True)
        click.echo(token)
    env = dict(os.environ)
    if ctx.obj.get("home"):
        env["PEX_HOME"] = ctx.obj["home"]
    if dev:
        argv = [sys.executable, "-m", "web.dev", "--host", host, "--port", str(port)]
    else:
        from pex.services.metrics_folder import prepare

        # prometheus-client's multiprocess mode: a folder of value files on tmpfs named after this process, which
        # becomes gunicorn's master by exec (never in the workspace, never another server's; removed on exit)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare(os.getpid()))
        argv = [sys.executable, "-m", "gunicorn", "--config", "python:web.gunicorn_conf", "--workers", str(workers),
                "--threads", str(threads), "--bind", f"{host}:{port}", "web:create_app()"]
    how = "Flask dev server" if dev else f"gunicorn, {workers} workers x {threads} threads"
    click.echo(f"serving on http://{host}:{port} ({how})", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    ws.close()
    # the server replaces this process, so signals reach it directly
    os.execve(sys.executable, argv, env)


def _check_port_free(host: str, port: int) -> None:
    """Exit 2 when another server listens on ``host:port`` already, before anything is started or created (gunicorn
    would find out only after its start; it binds with SO_REUSEADDR as this check does)."""
    import errno
    import socket

    from pex.errors import PexError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return  # gunicorn reports a host it cannot resolve
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            hint = ("another server uses this port: stop it or pass --port" if exc.errno == errno.EADDRINUSE
                    else "pass a --host of this machine and a --port this user may use")
            raise PexError(f"cannot listen on {host}:{port}: {exc.strerror}", hint) from None


def _percents(text: str, option: str) -> list[float]:
    """Percents as shares: "5,25,50,100" -> [0.05, 0.25, 0.5, 1.0]; each in (0, 100] (exit 2 otherwise)."""
    from pex.errors import PexError

    shares = []
    for part in text.split(","):
        try:
            pct = float(part.strip())
        except ValueError:
            raise PexError(f"{option} takes percents, got {part.strip()[:20]!r}",
                           f"e.g. {option} 5" + (",25,50,100" if option == "--ramp" else "")) from None
        if not 0 < pct <= 100:  # also refuses nan
            raise PexError(f"{option} {part.strip()[:20]} is not a percent in (0, 100]", f"e.g. {option} 5")
        shares.append(pct / 100)
    return shares


def _rollout_shares(canary: str, ramp: str | None, holdout: str) -> tuple[float, list[float] | None, float]:
    """The canary, ramp and holdout shares of `pex publish --canary`, checked (exit 2 with the cause)."""
    from pex.errors import PexError

    if "," in canary:
        raise PexError("--canary takes one percent", "e.g. --canary 5; the later steps go in --ramp 5,25,50,100")
    [first] = _percents(canary, "--canary")
    steps = _percents(ramp, "--ramp") if ramp is not None else None
    if steps is not None:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise PexError(f"--ramp {ramp} does not increase step by step", "e.g. --ramp 5,25,50,100")
        if steps[-1] != 1.0:
            raise PexError(f"--ramp {ramp} does not end at 100", "the last step serves the new version to everyone: "
                                                                   "e.g. --ramp 5,25,50,100")
    if "," in holdout:
        raise PexError("--holdout takes one percent", "e.g. --holdout 5")
    [held] = _percents(holdout, "--holdout")
    if held >= 1.0:
        raise PexError("--holdout 100 leaves no traffic for the policy", "e.g. --holdout 5")
    return first, steps, held


@click.command()
@click.argument("policy")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version to make live (default: the newest, unless a re-run stored it beside an earlier run's "
                   "recommendation of POLICY: then the recommended version).")
@click.option("--force", is_flag=True, help="Publish a version that is not certified to keep its guardrails (needs "
                                            "--reason; recorded in the release history as a forced publish).")
@click.option("--reason", default=None, help="Why a forced publish is made (with --force; at most 500 characters).")
@click.option("--canary", default=None, metavar="PERCENT",
              help="Start a staged rollout: the new version to PERCENT of the units, the live version to the rest; "
                   "a watcher advances or rolls it back (`pex rollout status POLICY`).")
@click.option("--ramp", default=None, metavar="P1,P2,...,100",
              help="The rollout's shares after the canary, increasing and ending at 100 (with --canary).")
@click.option("--holdout", default="5", show_default=True, metavar="PERCENT",
              help="The rollout's all-control holdout, against which guardrail harm is measured (with --canary).")
@click.option("--json", "as_json", is_flag=True, help="Print the release (or the rollout) as JSON.")
@click.pass_context
def publish(ctx: click.Context, policy: str, version: int | None, force: bool, reason: str | None,
            canary: str | None, ramp: str | None, holdout: str, as_json: bool) -> None:
    """Make a version of POLICY live; running servers switch to it within seconds, without a restart.

    Only a version certified to keep its guardrails goes live (its run certified it, the online loop promoted it
    from a certified arm, or it gives everyone control); `--force --reason TEXT` overrides, and the release history
    shows the override. With --canary, the version goes live in stages instead (a canary, the ramp, 100%)."""
    from pex.errors import PexError
    from pex.services.publishing import check_reason

    if force and reason is None:
        raise PexError("--force needs --reason", f"say why: pex publish {policy} --force --reason 'owner accepts the risk'")
    if reason is not None and not force:
        raise PexError("--reason goes with --force", f"pex publish {policy} --force --reason '...'")
    force_reason = check_reason(reason) if force else None
    if canary is None and ramp is not None:
        raise PexError("--ramp needs --canary", f"e.g. pex publish {policy} --canary 5 --ramp 5,25,50,100")
    shares = _rollout_shares(canary, ramp, holdout) if canary is not None else None  # exit 2 before any work
    ws = _workspace(ctx, create=True)
    if shares is not None:
        from pex.services.rollout import start

        share, steps, held = shares
        started = start(ws, policy, version, canary=share, ramp=steps, holdout=held, force_reason=force_reason)
        if as_json:
            _echo_json(started)
        else:
            click.echo(_rollout_line(policy, started, share, held))
        return
    from pex.services.publishing import publish_checked

    release = publish_checked(ws, policy, version, force_reason=force_reason)
    if as_json:
        _echo_json(release.to_dict())
    else:
        before = f"v{release.from_version}" if release.from_version else "nothing live"
        forced = f" ({release.note})" if release.forced else ""
        click.echo(f"{policy}: v{release.to_version} is live (was {before}){forced}")


def _rollout_line(policy: str, started: dict, canary: float, holdout: float) -> str:
    """What went live when a rollout started."""
    new = started.get("new_version", started.get("version"))
    base = started.get("base_version")
    rest = f"v{base}" if base is not None else "the live version"
    return (f"{policy}: canary of v{new} live on {canary:.0%} of the units, {rest} on the rest, "
            f"{holdout:.0%} all-control holdout; `pex rollout status {policy}` follows it")


@click.command()
@click.argument("policy")
@click.option("--json", "as_json", is_flag=True, help="Print the release as JSON.")
@click.pass_context
def rollback(ctx: click.Context, policy: str, as_json: bool) -> None:
    """Return POLICY to the version that was live before the current one."""
    from pex.services.publishing import rollback as roll_back

    release = roll_back(_workspace(ctx, create=True), policy)
    if as_json:
        _echo_json(release.to_dict())
    else:
        click.echo(f"{policy}: v{release.to_version} is live again (rolled back from v{release.from_version})")


@click.command()
@click.argument("policy", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def releases(ctx: click.Context, policy: str | None, as_json: bool) -> None:
    """Every publish, rollback and rollout step (of POLICY, when given): who, when, from which version to which, and
    the note (a forced publish's reason, a rollout step's why)."""
    found = _workspace(ctx, create=False).releases(policy)
    if as_json:
        _echo_json([r.to_dict() for r in found])
        return
    if not found:
        click.echo("no releases yet: `pex publish POLICY` makes a version live")
    for r in found:
        before = f"v{r.from_version}" if r.from_version else "-"
        note = f"  ({r.note})" if r.note else ""  # a forced publish reads "forced: <reason>"; a rollout step its why
        click.echo(f"{r.created_at:%Y-%m-%d %H:%M:%S}  {r.policy}  {r.action:<13}  {before} -> v{r.to_version}  by "
                   f"{r.actor}{note}")


@click.group()
def token() -> None:
    """API tokens: scope 'decide' (decisions and outcomes), 'view' (the web UI, read-only) or 'admin' (everything)."""


@token.command("create")
@click.option("--scope", type=click.Choice(["decide", "view", "admin"]), required=True)
@click.option("--name", default=None, help="A name to recognise it by (default: SCOPE-ID).")
@click.pass_context
def token_create(ctx: click.Context, scope: str, name: str | None) -> None:
    """Create a token; it is printed once and only its hash is stored."""
    record, secret = _workspace(ctx, create=True).create_token(scope, name)
    click.echo(f"created token {record.name!r} (id {record.id}, scope {scope}); shown only now:", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Every token (never its secret), revoked ones marked."""
    found = _workspace(ctx, create=False).list_tokens()
    if as_json:
        _echo_json([t.to_dict() for t in found])
        return
    if not found:
        click.echo("no tokens yet: `pex token create --scope decide`")
    for t in found:
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        click.echo(f"{t.id}  {t.name:<24}  {t.scope:<7}  created {t.created_at:%Y-%m-%d %H:%M}  {state}")


@token.command("revoke")
@click.argument("token_ref")
@click.pass_context
def token_revoke(ctx: click.Context, token_ref: str) -> None:
    """Revoke a token by id or name; servers refuse it within seconds."""
    record = _workspace(ctx, create=True).revoke_token(token_ref)
    click.echo(f"revoked token {record.name!r} (id {record.id})")


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    for command in (serve, publish, rollback, releases, token):
        cli.add_command(command)
