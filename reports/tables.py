"""Result tables -> the report's HTML tables and headline sentences.

Every number cell keeps its exact value in ``data-value`` beside the rounded text a reader sees, so the
report can be checked against the result files (the tests do) and copied without rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd

from ..core.schema import COMPARED_METRICS
from .figures import geomean_abs
from .style import label, ordered


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None
    css: str = ""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    css: str = ""


# --- formatting ---------------------------------------------------------------------------------------

def fmt_s(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    sign, s = ("-" if seconds < 0 else ""), abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= 2 * size:
            return f"{sign}{s / size:.2f} {unit}"
    return f"{sign}{s:.3g} s" if s >= 1 or s == 0 else f"{sign}{s * 1e3:.3g} ms"


def fmt_bytes(n: float) -> str:
    if n is None or not math.isfinite(n):
        return "–"
    sign, b = ("-" if n < 0 else ""), abs(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{sign}{b / size:.3g} {unit}"
    return f"{sign}{b:.0f} B"


def fmt_x(speedup: float) -> str:
    return "–" if speedup is None or not math.isfinite(speedup) else f"{speedup:.2f}×"


def num(value: float, text: str) -> Cell:
    v = float(value) if value is not None and np.isfinite(value) else None
    return Cell(text, v, "num")


def faster(speedup: float) -> str:
    """1.31 -> "1.31x faster than"; 0.8 -> "1.25x slower than"."""
    if speedup >= 1:
        return f"{speedup:.2f}x faster than"
    return f"{1 / speedup:.2f}x slower than"


# --- summary of a simulate or run folder ---------------------------------------------------------------

def summary_table(runs: pd.DataFrame, partial: Mapping[str, str] = MappingProxyType({})) -> Table:
    """Per source and algorithm (mean over runs; p05-p95 of the speedup with several runs): speedup vs
    DDP, wall-clock, step time, exposed communication and bytes, and what each saves against DDP.
    An algorithm in ``partial`` (or against a partial DDP) did not run the same budget: no speedup, and
    the cell says why (``partial`` maps each such algorithm to "partial" or "diverged")."""
    cols = ["speedup_vs_ddp", "wall_clock_s", "step_time_mean_s", "comm_exposed_s", "wait_s",
            "bytes_sent_per_worker", "syncs", "pseudo_sync_steps", "steps"]
    g = runs.groupby(["source", "algorithm"], sort=False)
    mean, n = g[cols].mean(), g.size()
    lo, hi = g["speedup_vs_ddp"].quantile(0.05), g["speedup_vs_ddp"].quantile(0.95)
    rows = []
    for source in sorted(runs["source"].unique()):
        ddp = mean.loc[(source, "ddp")] if (source, "ddp") in mean.index else None
        for algo in ordered(runs.loc[runs["source"] == source, "algorithm"]):
            m, key = mean.loc[(source, algo)], (source, algo)
            spread = f" ({lo[key]:.2f}–{hi[key]:.2f})" if n[key] > 1 and math.isfinite(m.speedup_vs_ddp) else ""
            speedup = num(m.speedup_vs_ddp, fmt_x(m.speedup_vs_ddp) + spread)
            why = partial.get(algo) or partial.get("ddp")
            if why:
                speedup = Cell(f"– ({why}: {m.steps:.0f} steps)")
            saved_b = ddp.bytes_sent_per_worker - m.bytes_sent_per_worker if ddp is not None else math.nan
            saved_pct = 100 * saved_b / ddp.bytes_sent_per_worker if ddp is not None and ddp.bytes_sent_per_worker \
                else math.nan
            saved_s = ddp.comm_exposed_s - m.comm_exposed_s if ddp is not None else math.nan
            rows.append([
                Cell(source), Cell(label(algo), css=f"algo {algo}"), Cell(str(int(n[key])), float(n[key]), "num"),
                speedup, num(m.wall_clock_s, fmt_s(m.wall_clock_s)), num(m.step_time_mean_s, fmt_s(m.step_time_mean_s)),
                num(m.comm_exposed_s, fmt_s(m.comm_exposed_s)), num(saved_s, fmt_s(saved_s)),
                num(m.wait_s, fmt_s(m.wait_s)), num(m.bytes_sent_per_worker, fmt_bytes(m.bytes_sent_per_worker)),
                num(saved_b, fmt_bytes(saved_b) + (f" ({saved_pct:.0f}%)" if math.isfinite(saved_pct) else "")),
                num(m.syncs, f"{m.syncs:,.0f}"), num(m.pseudo_sync_steps, f"{m.pseudo_sync_steps:,.0f}"),
            ])
    headers = ["source", "algorithm", "runs", "speedup vs DDP", "wall-clock", "step time", "exposed comm",
               "exposed comm saved vs DDP", "waiting", "bytes sent / worker", "bytes saved vs DDP",
               "blocking syncs / worker", "pseudo-sync steps / worker"]
    notes = ["Times are per worker, averaged over workers, then over runs (Monte-Carlo seeds); "
             "speedup = DDP wall-clock / wall-clock of the same seed and budget, with its 5th–95th "
             "percentile over seeds in brackets; the tail columns give the 50th, 95th and 99th "
             "percentiles over seeds."] if n.max() > 1 else []
    if n.max() > 1:
        headers, rows = _with_tails(runs, headers, rows)
    return Table(headers, rows, notes=notes, css="summary")


TAILS = (0.5, 0.95, 0.99)


def _with_tails(runs: pd.DataFrame, headers: list[str], rows: list[list[Cell]]):
    """Two more columns, in the rows' order: p50 / p95 / p99 over seeds of the wall-clock and the speedup."""
    q = runs.groupby(["source", "algorithm"], sort=False)[["wall_clock_s", "speedup_vs_ddp"]].quantile(list(TAILS))
    for row in rows:
        key = (row[0].text, row[1].css.split()[-1])
        wall = [q.loc[(*key, t), "wall_clock_s"] for t in TAILS]
        speed = [q.loc[(*key, t), "speedup_vs_ddp"] for t in TAILS]
        row.append(num(wall[-1], " / ".join(fmt_s(w) for w in wall)))
        row.append(num(speed[-1], " / ".join(fmt_x(x) for x in speed)))
    return [*headers, "wall-clock p50 / p95 / p99", "speedup p50 / p95 / p99"], rows


