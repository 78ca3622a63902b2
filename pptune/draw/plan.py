"""A plan's five charts (bubble, micro-batch size, timeline, balance, Pareto), drawn with matplotlib.

The series come from ``pptune.charts`` (pure, tested); the functions here only draw them. Figures are built
as ``matplotlib.figure.Figure`` objects (no pyplot state) and written by ``pptune.draw.save``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from pptune.charts.balance import BalanceChart
from pptune.charts.bubble import BubbleChart
from pptune.charts.mbs import MbsChart
from pptune.charts.pareto import ParetoChart
from pptune.charts.plan_charts import PlanCharts, plan_charts
from pptune.charts.timeline import TimelineChart
from pptune.draw.save import FORMATS, save_figure
from pptune.errors import ConfigError
from pptune.fileio import check_output_path, replace_dir

GIB = 2**30
FIGURES = ("bubble", "mbs", "timeline", "balance", "pareto")
OP_COLORS = {"F": "#4C72B0", "B": "#DD8452", "W": "#55A868"}
OP_NAMES = {"F": "forward", "B": "backward", "W": "weight gradient (zero-bubble W)"}
IDLE_COLOR = "#F4CCCC"
OOM_COLOR = "#D62728"
OFF_SCALE = 4.0  # a memory limit more than this many times the largest value is not drawn to scale
CHOSEN = dict(marker="*", s=320, color="gold", edgecolor="black", zorder=5)


def _pct(fraction: float) -> str:
    """A share as a percentage; float round-off below zero (a pipeline with no bubble) shows as 0.0%, not -0.0%."""
    return f"{max(fraction, 0.0):.1%}"


def _count(x: float, _pos: object = None) -> str:
    """Thousands as k, millions as M (tokens/s axes)."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _log2_axis(ax, ticks: tuple[int, ...], labels: list[str] | None = None) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks), labels or [str(t) for t in ticks])
    ax.minorticks_off()


def _annotate(ax, x: float, y: float, text: str) -> None:
    """A boxed note with an arrow to (x, y), on the side with room (call once the x axis is set up)."""
    lo, hi = ax.get_xlim()
    f = math.log if ax.get_xscale() == "log" else float
    flip = hi > lo and (f(x) - f(lo)) / (f(hi) - f(lo)) > 0.6
    ax.annotate(text, (x, y), xytext=(-14 if flip else 14, 14), textcoords="offset points", fontsize=9,
                ha="right" if flip else "left", bbox=dict(boxstyle="round", fc="lightyellow", ec="gray"),
                arrowprops=dict(arrowstyle="->"))


def _limit(ax, limit_gib: float, data_max_gib: float, *, vertical: bool = False) -> bool:
    """Draw the memory limit; one far beyond the data (a CPU host's RAM) goes in the legend only. True if drawn."""
    label = f"memory limit per GPU: {limit_gib:.0f} GiB"
    if limit_gib > OFF_SCALE * max(data_max_gib, 1e-9):
        ratio = f"{limit_gib / data_max_gib:.0f}x the peak" if data_max_gib > 0 else "nothing drawn"
        ax.plot([], [], color=OOM_COLOR, ls="--", label=f"{label} (off scale: {ratio})")
        return False
    (ax.axvline if vertical else ax.axhline)(limit_gib, color=OOM_COLOR, ls="--", lw=1.5, label=label)
    return True


