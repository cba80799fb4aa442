"""`palsgd simulate`, `sweep` and `presets`: run the simulator, write the results folder, format tables."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...core import config, convergence, io, presets, prior, schema, to_target
from ...core.algorithms import FACTS, is_sync_step
from ...core.cluster import PROVENANCE_KINDS, provenance_lines
from ...core.config import BudgetSpec, Experiment
from ...core.errors import ConfigError
from ...sim import bounds
from ...sim import engine as sim_engine
from ..machinery import store
from ..machinery.progress import Progress
from ..machinery.sweep import parse_vary, points, stored_parts, sweep
from .sensitivity import crossovers_both, json_of
from .sensitivity import sensitivity as around


@dataclass
class SimulateOutcome:
    runs: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    sensitivity: object = None
    """``sensitivity.Sensitivity`` around the user's point, when asked for."""
    folders: list[Path] = field(default_factory=list)
    """The results folders a report of this answer reads (``out``, or one written beside the report)."""


def simulate_to_folder(exp: Experiment, *, out: Path | None = None, overwrite: bool = False,
                       report: Path | None = None, sensitivity: bool = False, use_prior: bool = True,
                       like: dict[str, str] | None = None, described_by: str | None = None,
                       engine: str = "auto") -> SimulateOutcome:
    """Simulate every algorithm of ``exp``; with ``out``, write manifest, runs.csv, steps and trace. With
    ``sensitivity`` (always with a report), also the speedups around the user's point
    (``harness/commands/sensitivity.py``). The speedup to the target comes from ``exp``'s convergence
    description (``described_by`` names its file), else from the published prior unless ``use_prior`` is
    off (``core.to_target``; ``like``: algorithms the user assumes converge like another).
    ``engine``: ``sim.bounds.engine_for``."""
    # the step table and phase totals are kept only when a file or a report will hold them
    record_steps = bounds.records_steps(exp, None) if out or report else False
    # before any file is written; with --out, the timeline or trace it writes counts too
    bounds.check(exp, record_steps=record_steps, keep_totals=out is not None, engine=engine, out=out is not None)
    if out is not None:
        store.prepare(out, overwrite=overwrite)
        store.start(out, "simulate", exp)
    with _marked_on_exit(out):  # the folder says it was stopped instead of looking complete or running
        with Progress(exp.repeats, "simulate", unit="repeats") as progress:
            result = sim_engine.simulate(exp, record_steps=record_steps, keep_totals=out is not None,
                                         on_repeat=lambda: progress.update(1), engine=engine)
        found = to_target.answers(exp, use_prior=use_prior, like=like, described_by=described_by)
        result.runs[list(to_target.COLUMNS)] = to_target.columns(result.runs, found)
        sens = around(exp) if sensitivity or report is not None else None
        notes = _write_results(exp, out, result, sens)
    folders = [] if report is None else [out] if out is not None else [_report_folder(report, exp, result, sens)]
    notes += averager_notes(exp) + to_target.notes(exp, found) + (sens.notes if sens is not None else []) \
        + provenance_notes(exp)
    return SimulateOutcome(result.runs, notes, sens, folders)


def averager_notes(exp: Experiment) -> list[str]:
    """Local SGD on PyTorch's schedule averages once more than torchft's when its local steps are a
    multiple of H: a whole all-reduce, most of the communication on a slow link with a large H. Say so."""
    out = []
    for spec in exp.algorithms:
        if "averager" not in FACTS[spec.name].keys or spec.averager != "pytorch":
            continue
        # the sync schedule alone: a whole plan is [workers x steps] (1.6 GB at 16,384 x 100,000)
        steps = np.arange(exp.nominal_steps)
        ours, torchft = (int(is_sync_step(spec.name, steps, spec.warmup_steps, spec.sync_every, averager).sum())
                         for averager in ("pytorch", "torchft"))
        if ours != torchft:
            out.append(f"local_sgd averages as PyTorch's PeriodicModelAverager, right after its first local step: "
                       f"{ours} averages in this run, {ours - torchft} more than torchft's LocalSGD ({torchft}, H "
                       'local steps before each); algorithm.local_sgd.averager = "torchft" predicts that')
    return out


