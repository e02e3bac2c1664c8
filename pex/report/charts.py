"""Charts for the HTML report, each returned as an inline SVG string.

Matplotlib draws through its object-oriented API (``matplotlib.figure.Figure``)
rather than pyplot: no global figure registry, no backend switch for the
importing process, and nothing to close, so a web worker can render reports
concurrently. Text is converted to paths so every chart looks the same in any
browser without font files. Each function returns ``""`` when it has nothing to
draw; the report then says so in words.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

WIDTH_IN = 6.6  # inches at 72 pt: ~ 640 CSS px once the SVG is scaled to its column

GOOD = "#2f855a"
BAD = "#c53030"
UNCLEAR = "#718096"
INK = "#1a202c"
GRID = "#e2e8f0"
CONTROL_COLOR = "#8a94a6"
ARM_PALETTE = ("#2b6cb0", "#dd6b20", "#2c9a6c", "#805ad5", "#c05621", "#d53f8c", "#319795", "#975a16")

_RC = {
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.edgecolor": "#a0aec0",
    "axes.labelcolor": INK,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": "#4a5568",
    "ytick.color": "#4a5568",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}


def arm_colors(arms: Iterable[str], control: str | None) -> dict[str, str]:
    """A stable colour per arm (control grey), shared by charts, the tree and the HTML legend."""
    out: dict[str, str] = {}
    others = 0
    for arm in arms:
        if arm == control:
            out[arm] = CONTROL_COLOR
        else:
            out[arm] = ARM_PALETTE[others % len(ARM_PALETTE)]
            others += 1
    return out


def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


def _new_figure(height_in: float) -> Figure:
    return Figure(figsize=(WIDTH_IN, height_in), layout="constrained")


def _to_svg(fig: Figure, key: str, label: str) -> str:
    """Serialise ``fig`` as an inline SVG element (no XML prolog, no namespace URLs, no metadata), named ``label``
    for screen readers (an image without a name is announced as nothing at all)."""
    buf = io.StringIO()
    # A fixed salt per chart keeps ids deterministic (same summary, same bytes) and distinct between charts.
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"pex-{key}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    # Inside HTML the SVG and xlink namespaces are implied; dropping them leaves no URL in the page.
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)
    # Glyph and clip-path ids repeat between charts; prefix them so ids stay unique within the page.
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", key) + "-"
    svg = re.sub(r'(\bid="|href="#|url\(#)([^")]+)', lambda m: m.group(1) + prefix + m.group(2), svg)
    svg = svg.replace("<svg ", f'<svg role="img" class="chart-svg" data-chart="{html.escape(key)}" '
                              f'aria-label="{html.escape(label)}" ', 1)
    return svg.strip()


def _draw(key: str, height_in: float, paint, label: str) -> str:
    with matplotlib.rc_context(_RC):
        fig = _new_figure(height_in)
        paint(fig)
        return _to_svg(fig, key, label)


def _pct(x: float, _pos=None) -> str:
    return f"{x:+.0f}%" if x else "0%"


# --------------------------------------------------------------------------- forest plot


def forest_plot(effects: list[dict], goals: dict[str, str], limits: dict[str, float] | None = None) -> str:
    """Relative average effect of each arm vs control per metric, with 95% CIs.

    One row per ``metric · arm``. Green rows are better than control, red rows
    worse (given the metric's goal), grey ones unclear (the interval includes 0).
    ``limits`` (metric -> relative max harm) draws the guardrail limit as a dotted line.
    """
    rows = [e for e in effects if _finite(e.get("relative"), e.get("relative_ci_low"), e.get("relative_ci_high"))]
    if not rows:
        return ""
    limits = limits or {}
    n = len(rows)

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        labels = []
        for i, e in enumerate(rows):
            est, lo, hi = (100 * e[k] for k in ("relative", "relative_ci_low", "relative_ci_high"))
            better, worse = (hi < 0, lo > 0) if goals.get(e["metric"]) == "decrease" else (lo > 0, hi < 0)
            color = GOOD if better else BAD if worse else UNCLEAR
            ax.plot([lo, hi], [i, i], color=color, lw=2.2, solid_capstyle="round")
            ax.plot([est], [i], "o", color=color, ms=6.5, mec="white", mew=1.0, zorder=3)
            labels.append(f"{e['metric']} · {e['arm']}")
        ax.axvline(0, color=INK, lw=0.9)
        # Separate metrics with a faint rule and mark guardrail limits on their own rows.
        start = 0
        limit_drawn = False
        for i in range(1, n + 1):
            if i == n or rows[i]["metric"] != rows[start]["metric"]:
                metric = rows[start]["metric"]
                if metric in limits and _finite(limits[metric]):
                    lim = 100 * limits[metric] * (-1 if goals.get(metric) == "increase" else 1)
                    ax.plot([lim, lim], [start - 0.45, i - 0.55], color=BAD, lw=1.1, ls=(0, (2, 2)),
                            label=None if limit_drawn else "guardrail harm limit")
                    limit_drawn = True
                if i < n:
                    ax.axhline(i - 0.5, color=GRID, lw=0.8)
                start = i
        ax.set_yticks(range(n), labels)
        ax.set_ylim(n - 0.4, -0.8)
        ax.xaxis.set_major_formatter(FuncFormatter(_pct))
        ax.set_xlabel("effect relative to control (95% interval)")
        ax.grid(axis="x", color=GRID, lw=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(axis="y", length=0)
        if limit_drawn:
            ax.legend(loc="lower right")

    return _draw("forest", 1.0 + 0.34 * n, paint,
                 "Forest plot: each arm's average effect on each metric relative to control, with its 95% interval")


# --------------------------------------------------------------------------- Qini curves


def qini_chart(tests: list[dict], metric: str, colors: dict[str, str]) -> str:
    """Cumulative effect of targeting units by predicted effect (one line per arm) vs random targeting."""
    curves = [t for t in tests if len(t.get("qini_curve") or []) >= 2]
    if not curves:
        return ""

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        for t in curves:
            pts = [(float(x), float(y)) for x, y in t["qini_curve"] if _finite(x, y)]
            if len(pts) < 2:
                continue
            color = colors.get(t["arm"], ARM_PALETTE[0])
            xs, ys = zip(*pts)
            ax.plot([100 * x for x in xs], ys, color=color, lw=2.0, label=f"{t['arm']}: targeted by the model")
            ax.plot([0, 100 * xs[-1]], [0, ys[-1]], color=color, lw=1.2, ls=(0, (4, 3)), alpha=0.75,
                    label=f"{t['arm']}: random targeting")
        ax.axhline(0, color="#a0aec0", lw=0.8)
        ax.set_xlim(0, 100)
        ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_xlabel("share of units given the arm (highest predicted effect first)")
        ax.set_ylabel(f"cumulative change in {metric}\nper unit of the population", fontsize=9)
        ax.grid(color=GRID, lw=0.6)
        ax.set_axisbelow(True)
        if len(curves) <= 2:  # few lines: a legend inside leaves the plot its full width
            ax.legend(loc="best", framealpha=0.9, frameon=True, edgecolor="none")
        else:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    return _draw(f"qini-{metric}", 2.9, paint,
                 f"Qini curves for {metric}: the gain from treating first the units the model ranks highest")


# --------------------------------------------------------------------------- Pareto front

FRONT_STYLE = {
    "ax": {"marker": "^", "color": "#dd6b20", "label": "Bayesian optimisation (Ax)", "size": 46},
    "dense": {"marker": "s", "color": "#2b6cb0", "label": "dense random search", "size": 30},
}
TRIED_OK = "#b8c2cf"  # a sampled weighting that keeps every guardrail
TRIED_BAD = "#f2a7b4"  # one that breaks a guardrail


def _search_methods(fronts: dict) -> list[str]:
    """The search methods of ``fronts`` (not the merged "kept" front), Ax and dense first."""
    return [m for m in ("ax", "dense") if m in fronts] + [m for m in fronts if m not in ("ax", "dense", "kept")]


def _sampled(front: dict | None) -> list[tuple[list, list, bool]]:
    """``(objectives, guardrail harms, feasible)`` per sampled weighting of one method; [] for older summaries."""
    sample = (front or {}).get("sample")
    if not isinstance(sample, dict):
        return []
    objs = sample.get("objectives") or []
    harms = sample.get("guardrail_harm") or []
    feasible = sample.get("feasible") or []
    out = []
    for i, o in enumerate(objs):
        h = harms[i] if i < len(harms) else []
        f = feasible[i] if i < len(feasible) else True
        out.append((list(o) if isinstance(o, (list, tuple)) else [], list(h) if isinstance(h, (list, tuple)) else [], f is not False))
    return out


def _at(row: list, k: int):
    return row[k] if 0 <= k < len(row) else None


def _scatter_tried(ax, ok: list[tuple[float, float]], bad: list[tuple[float, float]], any_guardrail: bool) -> None:
    """The faint cloud of sampled weightings behind the fronts and candidates."""
    if ok:
        ax.scatter(*zip(*ok), marker="o", s=7, color=TRIED_OK, alpha=0.7, linewidths=0, zorder=0.6,
                   label="tried, feasible" if any_guardrail else "weighting tried")
    if bad:
        ax.scatter(*zip(*bad), marker="x", s=9, color=TRIED_BAD, alpha=0.8, linewidths=0.8, zorder=0.5,
                   label="tried, not feasible")


def _harm_scale(pareto: dict, guardrail: str | None) -> tuple[float, bool]:
    """(multiplier, is_percent) for plotting a guardrail's harm: relative harms in percent, absolute ones as they are."""
    g = (pareto.get("guardrails") or {}).get(guardrail) or {}
    relative = (g.get("basis") or "relative") == "relative"
    return (100.0, True) if relative else (1.0, False)


CANDIDATE = "#2c9a6c"


def _mark_candidates(ax, cand: list[tuple[int, tuple[float, float]]], recommended: int | None) -> None:
    """Candidates as green dots, the recommended one a star (their search values: in-sample, training units)."""
    plain = [p for i, p in cand if i != recommended]
    if plain:
        ax.scatter(*zip(*plain), marker="o", s=26, color=CANDIDATE, zorder=4, label="candidate: in-sample (training units)")
    rec = [p for i, p in cand if i == recommended]
    if rec:
        ax.scatter(*zip(*rec), marker="*", s=220, color=CANDIDATE, edgecolors=INK, linewidths=0.8, zorder=5,
                   label="recommended: in-sample (training units)")


def _mark_held_out(ax, cand: list[tuple[int, tuple[float, float]]], held: dict[int, tuple[float, float]]) -> list[tuple[float, float]]:
    """Each candidate's held-out value as a hollow diamond, joined to its in-sample point by a dotted line: the
    gap is the search's optimism. Returns the diamonds' positions (for labels to avoid)."""
    pairs = [(p, held[i]) for i, p in cand if i in held]
    if not pairs:
        return []
    for a, b in pairs:
        ax.plot([a[0], b[0]], [a[1], b[1]], color=CANDIDATE, lw=0.9, ls=(0, (1.5, 2)), alpha=0.9, zorder=3.5)
    points = [b for _, b in pairs]
    ax.scatter(*zip(*points), marker="D", s=30, facecolors="white", edgecolors=CANDIDATE, linewidths=1.4, zorder=4.5,
               label="same candidate on held-out units")
    return points


def _held_xy(held_out: dict[int, dict] | None, x_of, y_of) -> dict[int, tuple[float, float]]:
    """Candidate index -> (x, y) of its held-out values, where both are finite."""
    out = {}
    for i, h in (held_out or {}).items():
        x, y = x_of(h), y_of(h)
        if _finite(x, y):
            out[i] = (float(x), float(y))
    return out


def _label_candidates(fig: Figure, ax, cand: list[tuple[int, tuple[float, float]]], candidate_labels: dict[int, str],
                      recommended: int | None, avoid: list[tuple[float, float]] = ()) -> None:
    """Label each candidate where its text overlaps the fewest other labels and markers (call once limits are final).

    ``avoid`` are further data points (e.g. the kept front) whose markers a label should not cover.
    """
    todo = [(i, p) for i, p in cand if candidate_labels.get(i)]
    if not todo:
        return
    fig.draw_without_rendering()  # settle the layout so data -> pixel positions are (nearly) final
    px = fig.dpi / 72.0
    to_px = ax.transData.transform
    box = ax.get_window_extent()
    markers = [(*to_px(p), 8 * px if i == recommended else 5 * px) for i, p in cand]
    markers += [(*to_px(p), 6 * px) for p in avoid]
    preferred = {i: off for i, _, off in _label_offsets(todo)}
    placed: list[tuple[float, float, float, float]] = []

    def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    order = sorted(todo, key=lambda t: (t[0] != recommended, t[0]))
    for i, (x, y) in order:
        label = candidate_labels[i]
        bold = i == recommended
        w = len(label) * 8.5 * (0.66 if bold else 0.6) * px
        h = 11 * px
        cx, cy = to_px((x, y))
        best = None
        for dx, dy in ((8, 6), (8, -6), (-8, 6), (-8, -6), (0, 10), (0, -10), (12, 0), (-12, 0)):
            ox, oy = dx * px, dy * px
            x0 = cx + ox if dx > 0 else cx + ox - w if dx < 0 else cx - w / 2
            y0 = cy + oy if dy > 0 else cy + oy - h if dy < 0 else cy - h / 2
            rect = (x0, y0, x0 + w, y0 + h)
            cost = 4 * sum(overlap(rect, r) for r in placed)
            cost += sum(overlap(rect, (mx - r, my - r, mx + r, my + r)) for mx, my, r in markers)
            # a label whose near edge is closer to another candidate than to its own reads as that candidate's
            ax_, ay_ = min(max(cx, rect[0]), rect[2]), min(max(cy, rect[1]), rect[3])
            own = math.hypot(ax_ - cx, ay_ - cy)
            cost += 20.0 * sum(1 for j, p in cand if j != i and math.hypot(*(to_px(p) - (ax_, ay_))) < own)
            outside = (w * h) - overlap(rect, (box.x0, box.y0, box.x1, box.y1))
            # ties go to a label level with its point on the side away from the other candidates, then diagonally
            away = preferred.get(i, (8, 6))
            if dy == 0 and dx * away[0] > 0:
                cost += 0.0
            elif (dx, dy) == away:
                cost += 0.5
            else:
                cost += 1.5 if dx == 0 else 1.0
            cost += 3 * outside
            if best is None or cost < best[0]:
                best = (cost, dx, dy, rect)
        _, dx, dy, rect = best
        placed.append(rect)
        ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8.5, color=INK,
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    fontweight="bold" if bold else "normal", zorder=6,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7})


