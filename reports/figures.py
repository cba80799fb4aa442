"""Pure table -> figure functions. Each takes result tables (core/schema.py columns) and returns an inline
SVG string, or None when the table holds nothing to draw. No file is read here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import style
from .style import CATEGORIES, color, label, ordered

# Monte-Carlo band: the 5th to 95th percentile of the seeds (seaborn's "pi" = percentile interval).
BAND = ("pi", 90)


def breakdown(runs: pd.DataFrame, partial: Mapping[str, str] = MappingProxyType({})) -> str | None:
    """Stacked horizontal bars: where one worker's wall-clock goes, per algorithm (and source), mean over
    runs. Columns compute_s, comm_exposed_s, wait_s, pseudo_sync_s, outer_step_s, failure_s of the run table.
    """
    if runs is None or not len(runs):
        return None
    cols = [c for _, c, _, _ in CATEGORIES]
    mean = runs.groupby(["source", "algorithm"], sort=False)[cols].mean().reset_index()
    mean = mean.set_index("algorithm").loc[ordered(mean["algorithm"])].reset_index()
    two_sources = mean["source"].nunique() > 1
    names = [label(a) + (f" ({s})" if two_sources else "") + (f" ({partial[a]})" if a in partial else "")
             for a, s in zip(mean["algorithm"], mean["source"], strict=True)]
    unit, size = style.time_unit(float(mean[cols].sum(axis=1).max()))
    with style.figure(10.0, 1.1 + 0.45 * len(mean)) as (fig, axes):
        ax = axes[0, 0]
        y = np.arange(len(mean))[::-1]
        left = np.zeros(len(mean))
        for name, col, _, col_color in CATEGORIES:
            width = mean[col].to_numpy() / size
            if not width.any():
                continue
            ax.barh(y, width, left=left, color=col_color, label=name, height=0.62, edgecolor="white",
                    linewidth=0.5)
            left += width
        for yi, total in zip(y, left, strict=True):
            ax.text(total, yi, f" {style.number(total)} {unit}", va="center", fontsize=8)
        ax.set_yticks(y, names)
        for tick, algo in zip(ax.get_yticklabels(), mean["algorithm"], strict=True):
            tick.set_color(color(algo))
            tick.set_fontweight("bold")
        ax.set_xlabel(f"time per worker ({unit})")
        ax.set_xlim(0, left.max() * 1.15 if left.max() > 0 else 1)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(mean) < 3 else -0.18), ncols=6,
                  frameon=False, fontsize=8)
        ax.grid(axis="y", visible=False)
        return style.to_svg(fig)


def sweep_speedup(sweep: pd.DataFrame, key: str, crossovers: pd.DataFrame | None = None) -> str | None:
    """Speedup vs DDP against one swept key, one line per algorithm (mean over seeds, p05-p95 band),
    one panel per value of a second swept key, DDP parity at 1, crossovers marked."""
    if sweep is None or key not in sweep.columns or "speedup_vs_ddp" not in sweep.columns:
        return None
    data = sweep[sweep["algorithm"] != "ddp"].dropna(subset=["speedup_vs_ddp"])
    if not len(data):
        return None
    others = [c for c in sweep_keys(sweep) if c != key and sweep[c].nunique() > 1]
    facet = others[0] if others else None
    panels = _facet_values(data[facet]) if facet else [None]
    log_x = _spans_decade(data[key])
    with style.figure(min(3.0 + 3.6 * len(panels), 11.0), 3.4, 1, len(panels), sharey=True) as (fig, axes):
        for ax, value in zip(axes[0], panels, strict=True):
            part = data if value is None else data[data[facet] == value]
            sns.lineplot(part, x=key, y="speedup_vs_ddp", hue="algorithm", hue_order=ordered(part["algorithm"]),
                         palette=style.PALETTE, errorbar=BAND, style="algorithm", markers=style.MARKERS,
                         dashes=style.DASHES, markersize=5, ax=ax, legend=False)
            ax.axhline(1.0, color=style.color("ddp"), linestyle="--", linewidth=1)
            _mark_crossovers(ax, crossovers, key, facet, value)
            _x_ticks(ax, data[key], log_x)
            ax.set_xlabel(style.key_label(key))
            ax.set_ylabel("speedup vs DDP (×)")
            _workers_axis(ax, part, key)
            if value is not None:
                ax.set_title(f"{'.'.join(facet.split('.')[-2:])} = {value:g}", fontsize=9)
        _algorithm_legend(fig, ordered(data["algorithm"]), lines="styled", extra_ddp="DDP (= 1)")
        return style.to_svg(fig)


def _workers_axis(ax, part: pd.DataFrame, key: str) -> None:
    """Sweeping nodes (or GPUs per node) sweeps the number of workers: say how many, on a top axis."""
    if key not in ("cluster.nodes", "cluster.gpus_per_node") or "workers" not in part:
        return
    ratio = (part["workers"] / part[key]).unique()
    if len(ratio) == 1 and ratio[0] > 0:
        r = float(ratio[0])
        top = ax.secondary_xaxis("top", functions=(lambda x: x * r, lambda x: x / r))
        values = np.sort(part[key].unique())
        if len(values) <= 8:
            top.set_xticks(values * r, [f"{v * r:g}" for v in values])
            top.minorticks_off()
        top.set_xlabel("workers", fontsize=8)
        top.tick_params(labelsize=8)


def sweep_keys(sweep: pd.DataFrame) -> list[str]:
    """The swept experiment keys: the dotted columns of sweep.csv (cluster.inter_node.bandwidth_gbps, ...)."""
    return [c for c in sweep.columns if "." in c]


def _facet_values(values: pd.Series, most: int = 3) -> list:
    uniq = sorted(values.dropna().unique())
    if len(uniq) <= most:
        return uniq
    return [uniq[i] for i in np.linspace(0, len(uniq) - 1, most).round().astype(int)]


def _x_ticks(ax, values: pd.Series, log_x: bool) -> None:
    """Log axis for keys that span a decade; ticks at the swept values when there are few of them."""
    uniq = np.sort(values.dropna().unique())
    if log_x and uniq[0] <= 0:  # a zero (no stragglers, say) cannot sit on a log axis: linear near it
        ax.set_xscale("symlog", linthresh=float(uniq[uniq > 0][0]), linscale=0.5)
    elif log_x:
        ax.set_xscale("log")
    if len(uniq) <= 8:
        ax.set_xticks(uniq, [f"{v:g}" for v in uniq])
        ax.minorticks_off()
    elif log_x:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    elif _integers(values):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _integers(values: pd.Series) -> bool:
    v = values.dropna().to_numpy(dtype=float)
    return bool(len(v)) and bool(np.all(v == np.round(v)))


def _spans_decade(values: pd.Series) -> bool:
    v = values[values > 0]
    return len(v) > 1 and v.max() / v.min() >= 10


def _mark_crossovers(ax, crossovers, key, facet, value) -> None:
    if crossovers is None or not len(crossovers) or "key" not in crossovers:
        return
    rows = crossovers[crossovers["key"] == key]
    for row in rows.itertuples():
        fixed_key = getattr(row, "fixed_key", None)
        if facet and isinstance(fixed_key, str) and fixed_key == facet and not np.isclose(row.fixed_value, value):
            continue
        ax.axvline(row.value, color=color(row.algorithm), linestyle=":", linewidth=1.4)
        ax.plot([row.value], [1.0], marker="D", color=color(row.algorithm), markersize=7,
                markeredgecolor="black", zorder=5)
        ax.annotate(f"{row.value:.3g}", (row.value, 1.0), textcoords="offset points", xytext=(4, 6),
                    fontsize=8, color=color(row.algorithm))


def _algorithm_legend(fig, algorithms, *, lines: str = "solid", extra_ddp: str | None = None) -> None:
    """One legend per figure, outside on the right: colour and marker per algorithm; ``lines`` is "solid",
    "styled" (the sweep's per-algorithm dashes) or "none" (scatter plots)."""
    def linestyle(a: str):
        if lines == "none":
            return "none"
        return (0, style.DASHES[a]) if lines == "styled" and style.DASHES.get(a) else "-"

    handles = [Line2D([], [], color=color(a), marker=style.MARKERS.get(a, "o"), label=label(a),
                      linestyle=linestyle(a)) for a in algorithms]
    if extra_ddp:
        handles.append(Line2D([], [], color=color("ddp"), linestyle="--", label=extra_ddp))
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=8)


