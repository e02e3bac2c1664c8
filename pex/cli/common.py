"""What every command module of the CLI shares: JSON output and the command's workspace."""

from __future__ import annotations

import click


def _echo_json(obj: object) -> None:
    from pex.serialize import dumps

    click.echo(dumps(obj))


def parse_pairs(option: str, pairs: tuple[str, ...], key: str, example: str) -> dict[str, float]:
    """Repeated ``KEY=NUMBER`` options (``--weight sessions=1``) as a dict; PexError (exit 2) on anything else."""
    from pex.errors import PexError

    found: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            found[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise PexError(f"{option} {pair!r} is not {key}=NUMBER", f"e.g. {example}")
    return found


def _workspace(ctx: click.Context, create: bool):
    """The command's workspace, opened once and closed when the command ends."""
    from pex.store.workspace import Workspace

    key = ("workspace", create)
    if key not in ctx.obj:
        ws = Workspace(ctx.obj.get("home"), create=create)
        ctx.call_on_close(ws.close)
        ctx.obj[key] = ws
    return ctx.obj[key]


def _units_file_options(command):
    """``--data`` (one row per unit) and ``--out`` (CSV or Parquet), as ``pex predict`` and ``pex decide`` take them."""
    command = click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
                           help="Output file (.csv or .parquet).")(command)
    return click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
                        help="CSV or Parquet with the unit and feature columns.")(command)


def _lazy_workspace(ctx: click.Context):
    """Opens the existing workspace on first call: for commands that may not need one (e.g. a policy file)."""
    return lambda: _workspace(ctx, create=False)