def _frame(ax, points: list[tuple[float, float]], pad: float = 0.15) -> None:
    """Set the view to ``points`` plus ``pad`` of their span on each side (at least two distinct points needed)."""
    if len(set(points)) < 2:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    for lo, hi, setter in ((min(xs), max(xs), ax.set_xlim), (min(ys), max(ys), ax.set_ylim)):
        span = (hi - lo) or max(abs(hi), 1e-9)
        setter(lo - pad * span, hi + pad * span)


def pareto_chart(pareto: dict, candidate_labels: dict[int, str] | None = None, recommended: int | None = None,
                 held_out: dict[int, dict] | None = None) -> str:
    """The Pareto points of every search method over the objectives, kept front and candidates marked.

    ``candidate_labels`` maps the index of a ``pareto["candidates"]`` entry to a
    short label drawn next to it; ``recommended`` is the index of the candidate
    that became the recommended policy (drawn as a star). The weightings each
    method sampled (``fronts[method]["sample"]``, when the summary has them) are
    drawn faintly behind, so the fronts read as the edge of that cloud. Every
    search value is in-sample (training units); ``held_out`` maps a candidate's
    index to its values on the held-out units (``{"objectives": {...},
    "guardrail_harm": {...}}``, from its policy row), drawn beside it.
    """
    objectives = list(pareto.get("objectives") or [])
    fronts = pareto.get("fronts") or {}
    candidates = pareto.get("candidates") or []
    candidate_labels = candidate_labels or {}
    if not objectives:
        return ""
    x_name = objectives[0]
    guardrails = list((pareto.get("guardrails") or {}).keys())
    if len(objectives) >= 2:
        y_name, y_kind = objectives[1], "objective"
    elif guardrails:
        y_name, y_kind = guardrails[0], "guardrail"
    else:
        y_name, y_kind = None, "strip"
    harm_scale, harm_pct = _harm_scale(pareto, y_name) if y_kind == "guardrail" else (1.0, False)
    methods = _search_methods(fronts)

    def xy(point: dict, row: int) -> tuple[float, float] | None:
        x = (point.get("objectives") or {}).get(x_name)
        if y_kind == "objective":
            y = (point.get("objectives") or {}).get(y_name)
        elif y_kind == "guardrail":
            y = (point.get("guardrail_harm") or {}).get(y_name)
            y = y * harm_scale if _finite(y) else None
        else:
            y = row
        return (float(x), float(y)) if _finite(x, y) else None

    def rows_of(points: list[dict], row: int) -> list[tuple[float, float]]:
        return [p for p in (xy(q, row) for q in points) if p is not None]

    drawn = sum(len(rows_of(f.get("pareto") or [], 0)) for f in fronts.values()) + len(rows_of(candidates, 0))
    if drawn == 0:
        return ""
    strip_rows = {m: i for i, m in enumerate([*methods, "kept"])}

    def tried(method: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        ok, bad = [], []
        for objs, harms, feasible in _sampled(fronts.get(method)):
            x = _at(objs, 0)
            if y_kind == "objective":
                y = _at(objs, 1)
            elif y_kind == "guardrail":
                y = _at(harms, 0)
                y = y * harm_scale if _finite(y) else None
            else:
                y = strip_rows[method]
            if _finite(x, y):
                (ok if feasible else bad).append((float(x), float(y)))
        return ok, bad

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        ok, bad = [], []
        for m in methods:
            o, b = tried(m)
            ok += o
            bad += b
        _scatter_tried(ax, ok, bad, bool(guardrails))
        for m in methods:
            pts = rows_of(fronts[m].get("pareto") or [], strip_rows[m])
            if not pts:
                continue
            style = FRONT_STYLE.get(m, {"marker": "D", "color": "#805ad5", "label": m, "size": 30})
            ax.scatter(*zip(*pts), marker=style["marker"], s=style["size"], color=style["color"], alpha=0.55,
                       linewidths=0, label=f"{style['label']}: its Pareto points", zorder=2)
        kept = rows_of((fronts.get("kept") or {}).get("pareto") or [], strip_rows["kept"])
        if kept:
            kept.sort()
            if y_kind == "objective" and len(kept) > 1:
                ax.plot(*zip(*kept), color=INK, lw=0.9, alpha=0.5, zorder=1)
            ax.scatter(*zip(*kept), marker="o", s=120, facecolors="none", edgecolors=INK, linewidths=1.3,
                       label="kept front (best of all methods)", zorder=3)
        cand = [(i, xy(c, strip_rows.get("kept", 0))) for i, c in enumerate(candidates)]
        cand = [(i, p) for i, p in cand if p is not None]
        _mark_candidates(ax, cand, recommended)
        held = []
        if y_kind != "strip":  # a strip has no second axis to place a held-out value on
            held = _mark_held_out(ax, cand, {i: p for i, h in (held_out or {}).items() if (p := xy(h, 0)) is not None})
        if y_kind == "guardrail":
            limit = ((pareto.get("guardrails") or {}).get(y_name) or {}).get("limit")
            if _finite(limit):
                shown = f"{harm_scale * limit:g}{'%' if harm_pct else ''}"
                ax.axhline(harm_scale * limit, color=BAD, lw=1.0, ls=(0, (3, 3)))
                ax.text(1.0, harm_scale * limit, f" limit {shown}", color=BAD, fontsize=8, va="bottom", ha="right",
                        transform=ax.get_yaxis_transform())
            if harm_pct:
                ax.yaxis.set_major_formatter(PercentFormatter(decimals=1))
            ax.set_ylabel(f"estimated harm on {y_name}\n({'relative to control' if harm_pct else 'per unit vs control'})",
                          fontsize=9)
        elif y_kind == "objective":
            ax.set_ylabel(f"{y_name}: gain per unit vs control", fontsize=9)
        else:
            names = {"kept": "kept front", **{m: FRONT_STYLE.get(m, {"label": m})["label"] for m in methods}}
            ax.set_yticks(list(strip_rows.values()), [names[m] for m in strip_rows])
            ax.set_ylim(-0.7, len(strip_rows) - 0.3)
        ax.set_xlabel(f"{x_name}: gain per unit vs control")
        ax.grid(color=GRID, lw=0.6)
        ax.set_axisbelow(True)
        ax.margins(x=0.12, y=0.18)
        if y_kind != "strip":
            # frame what the chart is about (fronts, candidates, feasible weightings): with certifiable bounds the
            # feasible region can be a sliver of the cloud, which would otherwise squash it into a corner
            focus = ok + kept + held + [p for _, p in cand] + [q for m in methods for q in rows_of(fronts[m].get("pareto") or [], 0)]
            limit = ((pareto.get("guardrails") or {}).get(y_name) or {}).get("limit") if y_kind == "guardrail" else None
            if focus and _finite(limit):  # keep the guardrail's limit line (and its label) in view
                focus.append((focus[0][0], harm_scale * limit))
            _frame(ax, focus)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, borderaxespad=0)
        _label_candidates(fig, ax, cand, candidate_labels, recommended, avoid=kept + held)

    return _draw("pareto", 3.6, paint,
                 "The weight search's trade-offs between the metrics: the policies tried, the Pareto front and the "
                 "candidates")