def predicted_vs_measured(comparison: pd.DataFrame) -> str | None:
    """One panel per metric: predicted against measured, the identity line, each point's error in %."""
    if comparison is None or not len(comparison):
        return None
    data = comparison.dropna(subset=["predicted", "measured"])
    metrics = [m for m in ("step_time_mean_s", "wall_clock_s", "speedup_vs_ddp") if m in set(data["metric"])]
    metrics += sorted(set(data["metric"]) - set(metrics))
    if not metrics:
        return None
    with style.figure(min(3.0 + 3.4 * len(metrics), 11.0), 3.6, 1, len(metrics)) as (fig, axes):
        for ax, metric in zip(axes[0], metrics, strict=True):
            part = data[data["metric"] == metric]
            _identity_panel(ax, part, metric)
        _algorithm_legend(fig, ordered(data["algorithm"]), lines="none")
        return style.to_svg(fig)


def _identity_panel(ax, part: pd.DataFrame, metric: str) -> None:
    unit = "×" if metric == "speedup_vs_ddp" else "s"
    sns.scatterplot(part, x="measured", y="predicted", hue="algorithm", palette=style.PALETTE, s=45, ax=ax,
                    style="algorithm", markers=style.MARKERS, legend=False, edgecolor="black", linewidth=0.4)
    lo = float(min(part["measured"].min(), part["predicted"].min()))
    hi = float(max(part["measured"].max(), part["predicted"].max()))
    log = unit == "s" and lo > 0 and hi / lo >= 10
    pad = (hi / lo) ** 0.08 if log else (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    lims = (lo / pad, hi * pad) if log else (lo - pad, hi + pad)
    ax.plot(lims, lims, color="black", linewidth=0.8, label="identity")
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    err_unit = "pp" if metric == "speedup_vs_ddp" else "%"  # harness/machinery/compare.py: speedups in points
    if len(part) <= 24:
        for row in part.itertuples():
            ax.annotate(f"{row.error_pct:+.1f}{err_unit}", (row.measured, row.predicted),
                        textcoords="offset points", xytext=(5, -9), fontsize=7)
    err = part["error_pct"].abs()
    ax.set_title(f"{metric}\n|error|: geo-mean {geomean_abs(err):.1f} {err_unit}, max {err.max():.1f} {err_unit}",
                 fontsize=9)
    ax.set_xlabel(f"measured ({unit})")
    ax.set_ylabel(f"predicted ({unit})")


def geomean_abs(errors_pct: pd.Series, floor_pct: float = 0.01) -> float:
    """Geometric mean of |error|, each floored at ``floor_pct`` so one exact hit does not make it 0."""
    e = np.maximum(np.abs(errors_pct.dropna().to_numpy(dtype=float)), floor_pct)
    return float(np.exp(np.log(e).mean())) if len(e) else math.nan


def loss_curves(metrics: pd.DataFrame, targets: pd.DataFrame | None = None) -> str | None:
    """Training loss (mean over workers, rolling mean over steps) against step and against wall-clock, per
    algorithm; evaluation loss as dots; the target loss and each algorithm's time to reach it marked."""
    curves = loss_table(metrics)
    if curves is None:
        return None
    unit, size = style.time_unit(float(curves["end_s"].max()))
    curves = curves.assign(wall=curves["end_s"] / size)
    algos = ordered(curves["algorithm"])
    with style.figure(10.0, 3.6, 1, 2, sharey=True) as (fig, axes):
        ax_step, ax_time = axes[0]
        sns.lineplot(curves, x="step", y="smooth", hue="algorithm", hue_order=algos, palette=style.PALETTE,
                     errorbar=BAND, ax=ax_step, legend=False)
        sns.lineplot(curves, x="wall", y="smooth", hue="algorithm", hue_order=algos, palette=style.PALETTE,
                     units="run", estimator=None, ax=ax_time, legend=False)
        evals = curves.dropna(subset=["eval_loss"])
        for ax, x in ((ax_step, "step"), (ax_time, "wall")):
            if len(evals):
                sns.scatterplot(evals, x=x, y="eval_loss", hue="algorithm", palette=style.PALETTE, style="algorithm",
                                markers=style.MARKERS, s=26, ax=ax, legend=False, edgecolor="black", linewidth=0.3)
        _mark_targets(ax_step, ax_time, targets, size)
        ax_step.set_xlabel("step")
        ax_time.set_xlabel(f"wall-clock ({unit})")
        ax_step.set_ylabel("loss")
        _algorithm_legend(fig, algos)
        return style.to_svg(fig)


def loss_table(metrics: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per (source, algorithm, run, step): loss and eval loss averaged over workers, the step's end (the
    slowest worker's), and a rolling mean of the loss over about 1/40 of the steps (noise hides trends)."""
    if metrics is None or not len(metrics) or "loss" not in metrics:
        return None
    keys = ["source", "algorithm", "run", "step"]
    g = metrics.groupby(keys, sort=True)
    out = g.agg(loss=("loss", "mean"), eval_loss=("eval_loss", "mean"), end_s=("end_s", "max")).reset_index()
    out = out.dropna(subset=["loss"])
    if not len(out):
        return None
    window = max(1, int(out.groupby(keys[:3]).size().max()) // 40)
    out["smooth"] = out.groupby(keys[:3])["loss"].transform(lambda s: s.rolling(window, min_periods=1).mean())
    return out


def _mark_targets(ax_step, ax_time, targets: pd.DataFrame | None, size: float) -> None:
    if targets is None or not len(targets):
        return
    for target in targets["target_loss"].dropna().unique():
        for ax in (ax_step, ax_time):
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
        ax_time.annotate(f"target {target:.3g}", (0, target), xycoords=("axes fraction", "data"),
                         xytext=(3, 3), textcoords="offset points", fontsize=8)
    measured = targets[targets["source"] == "real"] if "source" in targets else targets  # metrics are real
    for row in measured.dropna(subset=["time_to_target_s"]).itertuples():
        ax_time.axvline(row.time_to_target_s / size, color=color(row.algorithm), linestyle=":", linewidth=1.4)


SENSITIVITY_MEASURES = (("same steps", "speedup_vs_ddp"), ("to target", "speedup_to_target_vs_ddp"))


def sensitivity(table: pd.DataFrame, crossovers: pd.DataFrame | None = None) -> str | None:
    """Speedup vs DDP around the user's point: one panel per varied key (inter-node bandwidth, nodes, H),
    a row for the same steps and one for the target loss when a convergence description gives it; the
    user's point is a star on a grey line, crossovers are diamonds."""
    if table is None or not len(table):
        return None
    data = table[table["algorithm"] != "ddp"]
    measures = [(m, c) for m, c in SENSITIVITY_MEASURES if c in data and data[c].notna().any()]
    keys = list(dict.fromkeys(data["key"]))
    if not measures or not keys:
        return None
    with style.figure(min(2.0 + 3.2 * len(keys), 11.0), 0.6 + 2.8 * len(measures), len(measures), len(keys),
                      sharey="row") as (fig, axes):
        for row, (measure, column) in enumerate(measures):
            for ax, key in zip(axes[row], keys, strict=True):
                part = data[data["key"] == key].dropna(subset=[column])
                if len(part):
                    sns.lineplot(part, x="value", y=column, hue="algorithm", hue_order=ordered(part["algorithm"]),
                                 palette=style.PALETTE, style="algorithm", markers=style.MARKERS,
                                 dashes=style.DASHES, markersize=5, ax=ax, legend=False)
                    _mark_user_point(ax, part, column)
                    _x_ticks(ax, part["value"], _spans_decade(part["value"]))
                ax.axhline(1.0, color=style.color("ddp"), linestyle="--", linewidth=1)
                if crossovers is not None and "speedup" in crossovers:
                    _mark_crossovers(ax, crossovers[crossovers["speedup"] == measure], key, None, None)
                ax.set_xlabel(style.key_label(key))
                ax.set_ylabel(f"speedup vs DDP, {measure} (×)")
        _algorithm_legend(fig, ordered(data["algorithm"]), lines="styled", extra_ddp="DDP (= 1)")
        return style.to_svg(fig)


def _mark_user_point(ax, part: pd.DataFrame, column: str) -> None:
    """The experiment the user asked about: a grey line at its value and a star on every curve."""
    own = part[part["user_point"].astype(bool)]
    if not len(own):
        return
    ax.axvline(float(own["value"].iloc[0]), color="0.5", linewidth=6, alpha=0.25, zorder=0)
    for row in own.itertuples():
        ax.plot([row.value], [getattr(row, column)], marker="*", markersize=13, color=color(row.algorithm),
                markeredgecolor="black", zorder=6)