def headline(runs: pd.DataFrame, experiment: dict, partial: Mapping[str, str] = MappingProxyType({})) -> str | None:
    """"On <cluster>, PALSGD is predicted 1.31x faster than DDP for <workload> (<budget>)"; nothing from
    algorithms that did not finish (``partial``): their speedup would compare different budgets."""
    if runs is None or "ddp" not in set(runs["algorithm"]) or "ddp" in partial:
        return None
    runs = runs[~runs["algorithm"].isin(list(partial))]
    source = "real" if "real" in set(runs["source"]) else "sim"
    mean = runs[runs["source"] == source].groupby("algorithm")["speedup_vs_ddp"].mean().dropna()
    others = mean.drop(index="ddp", errors="ignore")
    if not len(others):
        return None
    main = "palsgd" if "palsgd" in others.index else others.idxmax()
    verb = "measured" if source == "real" else "predicted"
    where = experiment.get("cluster", {}).get("name")
    what = experiment.get("workload", {}).get("name")
    speed, tail = _speed_text(runs[runs["source"] == source], experiment, main, others[main])
    text = (f"On {where}, " if where else "") + f"{label(main)} is {verb} {speed}"
    text += (f" for {what}" if what else "") + (f" ({budget_text(experiment)})" if budget_text(experiment) else "")
    text += tail
    best = others.idxmax()
    if best != main:
        text += f"; the fastest is {label(best)}, {faster(others[best])} DDP"
    return text + "."