def tradeoff_chart(pareto: dict, candidate_labels: dict[int, str] | None = None, recommended: int | None = None,
                   held_out: dict[int, dict] | None = None) -> str:
    """Primary objective against the first guardrail's harm, for every weighting the search sampled.

    x is the estimated harm on the first guardrail (percent of the control mean
    when its basis is relative), y the gain per unit on the first objective, both
    in-sample (training units). Feasible sampled weightings are grey dots, the
    others pink crosses; the guardrail's limit is a dashed vertical line. Newer
    searches call a weighting feasible when its *certifiable bound* (harm plus the
    margin a held-out test will need) is within the limit, so crosses also sit left
    of the line; each candidate's bound is drawn as a bar to its right. Candidates
    and their held-out values (``held_out``) are marked as in :func:`pareto_chart`.
    ``""`` without a guardrail or without sampled weightings (older summaries).
    """
    objectives = list(pareto.get("objectives") or [])
    rails = pareto.get("guardrails") or {}
    fronts = pareto.get("fronts") or {}
    candidates = pareto.get("candidates") or []
    candidate_labels = candidate_labels or {}
    if not objectives or not rails:
        return ""
    y_name = objectives[0]
    g_name = next(iter(rails))
    scale, pct = _harm_scale(pareto, g_name)
    ok, bad = [], []
    for m in _search_methods(fronts):
        for objs, harms, feasible in _sampled(fronts.get(m)):
            x, y = _at(harms, 0), _at(objs, 0)
            if _finite(x, y):
                (ok if feasible else bad).append((scale * float(x), float(y)))
    if not ok and not bad:
        return ""
    cand, bars = [], []
    for i, c in enumerate(candidates):
        x, y = (c.get("guardrail_harm") or {}).get(g_name), (c.get("objectives") or {}).get(y_name)
        if _finite(x, y):
            cand.append((i, (scale * float(x), float(y))))
            b = (c.get("guardrail_bound") or {}).get(g_name)
            if _finite(b):
                bars.append((scale * float(x), scale * float(b), float(y)))
    held_xy = _held_xy(held_out, lambda h: (scale * v if _finite(v := (h.get("guardrail_harm") or {}).get(g_name)) else None),
                       lambda h: (h.get("objectives") or {}).get(y_name))
    limit = (rails.get(g_name) or {}).get("limit")

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        if _finite(limit):
            ax.axvline(scale * limit, color=BAD, lw=1.1, ls=(0, (4, 3)), zorder=1)
            shown = f"{scale * limit:g}{'%' if pct else ''}"
            ax.text(scale * limit, 1.0, f" limit {shown}", color=BAD, fontsize=8.5, va="top", ha="left",
                    transform=ax.get_xaxis_transform())
        ax.axvline(0, color="#a0aec0", lw=0.8, zorder=0.4)
        ax.axhline(0, color="#a0aec0", lw=0.8, zorder=0.4)
        _scatter_tried(ax, ok, bad, True)
        for k, (x0, x1, y) in enumerate(bars):  # harm -> certifiable bound: feasibility is the bar's end left of the limit
            ax.plot([x0, x1], [y, y], color=CANDIDATE, lw=1.6, alpha=0.55, zorder=3.6, solid_capstyle="butt",
                    label="candidate's certifiable bound (in-sample)" if k == 0 else None)
            ax.plot([x1], [y], marker="|", ms=9, mew=1.6, color=CANDIDATE, zorder=3.6)
        _mark_candidates(ax, cand, recommended)
        held = _mark_held_out(ax, cand, held_xy)
        if pct:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:+.0f}%" if abs(v) >= 1 or not v else f"{v:+.1f}%"))
            ax.set_xlabel(f"harm on {g_name} (relative to control; right is worse)")
        else:
            ax.set_xlabel(f"harm on {g_name} per unit vs control (right is worse)")
        ax.set_ylabel(f"{y_name}: gain per unit vs control", fontsize=9)
        ax.grid(color=GRID, lw=0.6)
        ax.set_axisbelow(True)
        ax.margins(x=0.06, y=0.1)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, borderaxespad=0)
        _label_candidates(fig, ax, cand, candidate_labels, recommended, avoid=held + [(x1, y) for _, x1, y in bars])

    return _draw("tradeoff", 3.6, paint, "Each candidate's gain on the goal against its guardrail harm")