def provenance_notes(exp: Experiment) -> list[str]:
    """Which cluster figures were measured (and by what), published, assumed or given: the preset's or
    profile's ``[cluster.provenance]``, with what the experiment file and --set changed."""
    lines = provenance_lines(exp.cluster.provenance)
    if not lines:
        return [f"cluster figures of {exp.cluster.name}: no provenance stated (see its `source`)"]
    return [f"cluster figures of {exp.cluster.name}:"] + [f"  {line}" for line in lines]


def _write_results(exp: Experiment, out: Path | None, result, sens) -> list[str]:
    if out is None:
        return []
    store.write_table(out, io.RUNS, result.runs)
    if exp.repeats > 1:
        store.write_table(out, io.SPREAD, schema.spread(result.runs))
    _write_sensitivity(out, sens)
    store.write_table(out, "totals.csv", result.totals)
    if result.steps is not None:
        store.write_table(out, io.STEPS, result.steps)
        trace = schema.to_chrome_trace(schema.trace_window(result.steps, bounds.TRACE_ROWS))
        io.write_json(Path(out) / io.TRACE, trace)
        written = f"{io.STEPS}, {io.TRACE}, "
    else:
        written = f"{io.TIMELINE} (first steps), {io.TRACE}, " if _write_timeline(exp, Path(out)) else ""
    store.finish(out, "complete", steps_recorded=result.steps is not None)
    return [f"wrote {out}/ ({io.RUNS}, {written}{io.MANIFEST})"]


def _write_timeline(exp: Experiment, out: Path) -> bool:
    """A run too large to keep every row still gets its first few sync intervals, simulated again with
    every row kept (same seed, same plan prefix), for the report's timeline and the trace; at most
    ``bounds.TIMELINE_WORKER_STEPS`` over all algorithms, which the memory estimate counts."""
    local = [a.warmup_steps + 3 * a.sync_every + 2 for a in exp.algorithms if a.is_local]
    steps = min(exp.nominal_steps, max([8, *local]), bounds.timeline_steps(exp))
    try:
        short = exp.replace(budget=BudgetSpec(steps=steps), repeats=1)
    except ConfigError:
        return False  # too few steps to show a sync interval of this many workers
    window = sim_engine.simulate(short, record_steps=True).steps
    store.write_table(out, io.TIMELINE, window)
    io.write_json(out / io.TRACE, schema.to_chrome_trace(schema.trace_window(window, bounds.TRACE_ROWS)))
    return True


def _write_sensitivity(out: Path, sens) -> None:
    if sens is not None:
        store.write_table(out, io.SENSITIVITY, sens.table)
        store.write_table(out, io.SENSITIVITY_CROSSOVERS, sens.crossovers)


def _report_folder(output: Path, exp: Experiment, result, sens) -> Path:
    """Without --out, the results a report reads go to a folder beside it (the CLI renders the report)."""
    folder = output.with_suffix("").with_name(output.stem + "-results")
    store.prepare(folder, overwrite=True)
    store.start(folder, "simulate", exp)
    store.write_table(folder, io.RUNS, result.runs)
    _write_sensitivity(folder, sens)
    if result.steps is not None:
        store.write_table(folder, io.STEPS, result.steps)
    store.finish(folder)
    return folder


def json_rows(runs: pd.DataFrame, sens=None) -> list[dict]:
    """One dict per run row; with ``sens``, each holds its algorithm's sensitivity (``sensitivity.json_of``)."""
    rows = runs.astype(object).where(runs.notna(), None).to_dict(orient="records")
    rows = [{k: _plain(v) for k, v in row.items()} for row in rows]
    tails = _tails(runs)
    if tails:
        rows = [{**row, **tails[row["algorithm"]]} for row in rows]
    if sens is not None:
        rows = [{**row, "sensitivity": json_of(sens, row["algorithm"])} for row in rows]
    return rows


TAIL_COLUMNS = ("wall_clock_s", "speedup_vs_ddp")