def _speed_text(runs: pd.DataFrame, experiment: dict, main: str, same: float) -> tuple[str, str]:
    """Which speedup is which: to the target (a measured description's loss, or DDP's final loss by the
    published prior, with its band) first, the same-steps one beside it; or the same-steps one, and after
    the sentence's workload, why there is no speedup to a target."""
    rows = runs[runs["algorithm"] == main]
    to_target = rows["speedup_to_target_vs_ddp"].mean() if "speedup_to_target_vs_ddp" in rows else math.nan
    described = experiment.get("workload", {}).get("convergence")
    if math.isfinite(to_target) and described:  # what a user switching from DDP cares about: quality sooner
        return (f"{faster(to_target)} DDP to held-out loss {described['target_loss']:g} "
                f"({faster(same)} DDP for the same steps)"), ""
    if math.isfinite(to_target):
        lo, hi = rows["speedup_to_target_low_vs_ddp"].mean(), rows["speedup_to_target_high_vs_ddp"].mean()
        return (f"{faster(to_target)} DDP to DDP's final loss (speedup {to_target:.2f}x, band {lo:.2f}-{hi:.2f}x, "
                f"steps from the published DiLoCo scaling laws, prior {rows['convergence_source'].iloc[0]}) and "
                f"{faster(same)} DDP for the same steps"), ""
    note = rows["convergence_note"].dropna() if "convergence_note" in rows else pd.Series(dtype=object)
    why = f" (no speedup to a target loss: {note.iloc[0]})" if len(note) else ""
    return f"{faster(same)} DDP", f", for the same steps{why}"


def budget_text(experiment: dict) -> str:
    budget = experiment.get("budget", {})
    if budget.get("epochs"):
        return f"{budget['epochs']:g} epochs"
    return f"{budget['steps']:,} steps" if budget.get("steps") else ""


# --- sweeps --------------------------------------------------------------------------------------------

def sweep_headline(sweep: pd.DataFrame, keys: list[str], crossovers: pd.DataFrame | None) -> str | None:
    """The range of each algorithm's mean speedup over the sweep, and where it crosses DDP."""
    if sweep is None or "speedup_vs_ddp" not in sweep or not keys:
        return None
    mean = sweep.groupby([*keys, "algorithm"])["speedup_vs_ddp"].mean().reset_index()
    parts = []
    for algo in ordered(mean["algorithm"]):
        if algo == "ddp":
            continue
        s = mean.loc[mean["algorithm"] == algo, "speedup_vs_ddp"]
        parts.append(f"{label(algo)} {s.min():.2f}–{s.max():.2f}×")
    span = "; ".join(f"{k} {sweep[k].min():g}–{sweep[k].max():g}" for k in keys)
    text = f"Over {span}, speedup vs DDP: " + ", ".join(parts) + "."
    if crossovers is not None and len(crossovers):
        said = [_crossing_text(r) for r in crossovers.head(3).itertuples()]
        more = f" ({len(crossovers) - 3} more below)" if len(crossovers) > 3 else ""
        text += " " + "; ".join(said) + more + "."
    return text


def _crossing_text(r) -> str:
    """"PALSGD overtakes DDP at cluster.inter_node.bandwidth_gbps = 4.3 (with palsgd.sync_every = 1)"."""
    fixed = getattr(r, "fixed_key", None)
    at = f" (with {'.'.join(fixed.split('.')[-2:])} = {r.fixed_value:g})" if isinstance(fixed, str) and fixed else ""
    measure = f" ({r.speedup})" if isinstance(getattr(r, "speedup", None), str) else ""
    return f"{label(r.algorithm)} {r.direction} DDP{measure} at {r.key} = {r.value:.3g}{at}"


def crossover_table(crossovers: pd.DataFrame) -> Table:
    rows = []
    for r in crossovers.itertuples():
        fixed = f"{r.fixed_key} = {r.fixed_value:g}" if isinstance(getattr(r, "fixed_key", None), str) else ""
        measure = getattr(r, "speedup", None)
        rows.append([Cell(label(r.algorithm), css=f"algo {r.algorithm}"), Cell(str(r.direction)),
                     Cell(str(r.key)), num(r.value, f"{r.value:.4g}"), Cell(fixed),
                     Cell(measure if isinstance(measure, str) else "same steps")])
    return Table(["algorithm", "direction", "key", "crossover value", "at", "speedup"], rows,
                 caption="Where an algorithm's speedup vs DDP crosses 1 (interpolated between grid points).")


# --- predicted vs measured ----------------------------------------------------------------------------



def error_unit(metric: str) -> str:
    """Times err in % of the measurement; a speedup in percentage points (harness/machinery/compare.py)."""
    return "pp" if metric == "speedup_vs_ddp" else "%"


