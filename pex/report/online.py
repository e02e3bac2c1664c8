"""The online loop's status as terminal text: rounds, arms, lifts with CIs, guardrail verdicts, best so far."""

from __future__ import annotations

from typing import Any

from pex.report.numbers import fmt_decimals, fmt_pct1


def _short(route: str, policy: str) -> str:
    return route[len(policy) + 1:] if route.startswith(policy + "-") else route


def agreement_text(agreement: dict[str, Any]) -> str:
    """One line: per metric the z of live against offline, and which disagree beyond the band."""
    cells = []
    for m, a in agreement["metrics"].items():
        z = "no spread" if a["z"] is None else f"z {a['z']:+.2f}"
        cells.append(f"{m} {a['kind']} {fmt_decimals(a['online_estimate'])} vs {fmt_decimals(a['offline_estimate'])} ({z})")
    band = next(iter(agreement["metrics"].values()), {}).get("band", 0.99)
    flagged = agreement.get("flagged") or []
    verdict = (f"DISAGREE beyond the {band:.0%} band: {', '.join(flagged)}" if flagged else f"within the {band:.0%} band")
    return "live vs offline: " + ", ".join(cells) + f"; {verdict}"


def status_text(status: dict[str, Any]) -> str:
    """``pex online status`` without ``--json``."""
    s, policy = status["settings"], status["policy"]
    lines = [f"{status['name']}: online loop of experiment {status['experiment']}, served as {policy} "
             f"({s['arms']} candidate arms and a {fmt_pct1(s['holdout'], signed=False)} control holdout per round, "
             f"exploration {fmt_pct1(s['exploration'], signed=False)})"]
    plan = status.get("spending")
    if plan:
        lines.append(f"  error control: alpha {plan['alpha']:g} split over {plan['rounds']} planned rounds "
                     f"({plan['per_round']:.4g} a round, Bonferroni over its arms); {plan['completed']} completed")
    live = status.get("live_version")
    if live is None:
        lines.append(f"  nothing live: `pex publish {policy}` serves the newest version")
    elif status.get("live_round"):
        lines.append(f"  live: v{live}, round {status['live_round']}")
    else:
        lines.append(f"  live: v{live} (a promoted arm)")
    goals = s["objectives"]
    rails = list(s["guardrails"])
    versus_champion = {(j["round"], j["route"]): j.get("versus_champion") for j in status.get("judged", [])}
    for r in status["rounds"]:
        res = r.get("results")
        head = f"round {r['round']} (v{r['policy_version']}, {r['status']}"
        returning = ((res or {}).get("log") or {}).get("returning_units")
        head += (f", {res['rows']:,} units" + (f"; {returning:,} served in an earlier round left out" if returning else "")
                 + ")") if res else ", waiting for traffic and outcomes)" if r["status"] == "open" else ")"
        lines.append(head)
        cols = [f"{m} lift [95% CI]" for m in goals] + [f"{m} harm (limit)" for m in rails]
        lines.append("  " + "  ".join([f"{'arm':<10}", f"{'units':>7}", *[f"{c:<28}" for c in cols]]))
        for arm in r["arms"]:
            name = _short(arm["route"], policy)
            got = (res or {}).get("arms", {}).get(arm["route"])
            if got is None:
                weights = ", ".join(f"{m} {w:.2f}" for m, w in (arm.get("weights") or {}).items())
                lines.append(f"  {name:<10}  {'-':>7}  " + (f"weights {weights}, cap {fmt_pct1(arm['budget'], signed=False)}"
                                                           if arm["role"] != "holdout" else "control"))
                continue
            cells = []
            for m in goals:
                lift = got["metrics"][m]["lift"]
                cells.append(f"{fmt_decimals(lift['estimate'])} [{fmt_decimals(lift['ci_low'])}, {fmt_decimals(lift['ci_high'])}]"
                             if lift else "no outcomes")
            for m in rails:
                h = got["harms"].get(m)
                cells.append(f"{fmt_pct1(h['estimate'])} (<= {fmt_pct1(h['limit'])}) {h['verdict']}" if h else "-")
            tag = (" abandoned" if got.get("abandoned") else "") + (" (champion)" if arm["role"] == "champion" else "")
            lines.append("  " + "  ".join([f"{name:<10}", f"{got['units']:>7,}", *[f"{c:<28}" for c in cells]]) + tag)
            versus = versus_champion.get((r["round"], arm["route"]))
            if versus:
                lines.append(f"  {'':<10}  {'':>7}  against the champion: {fmt_decimals(versus['difference'])} "
                             f"(z = {versus['z']:.2f}, lower bound {fmt_decimals(versus['lower'])})")
            if arm.get("offline"):
                off = arm["offline"]
                lines.append(f"  {'':<10}  {'':>7}  offline evidence (in-sample, not told to Ax): "
                             + ", ".join(f"{m} {fmt_decimals(v)}" for m, v in off["objectives"].items()))
            agreement = got.get("agreement")
            if agreement and agreement["available"]:
                lines.append(f"  {'':<10}  {'':>7}  {agreement_text(agreement)}")
    if status["pareto"]:
        lines.append("Pareto front of the certified arms so far: "
                     + ", ".join(f"{_short(p['route'], policy)} (round {p['round']})" for p in status["pareto"]))
    lines.append(f"best so far: {status['best']['why']}")
    return "\n".join(lines)