def _tails(runs: pd.DataFrame) -> dict[str, dict]:
    """Per algorithm, with several runs: p50, p95 and p99 over the runs of the wall-clock and the speedup
    (``<column>_p50`` ...), as JSON rows carry them; empty with one run per algorithm."""
    if runs.groupby("algorithm").size().max() < 2:
        return {}
    spread = schema.spread(runs, TAIL_COLUMNS).set_index("algorithm")
    keys = [f"{c}_p{q}" for c in TAIL_COLUMNS for q in ("50", "95", "99")]
    return {a: {k: _finite(spread.loc[a, k]) for k in keys} for a in spread.index}


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None


def format_tails(runs: pd.DataFrame) -> list[str]:
    """The Monte-Carlo tail of each algorithm: p50 / p95 / p99 of the wall-clock and of the speedup."""
    tails = _tails(runs)
    if not tails:
        return []
    n = runs.groupby("algorithm").size().max()
    lines = [f"Monte-Carlo tail over {n:,} seeds (p50 / p95 / p99):"]
    for algo, t in tails.items():
        wall = " / ".join(human_s(t[f"wall_clock_s_p{q}"]) for q in ("50", "95", "99"))
        speed = " / ".join("-" if t[f"speedup_vs_ddp_p{q}"] is None else f"{t[f'speedup_vs_ddp_p{q}']:.3f}x"
                           for q in ("50", "95", "99"))
        lines.append(f"  {algo}: wall-clock {wall}; vs DDP {speed}")
    return [*lines, ""]


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
    if runs.get("speedup_to_target_vs_ddp", pd.Series(dtype=float)).notna().any():
        table["to target"] = _to_target_column(runs, exp.repeats)
    lines = [head, table.to_string(), ""]
    lines += format_tails(runs)
    lines += drivers(runs) + group_lines(exp)
    return "\n".join(lines)


def group_lines(exp: Experiment) -> list[str]:
    """One line per algorithm that trains in replica groups (``core/groups.py``)."""
    out = []
    for spec in exp.algorithms:
        size = exp.group_size(spec)
        if size > 1:
            what = "a node" if size == exp.cluster.gpus_per_node else f"{size} workers"
            out.append(f"{spec.name}: {exp.workers // size} replicas of {what} each: DDP inside a replica, "
                       f"{spec.name} across them (each rank syncs with the same rank of the other replicas)")
    return out


def _to_target_column(runs: pd.DataFrame, repeats: int) -> list[str]:
    """The speedup to the target loss per algorithm, "-" where nothing gives it; with the prior's band
    (the mean speedup over its low and high steps ratios) in parentheses where the prior gives it."""
    g = runs.groupby("algorithm", sort=False)
    to = g["speedup_to_target_vs_ddp"]
    mean, lo, hi = to.mean(), to.quantile(0.05), to.quantile(0.95)
    band = g[["speedup_to_target_low_vs_ddp", "speedup_to_target_high_vs_ddp"]].mean() \
        if "speedup_to_target_low_vs_ddp" in runs else None
    out = []
    for a in mean.index:
        text = _speedup(mean[a], lo[a], hi[a], repeats)
        if band is not None and math.isfinite(mean[a]) and band.loc[a].notna().all() and a != "ddp":
            text += f" ({band.loc[a].iloc[0]:.2f}-{band.loc[a].iloc[1]:.2f})"
        out.append(text)
    return out


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
                    overwrite: bool, executor: str = "local", address: str | None = None, resume: bool = False):
    """Sweep into ``out``; each finished chunk of points is stored in ``out/points/`` as it arrives, so
    ``resume`` continues an interrupted sweep of the same experiment and grid without redoing them."""
    vary = [parse_vary(v) for v in varies]
    if not 1 <= len(vary) <= 2:
        raise ConfigError("vary one or two fields", key="--vary", value=list(varies), source="command line")
    grid = points(exp, vary)  # the whole grid is checked before anything is written
    if resume and out is None:
        raise ConfigError("--resume needs --out (the sweep folder to continue)", key="--resume",
                          source="command line")
    manifest_vary = [{"key": k, "values": v} for k, v in vary]
    if out is not None:
        store.prepare(out, overwrite=overwrite, resume=resume, kind="sweep", exp=exp)
        if resume and store.read_manifest(out).get("vary") != manifest_vary:
            raise ConfigError("the sweep to resume varied other fields or values; give the same --vary",
                              key="--vary", value=list(varies), source=str(Path(out) / io.MANIFEST))
        stored_parts(Path(out) / "points", len(grid))  # a damaged part is refused before the folder changes
        store.start(out, "sweep", exp, vary=manifest_vary)
    with _marked_on_exit(out):
        with Progress(len(grid), "sweep") as progress:
            result = sweep(exp, vary, jobs=jobs, executor=executor, address=address, progress=progress,
                           done=Path(out) / "points" if out is not None else None)
        result = _with_to_target(exp, grid, result)
        if out is not None:
            store.write_table(out, "sweep.csv", result.table)
            store.write_table(out, "crossovers.csv", result.crossovers)
            store.finish(out)
    return result