def draw_bubble(chart: BubbleChart, *, title: str) -> Figure:
    """Bubble fraction (left) and predicted tokens/s (right) against micro-batches, a line per depth."""
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    ax_b, ax_t = fig.subplots(1, 2)
    colors = matplotlib.colormaps["viridis"](list(_spread(len(chart.lines))))
    uniform = chart.schedule in ("1f1b", "gpipe")  # the closed form holds for these two
    for line, color in zip(chart.lines, colors, strict=True):
        width = 2.6 if line.pp == chart.chosen_pp else 1.4
        label = f"pp {line.pp} x dp {line.dp}"
        ms = line.num_microbatches
        ax_b.plot(ms, [100 * b for b in line.bubble_fraction], "-", color=color, lw=width, label=label)
        ax_t.plot(ms, line.tokens_per_s, "-", color=color, lw=width, label=label)
        if uniform and line.pp > 1:
            ax_b.plot(ms, [100 * (line.pp - 1) / (m + line.pp - 1) for m in ms], ":", color=color, lw=1)
        for ax, ys in ((ax_b, [100 * b for b in line.bubble_fraction]), (ax_t, line.tokens_per_s)):
            fit = [(m, y) for m, y, ok in zip(ms, ys, line.feasible, strict=True) if ok]
            oom = [(m, y) for m, y, ok in zip(ms, ys, line.feasible, strict=True) if not ok and math.isfinite(y)]
            if fit:
                ax.scatter(*zip(*fit, strict=True), color=color, s=30, zorder=3)
            if oom:  # hollow: the prediction of a configuration that would run out of memory
                ax.scatter(*zip(*oom, strict=True), facecolors="white", edgecolors=color, s=30, zorder=3)
    extra = [Line2D([], [], marker="o", color="white", markeredgecolor="gray", ls="",
                    label="hollow: does not fit in GPU memory")]
    if uniform:
        extra.append(Line2D([], [], color="gray", ls=":", label="dotted: (p-1)/(m+p-1), uniform stages, no comm"))
    ms = chart.lines[0].num_microbatches if chart.lines else ()
    p = chart.chosen_pp
    m0 = chart.chosen_microbatches
    ax_b.scatter([m0], [100 * chart.chosen_bubble_fraction], **CHOSEN)
    ax_t.scatter([m0], [chart.chosen_tokens_per_s], **CHOSEN)
    for ax in (ax_b, ax_t):
        _log2_axis(ax, ms)
        ax.set_xlabel("micro-batches per step m (= gradient accumulation steps)")
        ax.grid(alpha=0.3)
    ax_b.set_ylabel("pipeline bubble (% of stage time idle)")
    ax_b.set_ylim(bottom=0)
    ax_t.set_ylabel("predicted throughput (tokens/s)")
    ax_t.yaxis.set_major_formatter(FuncFormatter(_count))
    ax_t.set_ylim(bottom=0)
    _annotate(ax_b, m0, 100 * chart.chosen_bubble_fraction, f"chosen: pp {p}, m {m0}\nbubble {_pct(chart.chosen_bubble_fraction)}")
    _annotate(ax_t, m0, chart.chosen_tokens_per_s, f"chosen: {_count(chart.chosen_tokens_per_s)} tokens/s")
    for ax in (ax_b, ax_t):
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + extra, fontsize=8, title="pipeline depth")
    fig.suptitle(f"{title}\nHow many micro-batches fill the pipeline? tp {chart.tp}, micro-batch {chart.micro_batch_size}, "
                 f"{chart.schedule}; dp = GPUs / (tp x pp), so the global batch = {chart.micro_batch_size} x m x dp",
                 fontsize=10)
    return fig


def _spread(n: int) -> list[float]:
    return [0.85 * i / max(1, n - 1) for i in range(n)]