def _label_offsets(points: list[tuple[int, tuple[float, float]]]) -> list[tuple[int, tuple[float, float], tuple[float, float]]]:
    """Point each label away from the other labelled points (in axis-normalised units) so close labels do not collide."""
    if not points:
        return []
    xs = [p[0] for _, p in points]
    ys = [p[1] for _, p in points]
    wx, wy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    out = []
    for i, (x, y) in points:
        others = [(ox, oy) for j, (ox, oy) in points if j != i]
        if others:
            cx = sum(o[0] for o in others) / len(others)
            cy = sum(o[1] for o in others) / len(others)
            ux, uy = (x - cx) / wx, (y - cy) / wy
        else:
            ux, uy = 1.0, 1.0
        out.append((i, (x, y), (8.0 if ux >= 0 else -8.0, 6.0 if uy >= 0 else -6.0)))
    return out


# --------------------------------------------------------------------------- policy tree (hand-built SVG)

_CHAR_W = 7.0  # average glyph width in px of the 12.5px system font used in the page
_LEVEL_H = 86
_NODE_H = 34
_PAD = 12


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _condition(node: dict) -> tuple[str, str]:
    """(short text shown in the box, full text for the tooltip)."""
    feature = str(node.get("feature", "?"))
    if node.get("op") == "in":
        values = [str(v) for v in (node.get("value") or [])]
        full = f"{feature} is one of {', '.join(values)}"
        shown = ", ".join(values[:3]) + (f", +{len(values) - 3} more" if len(values) > 3 else "")
        return f"{feature} in {{{shown}}}", full
    text = f"{feature} ≤ {_fmt_value(node.get('value'))}"
    return text, text