@contextlib.contextmanager
def _marked_on_exit(out: Path | None):
    """Whatever ends the body early (Ctrl-C, a refusal, a full disk, a bug), the folder's manifest says
    ``interrupted`` or ``failed`` afterwards, never ``running``."""
    try:
        yield
    except BaseException as err:
        if out is not None:
            with contextlib.suppress(Exception):  # the original error is the one to report
                store.finish(out, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
        raise


def _with_to_target(exp: Experiment, grid, result):
    """The sweep with ``speedup_to_target_vs_ddp`` at every point (NaN without a convergence description)
    and the crossovers of both speedups (column ``speedup``)."""
    conv = convergence.of_experiment(exp)
    table, keys = result.table, list(grid[0][0])
    if conv is None:
        table = table.assign(speedup_to_target_vs_ddp=math.nan)
    else:  # each point's own H, p and workers pick its steps to the target
        ratios = pd.DataFrame([{**values, "algorithm": a.name, "steps_vs_ddp":
                                conv.lookup(a, point.workers, point.group_size(a)).steps_vs_ddp or math.nan}
                               for values, point in grid for a in point.algorithms])
        steps_vs_ddp = table[[*keys, "algorithm"]].merge(ratios, how="left", on=[*keys, "algorithm"])["steps_vs_ddp"]
        table = table.assign(speedup_to_target_vs_ddp=table["speedup_vs_ddp"] / steps_vs_ddp.to_numpy())
    return dataclasses.replace(result, table=table, crossovers=crossovers_both(table, keys))


def format_sweep(result) -> str:
    table = result.table
    keys = [c for c in table.columns if "." in c]
    view = table.groupby([*keys, "algorithm"], sort=False)[["wall_clock_s", "speedup_vs_ddp"]].mean()
    speedup = view["speedup_vs_ddp"].unstack("algorithm")
    wall = view["wall_clock_s"].unstack("algorithm").map(human_s)
    lines = ["wall-clock:", wall.to_string(), "",
             "speedup vs DDP for the same steps (DDP wall-clock / algorithm wall-clock):",
             speedup.round(3).to_string(), ""]
    if table.get("speedup_to_target_vs_ddp", pd.Series(dtype=float)).notna().any():
        to_target = table.groupby([*keys, "algorithm"], sort=False)["speedup_to_target_vs_ddp"].mean()
        lines += ["speedup vs DDP to the target loss (- outside the convergence description's range):",
                  to_target.unstack("algorithm").round(3).to_string(na_rep="-"), ""]
    lines += format_crossovers(result.crossovers, "in the swept range")
    return "\n".join(lines)


def format_crossovers(crossovers: pd.DataFrame, where: str) -> list[str]:
    """One line per crossing, naming which speedup crosses (``sensitivity.MEASURES``)."""
    if not len(crossovers):
        return [f"no crossover {where}"]
    lines = ["crossovers:"]
    for row in crossovers.itertuples():
        has_fixed = isinstance(row.fixed_key, str) and row.fixed_key
        fixed = f" at {row.fixed_key}={row.fixed_value:g}" if has_fixed else ""
        lines.append(f"  {row.algorithm} {row.direction} DDP ({row.speedup}) at {row.key} = {row.value:.4g}{fixed}")
    return lines


def format_sensitivity(sens) -> str:
    """Speedups around the user's point (marked *), one block per varied key, then the crossovers."""
    lines = [f"sensitivity (each point: the whole run of {sens.steps} steps with one change; * = this experiment):"]
    for key, along in sens.table.groupby("key", sort=False):
        for measure, column in (("same steps", "speedup_vs_ddp"), ("to target", "speedup_to_target_vs_ddp")):
            if along[column].isna().all():
                continue
            point = [f"{v:g}{' *' if own else ''}" for v, own in zip(along["value"], along["user_point"], strict=True)]
            view = along.assign(point=point).pivot_table(index="point", columns="algorithm", values=column,
                                                         sort=False, dropna=False)
            view = view.drop(columns="ddp", errors="ignore").rename_axis(f"{key} ({measure})")
            lines += [view.round(3).to_string(na_rep="-"), ""]
    lines += format_crossovers(sens.crossovers, "around this point")
    return "\n".join(lines)


def _provenance_kinds(provenance: dict) -> str:
    """'measured 2, published 6, assumed 3 (compute.utilization, ...)': how many figures of each kind, and
    which are assumed."""
    kinds = [str(v).split(":")[0] for v in provenance.values()]
    counts = ", ".join(f"{k} {kinds.count(k)}" for k in PROVENANCE_KINDS if k in kinds)
    assumed = [key for key, v in provenance.items() if str(v).startswith("assumed:")]
    return counts + (f" (assumed: {', '.join(assumed)})" if assumed else "")


def format_presets(kind: str) -> str:
    """Every preset with its numbers and sources."""
    lines = []
    if kind in ("workload", "all"):
        lines.append("WORKLOADS")
        for name in presets.names("workload"):
            d = presets.read("workload", name)
            w = config.load(workload=name).workload  # parameters and FLOPs are derived from the model
            alg, bud = d.get("algorithm", {}), d.get("budget", {})
            budget = f"{bud['steps']} steps" if bud.get("steps") else f"{bud.get('epochs', '?')} epochs"
            lines.append(f"  {name}: {w.description}")
            lines.append(f"      params {w.params:,}, {w.flops_per_sample:.3g} FLOP/sample, "
                         f"batch {w.batch_per_worker} x accum {w.grad_accum}, "
                         f"{w.dataset_samples:,} samples/epoch, {budget}")
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
            kinds = _provenance_kinds(c.get("provenance", {}))
            if kinds:
                lines.append(f"      figures {kinds}")
    if kind in ("convergence", "all"):
        lines.append("CONVERGENCE (steps to a target loss relative to DDP, for --convergence)")
        for name in presets.names("convergence"):
            conv = convergence.load(name)
            workers = sorted({p.workers for p in conv.points if p.workers is not None}) or [conv.ddp_workers]
            ratios = ", ".join(f"{p.algorithm}{'' if p.workers is None else f' on {p.workers}'} {p.steps_vs_ddp:.2f}x"
                               for p in conv.points if p.algorithm != "ddp")
            lines.append(f"  {name}: loss {conv.target_loss:g}, DDP {conv.ddp_steps:.1f} steps on "
                         f"{conv.ddp_workers} workers, measured on {'/'.join(map(str, workers))} workers")
            lines.append(f"      {ratios}")
        ev = prior.evidence()
        lines.append(f"  prior {prior.NAME} (used by simulate without --convergence): DiLoCo's steps to DDP's final "
                     f"loss for M = 1..{max(ev.replicas)} replicas, H = {ev.sync_every}, "
                     f"{ev.params.min() / 1e6:.0f}M-{ev.check_params.max() / 1e9:g}B parameters (arXiv 2503.09799)")
    lines.append("Sources: `source` and `[cluster.provenance]` in each file under palsgd/core/presets/; details in "
                 "docs/model.md.")
    return "\n".join(lines)
