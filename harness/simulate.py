"""`palsgd simulate`, `sweep` and `presets`: run the simulator, write the results folder, format tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core import io, presets, schema
from ..core.config import Experiment
from ..core.errors import ConfigError
from . import store


@dataclass
class SimulateOutcome:
    runs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def simulate_to_folder(exp: Experiment, *, out: Path | None = None, overwrite: bool = False,
                       report: Path | None = None) -> SimulateOutcome:
    """Simulate every algorithm of ``exp``; with ``out``, write manifest, runs.csv, steps and trace."""
    from ..sim import bounds
    from ..sim.engine import simulate
    from .progress import Progress

    # the step table and phase totals are kept only when a file or a report will hold them
    record_steps = bounds.records_steps(exp, None) if out or report else False
    bounds.check(exp, record_steps=record_steps, keep_totals=out is not None)  # before any file is written
    if out is not None:
        store.prepare(out, overwrite=overwrite)
        store.start(out, "simulate", exp)
    try:
        with Progress(exp.repeats, "simulate", unit="repeats") as progress:
            result = simulate(exp, record_steps=record_steps, keep_totals=out is not None,
                              on_repeat=lambda: progress.update(1))
        notes = _write_results(exp, out, result)
    except KeyboardInterrupt:
        if out is not None:  # the folder says it was stopped instead of looking complete or running
            store.finish(out, "interrupted")
        raise
    if report is not None:
        notes.append(_report([out] if out is not None else None, report, exp, result))
    return SimulateOutcome(result.runs, notes)


def _write_results(exp: Experiment, out: Path | None, result) -> list[str]:
    if out is None:
        return []
    store.write_table(out, io.RUNS, result.runs)
    store.write_table(out, "totals.csv", result.totals)
    if result.steps is not None:
        store.write_table(out, io.STEPS, result.steps)
        io.write_json(Path(out) / io.TRACE, schema.to_chrome_trace(_trace_window(result.steps)))
    else:
        _write_timeline(exp, Path(out))
    store.finish(out, "complete", steps_recorded=result.steps is not None)
    written = "steps.parquet" if result.steps is not None else f"{io.TIMELINE} (first steps)"
    return [f"wrote {out}/ ({io.RUNS}, {written}, {io.TRACE}, {io.MANIFEST})"]


TIMELINE_MAX_WORKER_STEPS = 200_000


def _write_timeline(exp: Experiment, out: Path) -> None:
    """A run too large to keep every row still gets its first few sync intervals, simulated again with
    every row kept (same seed, same plan prefix), for the report's timeline and the trace."""
    from ..core.config import BudgetSpec
    from ..sim.engine import simulate

    local = [a.warmup_steps + 3 * a.sync_every + 2 for a in exp.algorithms if a.is_local]
    steps = min(exp.nominal_steps, max([8, *local]), TIMELINE_MAX_WORKER_STEPS // exp.workers)
    try:
        short = exp.replace(budget=BudgetSpec(steps=steps), repeats=1)
    except ConfigError:
        return  # too few steps to show a sync interval of this many workers
    window = simulate(short, record_steps=True).steps
    store.write_table(out, io.TIMELINE, window)
    io.write_json(out / io.TRACE, schema.to_chrome_trace(window))


def _trace_window(steps: pd.DataFrame, max_rows: int = 200_000) -> pd.DataFrame:
    """A trace viewer chokes on millions of events: keep the first steps of every run."""
    if len(steps) <= max_rows:
        return steps
    per_step = max(1, len(steps) // (steps["step"].max() + 1))
    return steps[steps["step"] < max(1, max_rows // per_step)]


def _report(folders, output: Path, exp: Experiment, result) -> str:
    """Render a report; without --out the results go to a folder beside the report."""
    from ..reports.render import render_report

    if folders is None:
        folder = output.with_suffix("").with_name(output.stem + "-results")
        store.prepare(folder, overwrite=True)
        store.start(folder, "simulate", exp)
        store.write_table(folder, io.RUNS, result.runs)
        if result.steps is not None:
            store.write_table(folder, io.STEPS, result.steps)
        store.finish(folder)
        folders = [folder]
    return f"wrote {render_report(list(folders), output)}"


def json_rows(runs: pd.DataFrame) -> list[dict]:
    rows = runs.astype(object).where(runs.notna(), None).to_dict(orient="records")
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    return v


def human_s(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 0:
        return "-" + human_s(-seconds)
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def format_summary(exp: Experiment, runs: pd.DataFrame) -> str:
    """The terminal table: one line per algorithm (Monte-Carlo mean, with the 5-95% band)."""
    head = (f"{exp.workload.name} on {exp.cluster.name}: {exp.workers} workers "
            f"({exp.cluster.nodes} x {exp.cluster.gpus_per_node}), {exp.nominal_steps} steps"
            + (f", {exp.budget.epochs:g} epochs" if exp.budget.epochs else "")
            + (f", {exp.repeats} seeds" if exp.repeats > 1 else ""))
    cols = ["wall_clock_s", "step_time_mean_s", "compute_s", "comm_exposed_s", "wait_s", "pseudo_sync_s",
            "bytes_sent_per_worker", "speedup_vs_ddp"]
    mean = runs.groupby("algorithm", sort=False)[cols].mean()
    lo = runs.groupby("algorithm", sort=False)["speedup_vs_ddp"].quantile(0.05)
    hi = runs.groupby("algorithm", sort=False)["speedup_vs_ddp"].quantile(0.95)
    table = pd.DataFrame({
        "wall-clock": mean["wall_clock_s"].map(human_s),
        "step": mean["step_time_mean_s"].map(human_s),
        "compute": mean["compute_s"].map(human_s),
        "exposed comm": mean["comm_exposed_s"].map(human_s),
        "wait": mean["wait_s"].map(human_s),
        "pseudo-sync": mean["pseudo_sync_s"].map(human_s),
        "sent/worker": mean["bytes_sent_per_worker"].map(human_bytes),
        "vs DDP": [_speedup(mean.loc[a, "speedup_vs_ddp"], lo[a], hi[a], exp.repeats) for a in mean.index],
    })
    lines = [head, table.to_string(), ""]
    lines += drivers(runs)
    return "\n".join(lines)


def _speedup(mean: float, lo: float, hi: float, repeats: int) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3f}x" + (f" [{lo:.3f}-{hi:.3f}]" if repeats > 1 else "")


def drivers(runs: pd.DataFrame) -> list[str]:
    """One sentence per algorithm saying what its speedup comes from (per worker, means over seeds)."""
    mean = runs.groupby("algorithm", sort=False).mean(numeric_only=True)
    if "ddp" not in mean.index:
        return []
    ddp = mean.loc["ddp"]
    out = []
    for algo, row in mean.drop(index="ddp").iterrows():
        comm = (ddp["comm_exposed_s"] + ddp["wait_s"]) - (row["comm_exposed_s"] + row["wait_s"])
        fewer = 1 - row["bytes_sent_per_worker"] / ddp["bytes_sent_per_worker"] if ddp["bytes_sent_per_worker"] else 0
        # under failures the local methods' waiting holds the time spent waiting for a restarting
        # worker at a barrier, which DDP books as its own failure time: the difference can be negative
        more_or_less = "less" if comm >= 0 else "more"
        parts = [f"{human_s(abs(comm))} {more_or_less} exposed communication and waiting "
                 f"({fewer:.0%} fewer bytes sent)"]
        skipped = ddp["compute_s"] - row["compute_s"] - row["pseudo_sync_s"]
        if row["pseudo_sync_steps"]:
            parts.append(f"{human_s(skipped)} of compute skipped by {row['pseudo_sync_steps']:.0f} pseudo-sync steps")
        if row["outer_step_s"]:
            parts.append(f"{human_s(row['outer_step_s'])} spent on outer steps")
        if row["failure_s"]:
            parts.append(f"{human_s(row['failure_s'])} down after failures")
        out.append(f"{algo} ({row['speedup_vs_ddp']:.3f}x DDP): " + "; ".join(parts))
    return out


def sweep_to_folder(exp: Experiment, varies: list[str], *, jobs: int | None, out: Path | None,
                    overwrite: bool, report: Path | None, executor: str = "local", address: str | None = None,
                    resume: bool = False):
    """Sweep into ``out``; each finished chunk of points is stored in ``out/points/`` as it arrives, so
    ``resume`` continues an interrupted sweep of the same experiment and grid without redoing them."""
    from .progress import Progress
    from .sweep import parse_vary, points, sweep

    vary = [parse_vary(v) for v in varies]
    if not 1 <= len(vary) <= 2:
        raise ConfigError("vary one or two fields", key="--vary", value=list(varies), source="command line")
    grid = points(exp, vary)  # every point is checked before anything is written
    if resume and out is None:
        raise ConfigError("--resume needs --out (the sweep folder to continue)", key="--resume",
                          source="command line")
    manifest_vary = [{"key": k, "values": v} for k, v in vary]
    if out is not None:
        store.prepare(out, overwrite=overwrite, resume=resume, kind="sweep", exp=exp)
        if resume and store.read_manifest(out).get("vary") != manifest_vary:
            raise ConfigError("the sweep to resume varied other fields or values; give the same --vary",
                              key="--vary", value=list(varies), source=str(Path(out) / io.MANIFEST))
        store.start(out, "sweep", exp, vary=manifest_vary)
    with Progress(len(grid), "sweep") as progress:
        result = sweep(exp, vary, jobs=jobs, executor=executor, address=address, progress=progress,
                       done=Path(out) / "points" if out is not None else None)
    if out is not None:
        store.write_table(out, "sweep.csv", result.table)
        store.write_table(out, "crossovers.csv", result.crossovers)
        store.finish(out)
    if report is not None:
        from ..reports.render import render_report

        if out is None:
            raise_missing_out()
        render_report([out], report)
    return result


def raise_missing_out():
    from ..core.errors import ConfigError

    raise ConfigError("--report needs --out (the report reads the results folder)", key="--report",
                      source="command line")


def format_sweep(result) -> str:
    table = result.table
    keys = [c for c in table.columns if "." in c]
    view = table.groupby([*keys, "algorithm"], sort=False)[["wall_clock_s", "speedup_vs_ddp"]].mean()
    speedup = view["speedup_vs_ddp"].unstack("algorithm")
    wall = view["wall_clock_s"].unstack("algorithm").map(human_s)
    lines = ["wall-clock:", wall.to_string(), "",
             "speedup vs DDP (DDP wall-clock / algorithm wall-clock):", speedup.round(3).to_string(), ""]
    if len(result.crossovers):
        lines.append("crossovers:")
        for row in result.crossovers.itertuples():
            has_fixed = isinstance(row.fixed_key, str) and row.fixed_key
            fixed = f" at {row.fixed_key}={row.fixed_value:g}" if has_fixed else ""
            lines.append(f"  {row.algorithm} {row.direction} DDP at {row.key} = {row.value:.4g}{fixed}")
    else:
        lines.append("no crossover in the swept range")
    return "\n".join(lines)


def format_presets(kind: str) -> str:
    """Every preset with its numbers and sources."""
    lines = []
    if kind in ("workload", "all"):
        lines.append("WORKLOADS")
        for name in presets.names("workload"):
            d = presets.read("workload", name)
            w, alg, bud = d.get("workload", {}), d.get("algorithm", {}), d.get("budget", {})
            budget = f"{bud['steps']} steps" if bud.get("steps") else f"{bud.get('epochs', '?')} epochs"
            lines.append(f"  {name}: {w.get('description', '')}")
            lines.append(f"      params {w.get('params', 0):,}, {w.get('flops_per_sample', 0):.3g} FLOP/sample, "
                         f"batch {w.get('batch_per_worker')} x accum {w.get('grad_accum', 1)}, "
                         f"{w.get('dataset_samples', 0):,} samples/epoch, {budget}")
            lines.append("      algorithm: " + ", ".join(f"{k}={v}" for k, v in alg.items() if not isinstance(v, dict)))
    if kind in ("cluster", "all"):
        lines.append("CLUSTERS")
        for name in presets.names("cluster"):
            c = presets.read("cluster", name).get("cluster", {})
            intra, inter = c.get("intra_node", {}), c.get("inter_node", {})
            comp, tr = c.get("compute", {}), c.get("transport", {})
            lines.append(f"  {name}: {c.get('description', '')}")
            lines.append(f"      {c.get('nodes', 1)} x {c.get('gpus_per_node', 1)} workers; intra "
                         f"{intra.get('bandwidth_gbps', '-')} Gb/s {intra.get('latency_us', '-')} us; inter "
                         f"{inter.get('bandwidth_gbps', '-')} Gb/s {inter.get('latency_us', '-')} us; "
                         f"{tr.get('kind', 'nccl')}; {comp.get('peak_tflops', '-')} TFLOP/s x "
                         f"{comp.get('utilization', '-')}" + (f"; WAN {c['wan']}" if "wan" in c else ""))
    lines.append("Sources: `source` in each file under palsgd/core/presets/; details in docs/model.md.")
    return "\n".join(lines)