def tree_diagram(tree: dict, colors: dict[str, str]) -> str:
    """The policy tree as an SVG diagram: questions in white boxes, arms as coloured leaves.

    The left branch ("yes") is taken when the condition holds. A unit without
    that feature goes right ("no") unless the node says ``"missing": "left"``,
    in which case the left edge reads "yes / missing".
    """
    if not isinstance(tree, dict):
        return ""
    leaves: list[dict] = []
    nodes: list[dict] = []

    def walk(node: dict, depth: int) -> dict:
        if "feature" not in node:
            item = {"leaf": True, "arm": str(node.get("arm", "?")), "depth": depth}
            item["text"] = item["arm"]
            item["slot"] = len(leaves)
            leaves.append(item)
            nodes.append(item)
            return item
        text, full = _condition(node)
        item = {"leaf": False, "depth": depth, "text": text, "full": full,
                "missing": node.get("missing", "right")}
        left = walk(node.get("left") or {}, depth + 1)
        right = walk(node.get("right") or {}, depth + 1)
        item["children"] = (left, right)
        item["slot"] = (left["slot"] + right["slot"]) / 2
        nodes.append(item)
        return item

    walk(tree, 0)
    for item in nodes:
        item["w"] = max(len(item["text"]) * _CHAR_W + 2 * _PAD, 64)
    slot_w = max(96.0, max(i["w"] for i in leaves) + 16)
    for item in nodes:
        if not item["leaf"]:
            # an internal box may span the slots of its two subtrees
            span = max(1.0, item["children"][1]["slot"] - item["children"][0]["slot"])
            slot_w = max(slot_w, (item["w"] + 16) / (span + 1))
    depth = max(i["depth"] for i in nodes)
    width = slot_w * len(leaves)
    # keep boxes of a narrow tree inside the canvas
    width = max(width, max(i["w"] for i in nodes) + 20)
    offset = (width - slot_w * len(leaves)) / 2
    height = _LEVEL_H * depth + _NODE_H + 2 * 10
    for item in nodes:
        item["x"] = offset + (item["slot"] + 0.5) * slot_w
        item["y"] = 10 + item["depth"] * _LEVEL_H

    esc = html.escape
    # Shrinks with its column down to 70% (then the wrapper scrolls), never grows past its natural size.
    root_tag = (f'<svg class="tree-svg" role="img" aria-label="The policy as a tree of questions" viewBox="0 0 {width:.0f} {height:.0f}" '
                f'style="width:100%;max-width:{width:.0f}px;min-width:{0.7 * width:.0f}px;height:auto" font-size="12.5">')
    parts = [root_tag]
    edge_labels = []
    for item in nodes:
        if item["leaf"]:
            continue
        for side, child in zip(("left", "right"), item["children"]):
            x1, y1 = item["x"], item["y"] + _NODE_H
            x2, y2 = child["x"], child["y"]
            parts.append(f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 30:.1f} {x2:.1f},{y2 - 30:.1f} {x2:.1f},{y2:.1f}" '
                         f'fill="none" stroke="#a0aec0" stroke-width="1.5"/>')
            label = "yes" if side == "left" else "no"
            if side == "left" and item["missing"] == "left":  # "no" is the default route of a missing value
                label += " / missing"
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            w = len(label) * 6.3 + 10
            edge_labels.append(
                f'<g class="edge-label"><rect x="{mx - w / 2:.1f}" y="{my - 9:.1f}" width="{w:.1f}" height="18" rx="9" '
                f'fill="#ffffff" stroke="#e2e8f0"/><text x="{mx:.1f}" y="{my + 4:.1f}" text-anchor="middle" '
                f'font-size="11" fill="{"#2f855a" if side == "left" else "#4a5568"}">{esc(label)}</text></g>')
    parts += edge_labels
    for item in nodes:
        x, y, w = item["x"], item["y"], item["w"]
        if item["leaf"]:
            color = colors.get(item["arm"], UNCLEAR)
            parts.append(f'<g class="leaf" data-arm="{esc(item["arm"])}"><title>{esc("arm: " + item["arm"])}</title>'
                         f'<rect x="{x - w / 2:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_NODE_H}" rx="8" fill="{color}"/>'
                         f'<text x="{x:.1f}" y="{y + 22:.1f}" text-anchor="middle" fill="#ffffff" font-weight="700">'
                         f'{esc(item["text"])}</text></g>')
        else:
            parts.append(f'<g class="split"><title>{esc(item["full"])}</title>'
                         f'<rect x="{x - w / 2:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_NODE_H}" rx="6" fill="#ffffff" '
                         f'stroke="#4a5568" stroke-width="1.2"/><text x="{x:.1f}" y="{y + 22:.1f}" text-anchor="middle" '
                         f'fill="#1a202c">{esc(item["text"])}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- hourly counts (the UI's live monitor)