def comparison_from_runs(runs: pd.DataFrame, case: str, experiment: dict) -> pd.DataFrame | None:
    """A run folder whose runs.csv holds both sim and real rows, as the rows of comparison.csv: means over
    runs, error_pct as ``harness.machinery.compare.error_pct`` defines it (the tests hold the two together)."""
    if runs is None or not {"sim", "real"} <= set(runs["source"]):
        return None
    mean = runs.groupby(["source", "algorithm"])[list(COMPARED_METRICS)].mean()
    rows = []
    for algo in ordered(runs["algorithm"]):
        if ("sim", algo) not in mean.index or ("real", algo) not in mean.index:
            continue
        for metric in COMPARED_METRICS:
            p, m = mean.loc[("sim", algo), metric], mean.loc[("real", algo), metric]
            if (metric == "speedup_vs_ddp" and algo == "ddp") or not (np.isfinite(p) and np.isfinite(m) and m):
                continue  # DDP's speedup is 1 by definition on both sides
            err = 100 * (p - m) if metric == "speedup_vs_ddp" else 100 * (p - m) / m
            rows.append({"case": case, "workload": experiment.get("workload", {}).get("name", ""),
                         "network": experiment.get("cluster", {}).get("name", ""), "algorithm": algo,
                         "metric": metric, "predicted": p, "measured": m, "error_pct": err})
    return pd.DataFrame(rows) if rows else None


def error_summary(comparison: pd.DataFrame) -> Table:
    """Per metric: points, geometric mean and maximum of |error| (and the case of the maximum)."""
    rows = []
    for metric, part in comparison.groupby("metric", sort=False):
        err, unit = part["error_pct"].abs(), error_unit(metric)
        worst = part.loc[err.idxmax()]
        rows.append([Cell(str(metric)), Cell(str(len(part)), float(len(part)), "num"),
                     num(geomean_abs(err), f"{geomean_abs(err):.1f} {unit}"),
                     num(err.max(), f"{err.max():.1f} {unit}"), Cell(f"{worst['case']} / {label(worst['algorithm'])}")])
    return Table(["metric", "points", "geo-mean |error|", "max |error|", "worst case"], rows,
                 caption="error = (predicted − measured) / measured for times (%), predicted − measured for "
                         "speedups (percentage points, pp); |error| below 0.01 counts as 0.01 in the "
                         "geometric mean.")


def comparison_table(comparison: pd.DataFrame, most: int = 60) -> Table:
    rows = []
    for r in comparison.head(most).itertuples():
        fmt = fmt_x if r.metric == "speedup_vs_ddp" else fmt_s
        rows.append([Cell(str(r.case)), Cell(str(r.workload)), Cell(str(r.network)),
                     Cell(label(r.algorithm), css=f"algo {r.algorithm}"), Cell(str(r.metric)),
                     num(r.predicted, fmt(r.predicted)), num(r.measured, fmt(r.measured)),
                     num(r.error_pct, f"{r.error_pct:+.1f} {error_unit(r.metric)}")])
    notes = [f"first {most} of {len(comparison)} rows; all are in comparison.csv"] if len(comparison) > most else []
    return Table(["case", "workload", "network", "algorithm", "metric", "predicted", "measured", "error"],
                 rows, notes=notes)


def validation_headline(comparison: pd.DataFrame) -> str:
    """"Predicted vs measured over 3 case(s): times within 4.1% (geo-mean |error|; max 9.8%), ..."""
    parts = []
    for what, sel in (("times", comparison["metric"] != "speedup_vs_ddp"),
                      ("speedups", comparison["metric"] == "speedup_vs_ddp")):
        err, unit = comparison.loc[sel, "error_pct"].abs().dropna(), "pp" if what == "speedups" else "%"
        if len(err):
            parts.append(f"{what} within {geomean_abs(err):.1f} {unit} (geo-mean |error|; max {err.max():.1f} {unit})")
    return f"Predicted vs measured over {comparison['case'].nunique()} case(s): " + ", ".join(parts) + "."


# --- time to target -----------------------------------------------------------------------------------

