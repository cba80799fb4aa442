"""Per-worker timeline (Gantt) of a few sync intervals, from the step table.

What the eye should find: the local steps of each worker, the barrier where fast workers wait for the
slowest one, the blocking all-reduce, the outer step. So the window is chosen around syncs, at most eight
workers are drawn (spread over the ranks, so several nodes show), and consecutive rows of the same
category (compute, compute, ...) are drawn as one bar: step boundaries are not the point, waits are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from . import style
from .style import CATEGORY_COLOR, PHASE_CATEGORY, label, ordered

MAX_WORKERS = 8
SYNCS_SHOWN = 2  # sync intervals in the window
DDP_STEPS_SHOWN = 5
MIN_VISIBLE = 0.003  # bars other than compute are drawn at least this fraction of the window wide
RASTERIZE_ABOVE = 3000  # bars; beyond this the SVG would get heavy, so bars become one embedded image


def timeline(steps: pd.DataFrame, source: str) -> str | None:
    """One row per algorithm of ``source`` (first run only), <= 8 workers: on the left a few sync
    intervals, on the right a zoom on the last sync of that window, where the barrier waits show."""
    if steps is None or not len(steps):
        return None
    steps = steps[(steps["source"] == source) & (steps["phase"] != "allreduce_hidden")]
    rows = []
    for algo in ordered(steps["algorithm"]):
        part = steps[steps["algorithm"] == algo]
        part = part[part["run"] == part["run"].min()]
        workers = pick_workers(part["worker"].unique())
        part = part[part["worker"].isin(workers)]
        a, b = sync_window(part)
        wide = window_bars(part, a, b)
        if wide is not None:
            zoom = window_bars(part, *zoom_window(part, b))
            rows.append((algo, workers, steps.loc[steps["algorithm"] == algo, "worker"].nunique(), wide, zoom))
    if not rows:
        return None
    heights = [0.75 + 0.22 * len(r[1]) for r in rows]
    with style.figure(10.0, sum(heights) + 0.6, len(rows), 2, width_ratios=[2.2, 1],
                      gridspec_kw={"height_ratios": heights}) as (fig, axes):
        for (algo, workers, n_workers, wide, zoom), (ax_wide, ax_zoom) in zip(rows, axes, strict=True):
            shown = f"{len(workers)} of {n_workers} workers" if n_workers > len(workers) else f"{n_workers} workers"
            _draw(ax_wide, workers, wide, f"{label(algo)}: steps {wide.steps[0]}–{wide.steps[1]}, {shown}", algo)
            if zoom is not None:
                _draw(ax_zoom, workers, zoom, f"zoom: steps {zoom.steps[0]}–{zoom.steps[1]}", algo)
                ax_zoom.set_yticklabels([])
            else:
                ax_zoom.set_axis_off()
        used = {c for r in rows for w in (r[3], r[4]) if w is not None for c in w.bars["category"]}
        handles = [Patch(color=CATEGORY_COLOR[c], label=c) for c in CATEGORY_COLOR if c in used]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
        return style.to_svg(fig)


def pick_workers(workers) -> list[int]:
    """At most MAX_WORKERS ranks, evenly spread from the first to the last."""
    ranks = np.sort(np.asarray(workers))
    if len(ranks) <= MAX_WORKERS:
        return [int(r) for r in ranks]
    return [int(ranks[i]) for i in np.linspace(0, len(ranks) - 1, MAX_WORKERS).round().astype(int)]


def sync_window(part: pd.DataFrame) -> tuple[int, int]:
    """First and last step of the window.

    Sync steps are those with a blocking all-reduce. Warm-up (or DDP) syncs every step; a local sync is
    one that follows steps without any. The window runs from one local sync to the SYNCS_SHOWN-th next, so
    both ends show a barrier; without local syncs (DDP), DDP_STEPS_SHOWN steps after the first.
    """
    first, last = int(part["step"].min()), int(part["step"].max())
    synced = np.sort(part.loc[part["phase"] == "allreduce", "step"].unique())
    local = [int(s) for i, s in enumerate(synced) if i and s - synced[i - 1] > 1]
    if len(synced) and synced[0] > first:
        local.insert(0, int(synced[0]))
    if len(local) >= 2:
        return local[0], local[min(SYNCS_SHOWN, len(local) - 1)]
    if len(local) == 1:
        before = synced[synced < local[0]]
        return (int(before.max()) if len(before) else first), min(local[0] + 1, last)
    start = first + 1 if last - first >= DDP_STEPS_SHOWN else first
    return start, min(start + DDP_STEPS_SHOWN - 1, last)


@dataclass(frozen=True)
class Window:
    bars: pd.DataFrame
    """worker, category, start_s, end_s: one bar per run of same-category rows."""
    t0: float
    t1: float
    steps: tuple[int, int]


def window_bars(part: pd.DataFrame, a: int, b: int) -> Window | None:
    """The bars of steps a..b, same-category neighbours merged; None when the window is empty."""
    rows = part[(part["step"] >= a) & (part["step"] <= b)].copy()
    rows["category"] = rows["phase"].map(PHASE_CATEGORY)
    rows = rows.dropna(subset=["category"]).sort_values(["worker", "start_s"])
    if not len(rows):
        return None
    return Window(merge_bars(rows), float(rows["start_s"].min()), float(rows["end_s"].max()), (a, b))


def zoom_window(part: pd.DataFrame, sync_step: int) -> tuple[int, int]:
    """The step before a sync, the sync step and the one after: short enough for a wait to show."""
    first, last = int(part["step"].min()), int(part["step"].max())
    return max(first, sync_step - 1), min(last, sync_step + 1)


def merge_bars(rows: pd.DataFrame, tol_s: float = 1e-9) -> pd.DataFrame:
    """Join consecutive rows of one worker and category that touch (end == next start)."""
    same = (rows["worker"].eq(rows["worker"].shift()) & rows["category"].eq(rows["category"].shift())
            & (rows["start_s"] - rows["end_s"].shift()).abs().le(tol_s))
    group = (~same).cumsum()
    return rows.groupby(group).agg(worker=("worker", "first"), category=("category", "first"),
                                   start_s=("start_s", "min"), end_s=("end_s", "max")).reset_index(drop=True)


def _draw(ax, workers, window: Window, title: str, algo: str) -> None:
    unit, size = style.time_unit(window.t1 - window.t0)
    y_of = {w: i for i, w in enumerate(workers)}
    rasterize = len(window.bars) > RASTERIZE_ABOVE
    min_width = MIN_VISIBLE * (window.t1 - window.t0) / size
    for (category, worker), g in window.bars.groupby(["category", "worker"], sort=False):
        widths = (g["end_s"] - g["start_s"]) / size
        if category != "compute":  # a 1 ms outer step in a 1 s window must still show
            widths = widths.clip(lower=min_width)
        spans = list(zip((g["start_s"] - window.t0) / size, widths, strict=True))
        ax.broken_barh(spans, (y_of[worker] - 0.4, 0.8), facecolors=CATEGORY_COLOR[category],
                       rasterized=rasterize)
    ax.set_yticks(range(len(workers)), [f"worker {w}" for w in workers], fontsize=8)
    ax.set_ylim(len(workers) - 0.4, -0.6)
    ax.set_xlim(0, (window.t1 - window.t0) / size)
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(title, fontsize=9, loc="left", color=style.color(algo), fontweight="bold")
    ax.set_xlabel(f"time since step {window.steps[0]} started ({unit})", fontsize=8)