def decisions_chart(hours: list, stacks: dict[str, list[int]], colors: dict[str, str],
                    markers: list[tuple] | None = None, what: str = "decisions", key: str = "decisions") -> str:
    """Counts per hour as stacked bars, one colour per series (an arm), with vertical markers for events.

    ``hours`` are the starts of consecutive hours (aware datetimes, oldest first); ``stacks`` maps a series to its
    count in each hour; ``markers`` are ``(hour, label)`` pairs (a publish or a rollback) drawn as dashed lines at
    that time with the label above. ``what`` names the counted things on the axis. Returns ``""`` when there is
    nothing to draw, so the page can say so in words.
    """
    if not hours or not any(sum(v) for v in stacks.values()):
        return ""
    from matplotlib.dates import AutoDateLocator, DateFormatter, date2num

    hours_n = [date2num(h) for h in hours]
    width = (hours_n[1] - hours_n[0]) * 0.85 if len(hours_n) > 1 else 1 / 24 * 0.85
    markers = markers or []

    def paint(fig: Figure) -> None:
        ax = fig.add_subplot()
        bottom = [0] * len(hours)
        for series, counts in stacks.items():
            if not sum(counts):
                continue
            ax.bar(hours_n, counts, width=width, bottom=bottom, align="edge", color=colors.get(series, UNCLEAR),
                   label=series, linewidth=0)
            bottom = [b + c for b, c in zip(bottom, counts)]
        top = max(bottom) or 1
        for when, label in markers:
            x = date2num(when)
            if hours_n[0] <= x <= hours_n[-1] + 1 / 24:  # only events inside the window
                ax.axvline(x, color=INK, lw=1.0, ls=(0, (3, 2)))
                ax.annotate(label, (x, top), xytext=(3, 2), textcoords="offset points", fontsize=8, color=INK,
                            rotation=90, va="top", ha="left")
        ax.set_xlim(hours_n[0], hours_n[-1] + 1 / 24)
        ax.set_ylim(0, top * 1.08)
        ax.xaxis.set_major_locator(AutoDateLocator(minticks=4, maxticks=8))
        ax.xaxis.set_major_formatter(DateFormatter("%d %b %H:%M"))
        ax.set_ylabel(f"{what} per hour")
        ax.set_xlabel("hour (UTC)")
        ax.grid(axis="y", color=GRID, lw=0.6)
        ax.set_axisbelow(True)
        if len(stacks) > 1:
            ax.legend(loc="upper left", ncols=min(4, len(stacks)))

    return _draw(key, 2.6, paint, f"{what.capitalize()} per hour" + (", stacked by arm" if len(stacks) > 1 else ""))