def targets_table(targets: pd.DataFrame) -> Table:
    """Time to the target loss per algorithm, with its speedup vs DDP (DDP's time / this time), and the
    speedup for the same budget when targets.csv has it (``harness/commands/targets.py``)."""
    t = targets.copy()
    for col, default in (("source", "real"), ("cluster", "")):
        if col not in t:
            t[col] = default
    if "speedup_to_target" not in t:
        ddp = t[t["algorithm"] == "ddp"].groupby(["source", "cluster"])["time_to_target_s"].mean()
        t["speedup_to_target"] = [ddp.get((s, c), math.nan) / x for s, c, x in
                                  zip(t["source"], t["cluster"], t["time_to_target_s"], strict=True)]
    rows = []
    for (source, cluster), g in t.groupby(["source", "cluster"], sort=False):
        for algo in ordered(g["algorithm"]):
            r = g[g["algorithm"] == algo].mean(numeric_only=True)
            reached = g.loc[g["algorithm"] == algo, "time_to_target_s"].notna().all()
            rows.append([Cell(str(source)), Cell(str(cluster)), Cell(label(algo), css=f"algo {algo}"),
                         num(r.target_loss, f"{r.target_loss:.4g}"),
                         num(r.time_to_target_s, fmt_s(r.time_to_target_s) if reached else "not reached"),
                         num(r.speedup_to_target, fmt_x(r.speedup_to_target)),
                         num(r.get("speedup_same_budget", math.nan), fmt_x(r.get("speedup_same_budget", math.nan))),
                         _error_cell(r.get("error_vs_measured", math.nan))])
    return Table(["source", "cluster", "algorithm", "target loss", "time to target", "speedup vs DDP to target",
                  "speedup vs DDP, same budget", "time to target vs measured"], rows)


def _error_cell(error: float) -> Cell:
    return num(error, f"{error:+.1%}" if math.isfinite(error) else "")


def time_to_target(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Wall-clock at which each algorithm's loss first falls to ``target``, linearly interpolated between
    steps, on its evaluation loss when it has one, else its training loss (mean over workers), as
    ``harness/commands/targets.py`` does for ``palsgd time-to-target``; NaN when never reached. A non-finite loss
    (a diverged run) never reaches a target."""
    rows = []
    for (source, algo), part in curves.groupby(["source", "algorithm"], sort=False):
        col = "eval_loss" if part["eval_loss"].notna().any() else "loss"
        c = part.groupby("step")[[col, "end_s"]].mean().replace([np.inf, -np.inf], np.nan).dropna().sort_index()
        loss, end = c[col].to_numpy(float), c["end_s"].to_numpy(float)
        below = np.flatnonzero(loss <= target)
        t = math.nan
        if below.size:
            i = below[0]
            t = end[0] if i == 0 else end[i - 1] + (end[i] - end[i - 1]) * (loss[i - 1] - target) / (
                loss[i - 1] - loss[i])
        rows.append({"source": source, "algorithm": algo, "target_loss": target, "time_to_target_s": t})
    return pd.DataFrame(rows)


def balanced_workers_table(steps: pd.DataFrame, experiment: dict) -> Table | None:
    """Per source, algorithm with ``sync_balanced`` and worker (mean over runs): the local steps it took
    (gradient and pseudo-sync steps after the warm-up) and its seconds waiting at the syncs' barriers,
    from the step table. None when no algorithm of the experiment balances its H."""
    params = experiment.get("algorithm", {})
    balanced = [a for a in ordered(steps["algorithm"].unique()) if (params.get(a) or {}).get("sync_balanced")]
    rows = []
    for (source, algo), s in steps[steps["algorithm"].isin(balanced)].groupby(["source", "algorithm"], sort=False):
        local = s[s["step"] >= int(params[algo].get("warmup_steps", 0))]
        runs = max(1, s["run"].nunique())
        taken = local[local["phase"].isin(["compute", "pseudo_sync"])].groupby("worker").size() / runs
        wait = local[local["phase"] == "wait"]
        wait_s = (wait["end_s"] - wait["start_s"]).groupby(wait["worker"]).sum() / runs
        for worker in sorted(s["worker"].unique()):
            n, w = float(taken.get(worker, 0.0)), float(wait_s.get(worker, 0.0))
            rows.append([Cell(source), Cell(label(algo), css=f"algo {algo}"), Cell(str(worker), float(worker), "num"),
                         num(n, f"{n:,.0f}"), num(w, fmt_s(w))])
    if not rows:
        return None
    return Table(["source", "algorithm", "worker", "local steps", "waiting at syncs"], rows,
                 caption="balanced H: local steps and barrier waits per worker",
                 notes=['sync_every = "balanced": a slower replica takes fewer local steps between two syncs '
                        "(docs/algorithms.md); mean over runs, from the step table."])
