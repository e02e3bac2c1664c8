"""`pex rollout status|stop NAME`: staged rollouts of a policy version."""

from __future__ import annotations

from typing import Any

import click

from pex.cli.common import _echo_json, _workspace


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``pex`` group."""
    cli.add_command(rollout)


@click.group()
def rollout() -> None:
    """Staged rollouts: a canary share growing step by step, rolled back automatically on guardrail harm."""


@rollout.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the rollout and its measurement as JSON.")
@click.pass_context
def status(ctx: click.Context, name: str, as_json: bool) -> None:
    """Per step: share, units, outcomes; the canary's lift, each guardrail's harm, bounds and verdicts."""
    from pex.services.rollout import status as rollout_status

    found = rollout_status(_workspace(ctx, create=False), name)
    if as_json:
        _echo_json(found)
    else:
        click.echo(_text(found))


@rollout.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the stopped rollout as JSON.")
@click.pass_context
def stop(ctx: click.Context, name: str, as_json: bool) -> None:
    """Stop NAME's running rollout and return to the version live before it."""
    from pex.services.rollout import stop as stop_rollout

    found = stop_rollout(_workspace(ctx, create=False), name)
    if as_json:
        _echo_json(found)
    else:
        click.echo(f"rollout #{found['id']} of {name} stopped; v{found['live_version']} is live")


def _num(v: Any, fmt: str = "+.4g") -> str:
    return "-" if v is None else format(v, fmt)


def _left(left: dict[str, Any]) -> str:
    """What the watcher saw when it left a step: the action, the canary's lifts and each guardrail's bounds."""
    lifts = ", ".join(f"{m} lift {_num(v['estimate'])}" for m, v in (left.get("lifts") or {}).items() if v)
    harms = ", ".join(f"{m} harm {_num(h.get('estimate'))} (always-valid [{_num(h.get('lower'))}, {_num(h.get('upper'))}],"
                      f" limit {_num(h.get('limit'))})" for m, h in (left.get("sequential") or {}).items())
    return (f"{left['release']} on {left.get('outcomes', 0):,} canary outcomes ({left.get('step_outcomes', 0):,} of "
            f"this step): " + "; ".join(x for x in (lifts, harms) if x))


def _text(found: dict[str, Any]) -> str:
    lines = [f"rollout #{found['id']} of {found['policy']}: v{found['new_version']} over v{found['base_version']}, "
             f"{found['status']} at step {found['step'] + 1} of {len(found['steps'])}, holdout {found['holdout']:.0%}, "
             f"live v{found['live_version']}"]
    for s in found["by_step"]:
        outcomes = ", ".join(f"{m} {n:,}" for m, n in s["outcomes"].items())
        lines.append(f"  step {s['step'] + 1} ({s['share']:.0%}, v{s['version']}): {s['units']:,} units "
                     f"(canary {s['routes']['canary']:,}, holdout {s['routes']['holdout']:,}); outcomes {outcomes}")
        if s.get("left"):
            lines.append("    " + _left(s["left"]))
    canary = found.get("canary")
    if canary is None:
        lines.append("  no canary and holdout outcomes yet")
    else:
        lines.append(f"  canary: {canary['units']:,} units ({canary['offline']})")
        for m, c in canary["metrics"].items():
            lift, agree = c["lift"], c["agreement"]
            text = "no lift yet" if lift is None else \
                f"lift {_num(lift['estimate'])} [{_num(lift['ci_low'])}, {_num(lift['ci_high'])}]"
            if agree is not None:
                text += f", offline agreement z {_num(agree['z'], '+.2f')}" + (" (DISAGREES)" if agree["flag"] else "")
            lines.append(f"    {m}: {text}")
        for m, h in canary["harms"].items():
            seq = canary["sequential"].get(m) or {}
            lines.append(f"    {m} harm {_num(h['estimate'])}: fixed bound {_num(h['upper'])} ({h['verdict']}), "
                         f"always-valid [{_num(seq.get('lower'))}, {_num(seq.get('upper'))}] ({seq.get('verdict', '-')}), "
                         f"limit {_num(h['limit'])}")
    action = (found.get("last_check") or {}).get("action")
    if action:
        lines.append(f"  last action: {action['action']} ({action['code']}): {action['reason']}")
    return "\n".join(lines)