# SVG properties that may stand as presentation attributes (the rest of an inline style is dropped)
_PRESENTATION = {"fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity", "stroke-linecap",
                 "stroke-linejoin", "stroke-dasharray", "stroke-dashoffset", "stroke-miterlimit", "opacity",
                 "clip-path", "font-family", "font-size", "font-weight", "font-style", "text-anchor", "white-space"}


def without_inline_styles(svg: str) -> str:
    """``svg`` with its ``style="..."`` attributes turned into presentation attributes and its ``<style>`` elements
    dropped: a page served with a strict Content-Security-Policy (``default-src 'self'``, as the web UI's) refuses
    inline styles, and matplotlib writes every colour as one. Presentation attributes are markup, not style, so the
    chart keeps its colours; properties that are not presentation attributes (sizing) belong in the page's CSS."""
    svg = re.sub(r"<style[^>]*>.*?</style>", "", svg, flags=re.DOTALL)
    # a drawing sized by its style (the tree diagram) keeps its natural width as an attribute: the page's CSS
    # (max-width: 100%) still shrinks it to its column
    root = re.match(r"\s*<svg\b[^>]*>", svg)
    if root and " width=" not in root.group(0):
        natural = re.search(r'style="[^"]*max-width:\s*([0-9.]+)px', root.group(0))
        if natural:
            svg = svg.replace("<svg ", f'<svg width="{natural.group(1)}" ', 1)

    def attributes(match: re.Match) -> str:
        out = []
        for decl in html.unescape(match.group(1)).split(";"):
            name, _, value = decl.partition(":")
            name, value = name.strip(), value.strip()
            if name in _PRESENTATION and value:
                out.append(f' {name}="{html.escape(value)}"')
        return "".join(out)

    return re.sub(r'\sstyle="([^"]*)"', attributes, svg)


def labelled(svg: str, label: str) -> str:
    """``svg`` with an accessible name (``aria-label`` on its root, which has ``role="img"``), so that a screen reader
    announces what the chart shows; the page's text next to it carries the detail."""
    if not svg:
        return svg
    named = f'aria-label="{html.escape(label)}"'
    root = re.match(r"\s*<svg\b[^>]*>", svg)
    if root and "aria-label=" in root.group(0):  # every chart has a general name: replace it with the page's
        return svg[:root.start()] + re.sub(r'aria-label="[^"]*"', named, root.group(0), count=1) + svg[root.end():]
    return re.sub(r"<svg\b", f"<svg {named}", svg, count=1)