def draw_mbs(chart: MbsChart, *, title: str) -> Figure:
    """Tokens/s (top) and per-stage peak memory with the GPU limit and the out-of-memory region (bottom)."""
    fig = Figure(figsize=(11, 8), layout="constrained")
    ax_t, ax_m = fig.subplots(2, 1, sharex=True)
    sizes = chart.micro_batch_sizes
    ok = [i for i, f in enumerate(chart.feasible) if f]
    bad = [i for i, f in enumerate(chart.feasible) if not f]
    ax_t.plot(sizes, chart.tokens_per_s, "-", color="gray", lw=1)
    ax_t.scatter([sizes[i] for i in ok], [chart.tokens_per_s[i] for i in ok], color="#4C72B0", zorder=3, label="fits")
    if bad:
        ax_t.scatter([sizes[i] for i in bad], [chart.tokens_per_s[i] for i in bad], marker="x", s=60, color=OOM_COLOR,
                     zorder=3, label="out of memory (prediction only)")
    limit = chart.memory_limit_bytes / GIB
    pp = chart.pp
    colors = matplotlib.colormaps["viridis"](_spread(pp))
    for s in range(pp):
        named = pp <= 8 or s in (0, pp - 1)
        ax_m.plot(sizes, [row[s] / GIB for row in chart.memory_per_stage_bytes], "o-", ms=3, color=colors[s],
                  lw=1.2, label=f"stage {s}" if named else None)
    peak_gib = max(chart.peak_memory_bytes, default=0) / GIB
    _stack_parts(ax_m, sizes, chart.peak_parts_bytes)
    drawn = _limit(ax_m, limit, peak_gib)
    right = sizes[-1] * 1.3 if sizes else 1
    for k, (lo, hi) in enumerate(chart.oom_spans):
        hi = right if sizes and hi >= sizes[-1] else hi
        for ax in (ax_t, ax_m):
            ax.axvspan(lo, hi, color=OOM_COLOR, alpha=0.1, lw=0, label="out-of-memory region" if k == 0 and ax is ax_m else None)
    c = sizes.index(chart.chosen_micro_batch_size) if chart.chosen_micro_batch_size in sizes else None
    if c is not None:
        ax_t.scatter([sizes[c]], [chart.tokens_per_s[c]], **CHOSEN, label="chosen")
        ax_m.scatter([sizes[c]], [chart.peak_memory_bytes[c] / GIB], **CHOSEN)
    if sizes:
        _log2_axis(ax_m, sizes, [f"{s}\nm={m}" for s, m in zip(sizes, chart.num_microbatches, strict=True)])
        ax_m.set_xlim(sizes[0] / 1.3, right)
    ax_t.set_ylabel("predicted throughput (tokens/s)")
    ax_t.yaxis.set_major_formatter(FuncFormatter(_count))
    ax_t.set_ylim(0, max(chart.tokens_per_s, default=1) * 1.2)  # zero-based: differences drawn to scale
    ax_m.set_ylabel("predicted peak memory per GPU (GiB)")
    ax_m.set_ylim(0, max(limit * 1.15 if drawn else 0, peak_gib * 1.25))
    if c is not None:
        _annotate(ax_t, sizes[c], chart.tokens_per_s[c], f"chosen: micro-batch {sizes[c]}, m {chart.num_microbatches[c]}\n"
                  f"{_count(chart.tokens_per_s[c])} tokens/s")
        _annotate(ax_m, sizes[c], chart.peak_memory_bytes[c] / GIB, f"chosen: peak {chart.peak_memory_bytes[c] / GIB:.2f} GiB")
    ax_m.set_xlabel("micro-batch size (samples), m = micro-batches per step at the plan's global batch")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best", ncol=2 if pp > 4 and ax is ax_m else 1)
    fig.suptitle(f"{title}\nHow large a micro-batch fits? Same layout and global batch, pp {pp}", fontsize=10)
    return fig


def _stack_parts(ax: object, sizes: tuple[int, ...], parts: tuple[dict[str, int], ...]) -> None:
    """The peak stage's memory parts stacked under the stage lines (their top is the peak); parts that are 0 at
    every size are left out of the legend."""
    if not parts or len(parts) != len(sizes):
        return
    names = [n for n in parts[0] if any(p.get(n, 0) for p in parts)]
    if not names:
        return
    colors = [matplotlib.colormaps["tab20"](i) for i in range(len(names))]
    ax.stackplot(sizes, *[[p.get(n, 0) / GIB for p in parts] for n in names], colors=colors, alpha=0.3,
                 labels=[f"peak stage: {n.replace('_', ' ')}" for n in names], zorder=1)


def draw_timeline(chart: TimelineChart, *, title: str) -> Figure:
    """Gantt chart per schedule: a row per stage, F/B/W boxes per micro-batch, idle time shaded."""
    rows = [max(2.2, min(6.5, 0.32 * p.config.pp + 1.4)) for p in chart.panels]
    fig = Figure(figsize=(14, sum(rows) + 1.2), layout="constrained")
    axes = fig.subplots(len(chart.panels), 1, sharex=True, height_ratios=rows, squeeze=False)[:, 0]
    end = max(max(p.step_ms, p.pipeline_ms) for p in chart.panels)
    if chart.measured is not None:
        end = max(end, chart.measured.step_ms)
    for ax, panel in zip(axes, chart.panels, strict=True):
        pp = panel.config.pp
        ax.barh(range(pp), [panel.pipeline_ms] * pp, left=0, height=0.8, color=IDLE_COLOR)
        few = len(panel.ops) / pp <= 48  # boxes wide enough to carry their micro-batch number
        groups: dict[tuple[int, str, bool], list[tuple[float, float]]] = {}
        for op in panel.ops:  # one broken_barh per (stage, op, virtual chunk): thousands of boxes draw fast
            groups.setdefault((op.stage, op.op, op.chunk >= pp), []).append((op.start_ms, op.end_ms - op.start_ms))
        for (stage, name, later), boxes in groups.items():
            # Later virtual chunks of interleaving are lighter.
            ax.broken_barh(boxes, (stage - 0.4, 0.8), facecolors=OP_COLORS[name], alpha=0.6 if later else 1.0,
                           edgecolor="white", lw=0.4 if few else 0)
        if few:
            for op in panel.ops:
                ax.text((op.start_ms + op.end_ms) / 2, op.stage, str(op.microbatch), ha="center", va="center",
                        fontsize=6, color="white")
        ax.axvline(panel.step_ms, color="black", ls="--", lw=1)
        ax.text(panel.step_ms, -0.55, "step end (after gradient all-reduce + optimizer) ", fontsize=7, va="bottom",
                ha="right")
        if chart.measured is not None and panel is chart.panels[0]:
            for stage in range(pp):
                boxes = [(o.start_ms, o.end_ms - o.start_ms) for o in chart.measured.ops if o.stage == stage]
                ax.broken_barh(boxes, (stage - 0.4, 0.8), facecolors="none", edgecolor="black", lw=0.8)
            ax.axvline(chart.measured.step_ms, color="purple", ls="-.", lw=1.5)
            ax.text(chart.measured.step_ms, pp - 0.55, "measured step (median, pptune measure) ", fontsize=7,
                    color="purple", ha="right", va="bottom")
        ax.set_yticks(range(pp), [f"stage {s}" for s in range(pp)], fontsize=8 if pp <= 16 else 6)
        ax.set_ylim(pp - 0.5, -0.9)
        ax.set_xlim(0, end * 1.02)
        ax.set_title(f"{panel.title}: {panel.config.label()} - pipeline {panel.pipeline_ms:,.1f} ms, "
                     f"bubble {_pct(panel.bubble_fraction)}, predicted step {panel.step_ms:,.1f} ms", fontsize=9)
    axes[-1].set_xlabel("time within one training step (ms)")
    ops = sorted({op.op for p in chart.panels for op in p.ops}, key="FBW".index)
    handles = [Patch(color=OP_COLORS[o], label=OP_NAMES[o]) for o in ops] + [Patch(color=IDLE_COLOR, label="idle (bubble)")]
    if any(op.chunk >= p.config.pp for p in chart.panels for op in p.ops):
        handles.append(Patch(color=OP_COLORS["F"], alpha=0.6, label="lighter: a stage's later model chunks (interleaved)"))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(handles))
    fig.suptitle(f"{title}\nWhere does the pipeline idle? Numbers in boxes are micro-batches", fontsize=10)
    return fig


def draw_balance(chart: BalanceChart, *, title: str) -> Figure:
    """Per-stage forward+backward time (top) and peak memory (bottom), one bar group per split method."""
    fig = Figure(figsize=(13, 8), layout="constrained")
    ax_t, ax_m = fig.subplots(2, 1, sharex=True)
    n = len(chart.splits)
    width = 0.8 / max(1, n)
    colors = ("#4C72B0", "#C44E52", "#8172B2", "#937860")
    pp = len(chart.splits[0].stages) if chart.splits else 1
    chosen = chart.splits[0].method.split(" = ")[0] if chart.splits else ""
    for k, split in enumerate(chart.splits):
        xs = [s + (k - (n - 1) / 2) * width for s in range(pp)]
        name = split.method.replace(chosen, f"{chosen} (chosen)", 1) if split.chosen else split.method
        fwd = [s.fwd_ms for s in split.stages]
        ax_t.bar(xs, fwd, width, color=colors[k % 4],
                 label=f"{name}: slowest stage {split.max_stage_ms:,.1f} ms, imbalance {split.imbalance:.2f}x, "
                       f"{_count(split.tokens_per_s)} tokens/s")
        ax_t.bar(xs, [s.bwd_ms for s in split.stages], width, bottom=fwd, color=colors[k % 4], alpha=0.55)
        ax_m.bar(xs, [s.memory_bytes / GIB for s in split.stages], width, color=colors[k % 4], label=name)
        if pp * n <= 24:
            for x, s in zip(xs, split.stages, strict=True):
                ax_t.text(x, s.fwd_ms + s.bwd_ms, f"L{s.first_layer}-{s.last_layer - 1}", ha="center", va="bottom",
                          fontsize=7, rotation=90 if n > 1 else 0)
    if chart.measured is not None:
        ax_t.scatter(range(pp), [f + b for f, b in zip(chart.measured.fwd_ms, chart.measured.bwd_ms, strict=True)],
                     marker="D", color="black", zorder=5,
                     label=f"measured fwd+bwd (pptune measure; stages built: {list(chart.measured.boundaries)})")
    top = max((s.memory_bytes / GIB for x in chart.splits for s in x.stages), default=0)
    if not _limit(ax_m, chart.memory_limit_bytes / GIB, top):
        ax_m.set_ylim(0, top * 1.35)  # room for the legend above the bars
    ax_t.set_ylabel("forward (solid) + backward (light)\nper micro-batch (ms)")
    ax_m.set_ylabel("predicted peak memory per GPU (GiB)")
    first = chart.splits[0].stages if chart.splits else ()
    ax_m.set_xticks(range(pp), [f"{s.stage}\nL{s.first_layer}-{s.last_layer - 1}" for s in first],
                    fontsize=9 if pp <= 16 else 7)
    ax_m.set_xlabel(f"pipeline stage and the layers the chosen split gives it (L0 = embedding, "
                    f"L{first[-1].last_layer - 1 if first else 0} = head)")
    for ax in (ax_t, ax_m):
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.margins(y=0.25)
    what_if = (f"\nThe plan has one stage, nothing to split: shown at pp 2, {chart.config.label()} (same global batch)"
               if chart.what_if else "")
    fig.suptitle(f"{title}\nIs the layer split even? The slowest stage sets the pace; DeepSpeed's default is "
                 f"'parameters'{what_if}", fontsize=10)
    return fig


def draw_pareto(chart: ParetoChart, *, title: str) -> Figure:
    """Tokens/s against peak memory for every evaluated configuration, the front highlighted."""
    fig = Figure(figsize=(11, 7), layout="constrained")
    ax = fig.subplots()
    depths = sorted({p.pp for p in chart.points if p.feasible})
    cmap = matplotlib.colormaps["tab10"]
    for k, pp in enumerate(depths):
        pts = [p for p in chart.points if p.feasible and p.pp == pp]
        ax.scatter([p.peak_memory_gib for p in pts], [p.tokens_per_s for p in pts], s=28, color=cmap(k % 10),
                   alpha=0.8, label=f"fits, pp {pp}")
    bad = [p for p in chart.points if not p.feasible]
    if bad:
        ax.scatter([p.peak_memory_gib for p in bad], [p.tokens_per_s for p in bad], marker="x", s=28, color="gray",
                   label="does not fit in GPU memory")
    if chart.front:
        ax.plot([p.peak_memory_gib for p in chart.front], [p.tokens_per_s for p in chart.front], "-", color="black",
                lw=1.5, drawstyle="steps-post", label=f"Pareto front ({len(chart.front)} configurations)")
    mems = [p.peak_memory_gib for p in chart.points]
    _limit(ax, chart.memory_limit_gib, max(mems, default=0), vertical=True)
    chosen = next((p for p in chart.points if p.chosen), None)
    if chosen is not None:
        ax.scatter([chosen.peak_memory_gib], [chosen.tokens_per_s], **CHOSEN, label="chosen")
    log = bool(mems) and min(mems) > 0 and max(mems) / min(mems) > 10  # orders of magnitude: the front sits left
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if chosen is not None:
        _annotate(ax, chosen.peak_memory_gib, chosen.tokens_per_s,
                  f"chosen: {chosen.label}\n{_count(chosen.tokens_per_s)} tokens/s, {chosen.peak_memory_gib:.2f} GiB")
    ax.set_xlabel(f"predicted peak memory per GPU (GiB{', log scale' if log else ''})")
    ax.set_ylabel("predicted throughput (tokens/s)")
    ax.yaxis.set_major_formatter(FuncFormatter(_count))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fits = sum(p.feasible for p in chart.points)
    rejected = f", {chart.rejected} rejected by the cost model" if chart.rejected else ""
    fig.suptitle(f"{title}\nWhat did the search find? {len(chart.points)} distinct configurations ({fits} fit{rejected})",
                 fontsize=10)
    return fig


def draw_charts(charts: PlanCharts) -> dict[str, Figure]:
    """Figure name -> figure for every chart of a plan (no pareto without a ranking)."""
    ctx = charts.context
    title = f"{ctx.headline}\nplan: {ctx.label}"
    figures = {
        "bubble": draw_bubble(charts.bubble, title=title),
        "mbs": draw_mbs(charts.mbs, title=title),
        "timeline": draw_timeline(charts.timeline, title=title),
        "balance": draw_balance(charts.balance, title=title),
    }
    if charts.pareto is not None:
        figures["pareto"] = draw_pareto(charts.pareto, title=title)
    return figures


def draw_plan_figures(plan_dir: str | os.PathLike, *, fmt: str = "png", charts: PlanCharts | None = None) -> list[Path]:
    """Draw every chart of a plan directory into ``plan_dir/figures/<name>.<fmt>`` and return the paths.

    Args:
        plan_dir: a directory written by ``pptune plan`` (plan.json, ranking.csv, optionally measured.json).
        fmt: ``png`` or ``svg``.
        charts: the series, when the caller computed them already (``plan_charts(plan_dir)``).

    Raises:
        SchemaError: plan.json, the profile it names, ranking.csv or measured.json is malformed or missing.
        ConfigError: an unknown format, or a plan the cost model no longer accepts.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"figure format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    charts = charts if charts is not None else plan_charts(plan_dir)
    out = Path(plan_dir) / "figures"
    check_output_path(out, kind="directory", flag="PLAN_DIR", replaced=True)
    figures = draw_charts(charts)
    # Every figure goes into a hidden folder beside figures/, which then replaces it as one unit: a crash, Ctrl-C
    # or SIGKILL while drawing leaves the old figures whole (figures of the other format are carried over).
    staged = Path(tempfile.mkdtemp(prefix=".figures.tmp-", dir=plan_dir))
    try:
        if out.is_dir():
            for old in out.iterdir():
                if old.is_file() and old.name not in {f"{name}.{fmt}" for name in figures}:
                    shutil.copy2(old, staged / old.name)
        for name, fig in figures.items():
            save_figure(fig, staged / f"{name}.{fmt}", fmt=fmt)
        replace_dir(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return [out / f"{name}.{fmt}" for name in figures]
