"""The result tables that the simulator and the real harness both write, and the one summary of them.

Step table (long format; one row per worker, step and phase), written as ``steps.parquet``:

=============  ======  ===========================================================================
column         dtype   meaning
=============  ======  ===========================================================================
source         str     ``sim`` or ``real``
algorithm      str     ``ddp``, ``local_sgd``, ``diloco`` or ``palsgd``
run            int     Monte-Carlo repeat (sim) or attempt (real); 0 for a single run
worker         int     global rank
step           int     local step index, from 0 (a sync belongs to the step it follows)
phase          str     one of PHASES
start_s        float   seconds since the run's start (the same clock on every worker)
end_s          float   seconds since the run's start
bytes          float   bytes this worker sent during the phase (0 for non-communication phases)
=============  ======  ===========================================================================

Every summary is derived from the *phase totals*, the step table grouped by (source, algorithm,
run, worker, phase). Large simulations that do not keep every row accumulate the same totals
directly; ``phase_totals(steps)`` is the one way to get them from a full table.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from .algorithms import ALGORITHMS

COMPARED_METRICS = ("step_time_mean_s", "wall_clock_s", "speedup_vs_ddp")
"""Run-table columns a prediction is compared on (``harness/machinery/compare.py``, ``reports/tables.py``)."""
TRACE_MAX_ROWS = 200_000
"""A trace viewer chokes on millions of events: a trace keeps the first steps of every run (``trace_window``)."""

PHASES = (
    "data",  # waiting for the input batch (not hidden by prefetching)
    "compute",  # forward + backward of one optimizer step (all micro-batches)
    "allreduce",  # blocking communication: what compute could not hide (SparseLoCo: its all-gather)
    "allreduce_hidden",  # communication overlapped with compute (DDP buckets); costs no wall-clock
    "wait",  # idle at a barrier, waiting for the slowest worker
    "optimizer",  # inner optimizer step
    "pseudo_sync",  # PALSGD pull toward the global model; no gradient, no traffic
    "outer_step",  # DiLoCo / PALSGD outer Nesterov step; SparseLoCo's error feedback and outer SGD step
    "failure",  # down after a failure, restarting or rejoining
)

STEP_COLUMNS = ("source", "algorithm", "run", "worker", "step", "phase", "start_s", "end_s", "bytes")
# Real runs only: one row per worker and step (the loss curve); eval_loss is NaN between evaluations.
METRIC_COLUMNS = ("source", "algorithm", "run", "worker", "step", "end_s", "loss", "lr", "eval_loss")
TOTAL_COLUMNS = ("source", "algorithm", "run", "worker", "phase", "duration_s", "bytes", "count")

# One row per (source, algorithm, run). Times are per worker, averaged over workers.
RUN_COLUMNS = (
    "source",
    "algorithm",
    "run",
    "workers",
    "steps",
    "wall_clock_s",
    "step_time_mean_s",
    "compute_s",  # data + compute + optimizer
    "comm_exposed_s",  # blocking all-reduce time
    "comm_hidden_s",  # all-reduce time hidden behind compute
    "wait_s",
    "pseudo_sync_s",
    "outer_step_s",
    "failure_s",
    "bytes_sent_per_worker",
    "syncs",  # blocking collectives per worker (DDP: one per step)
    "pseudo_sync_steps",  # per worker, averaged
    "speedup_vs_ddp",  # DDP wall-clock / this wall-clock, same run index and budget
)

_COMPUTE_PHASES = ("data", "compute", "optimizer")


def empty_steps() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in STEP_COLUMNS})


def _dtype(column: str) -> str:
    if column in ("source", "algorithm", "phase"):
        return "object"
    if column in ("run", "worker", "step", "count"):
        return "int64"
    return "float64"


def validate_steps(steps: pd.DataFrame) -> None:
    """Raise ValueError when a step table does not follow the schema (used on files read back)."""
    missing = [c for c in STEP_COLUMNS if c not in steps.columns]
    if missing:
        raise ValueError(f"step table lacks columns {missing}")
    unknown = set(steps["phase"].unique()) - set(PHASES)
    if unknown:
        raise ValueError(f"step table has unknown phases {sorted(unknown)}")
    if len(steps) and (steps["end_s"] < steps["start_s"]).any():
        raise ValueError("step table has rows that end before they start")


def split_ddp_wait(steps: pd.DataFrame, groups: dict[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """A real DDP step times the wait for the slowest worker inside its exposed all-reduce: the fast
    workers' last bucket cannot finish before the slow one has computed its gradients, and DDP has no
    barrier of its own to time that apart. Carve it out as the simulator records it: the exposed
    all-reduce (the row that starts where the worker's compute ends) begins with ``wait`` until the
    slowest worker's compute ends. Needs every worker's rows on one clock (the merged table).

    ``groups``: {algorithm: (workers per replica group, first local step W)} for the algorithms that
    train in replica groups (``core/groups.py``): from step W on a DDP step spans one group only, so the
    slowest worker is looked for in the worker's own group (the warm-up's DDP steps span every worker)."""
    grouped = steps.assign(ddp_group=_ddp_groups(steps, groups or {}))
    keys = ["algorithm", "run", "step", "ddp_group"]
    comp = grouped.loc[grouped["phase"] == "compute", [*keys, "worker", "end_s"]]
    slowest = comp.groupby(keys)["end_s"].max().rename("slowest_s")
    ar = grouped[grouped["phase"] == "allreduce"].reset_index().merge(
        comp.rename(columns={"end_s": "compute_end_s"}), on=[*keys, "worker"])
    ar = ar.merge(slowest, left_on=keys, right_index=True)
    ddp = ar[(ar["start_s"] == ar["compute_end_s"]) & (ar["slowest_s"] > ar["start_s"])]
    if ddp.empty:
        return steps
    wait_end = ddp[["slowest_s", "end_s"]].min(axis=1)
    waits = ddp[list(STEP_COLUMNS)].assign(phase="wait", end_s=wait_end.to_numpy(), bytes=0.0)
    out = steps.copy()
    out.loc[ddp["index"].to_numpy(), "start_s"] = wait_end.to_numpy()
    return pd.concat([out, waits], ignore_index=True)


def _ddp_groups(steps: pd.DataFrame, groups: dict[str, tuple[int, int]]) -> np.ndarray:
    """Per row: the replica group its DDP step spans, or -1 for every worker."""
    out = np.full(len(steps), -1, dtype=np.int64)
    for algorithm, (size, first_local) in groups.items():
        rows = ((steps["algorithm"] == algorithm) & (steps["step"] >= first_local)).to_numpy()
        out[rows] = steps["worker"].to_numpy()[rows] // size
    return out


def phase_totals(steps: pd.DataFrame) -> pd.DataFrame:
    """Group a step table into per-(worker, phase) totals: the input of ``summarize``."""
    keys = ["source", "algorithm", "run", "worker", "phase"]
    df = steps.assign(duration_s=steps["end_s"] - steps["start_s"], count=1)
    out = df.groupby(keys, sort=True)[["duration_s", "bytes", "count"]].sum().reset_index()
    return out[list(TOTAL_COLUMNS)]


def run_extents(steps: pd.DataFrame) -> pd.DataFrame:
    """Wall-clock and step count of each run in a step table."""
    g = steps.groupby(["source", "algorithm", "run"], sort=True)
    out = g.agg(start_s=("start_s", "min"), end_s=("end_s", "max"), steps=("step", "max"))
    out["steps"] += 1
    out["wall_clock_s"] = out["end_s"] - out["start_s"]
    return out.reset_index()[["source", "algorithm", "run", "steps", "wall_clock_s"]]


def summarize(totals: pd.DataFrame, extents: pd.DataFrame) -> pd.DataFrame:
    """The run table: one row per (source, algorithm, run), from phase totals and run extents."""
    keys = ["source", "algorithm", "run"]
    wide = totals.pivot_table(
        index=[*keys, "worker"], columns="phase", values="duration_s", aggfunc="sum", fill_value=0.0
    )
    for phase in PHASES:
        if phase not in wide.columns:
            wide[phase] = 0.0
    counts = totals.pivot_table(
        index=[*keys, "worker"], columns="phase", values="count", aggfunc="sum", fill_value=0
    )
    sent = totals.groupby([*keys, "worker"])["bytes"].sum()
    per_worker = pd.DataFrame(
        {
            "compute_s": wide[list(_COMPUTE_PHASES)].sum(axis=1),
            "comm_exposed_s": wide["allreduce"],
            "comm_hidden_s": wide["allreduce_hidden"],
            "wait_s": wide["wait"],
            "pseudo_sync_s": wide["pseudo_sync"],
            "outer_step_s": wide["outer_step"],
            "failure_s": wide["failure"],
            "bytes_sent_per_worker": sent,
            "syncs": counts.get("allreduce", 0),
            "pseudo_sync_steps": counts.get("pseudo_sync", 0),
        }
    )
    per_run = per_worker.groupby(level=keys).mean()
    per_run["workers"] = per_worker.groupby(level=keys).size()
    runs = per_run.reset_index().merge(extents, on=keys, how="left")
    return finish_runs(runs)


def finish_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The run table from its per-run means and extents: step time, speedup, columns and order."""
    runs["step_time_mean_s"] = runs["wall_clock_s"] / runs["steps"]
    runs = add_speedup(runs)
    keys = ["source", "algorithm", "run"]
    return runs[list(RUN_COLUMNS)].sort_values(keys, key=_algorithm_order).reset_index(drop=True)


def add_speedup(runs: pd.DataFrame) -> pd.DataFrame:
    """speedup_vs_ddp = DDP's wall-clock / this wall-clock, matched on source and run; NaN without DDP."""
    # matched in Python: a pandas join of a small table costs more than a small simulation (a sweep's point)
    ddp = runs[runs["algorithm"] == "ddp"]
    wall_s = dict(zip(zip(ddp["source"], ddp["run"], strict=True), ddp["wall_clock_s"], strict=True))
    base_s = np.array([wall_s.get(key, np.nan) for key in zip(runs["source"], runs["run"], strict=True)], dtype=float)
    return runs.assign(speedup_vs_ddp=base_s / runs["wall_clock_s"].to_numpy(dtype=float))


def summarize_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """The run table straight from a full step table."""
    return summarize(phase_totals(steps), run_extents(steps))


TAIL_QUANTILES = (0.05, 0.5, 0.95, 0.99)
"""Percentiles of a Monte-Carlo spread: the 5-95 % band, the median and the tails (p95, p99)."""


def spread(runs: pd.DataFrame, columns: Iterable[str] = ("wall_clock_s", "speedup_vs_ddp")) -> pd.DataFrame:
    """Monte-Carlo spread per (source, algorithm): mean and the TAIL_QUANTILES of each column
    (``<column>_mean``, ``<column>_p05``, ``_p50``, ``_p95``, ``_p99``), and the runs."""
    g = runs.groupby(["source", "algorithm"], sort=False)
    parts = {}
    for col in columns:
        parts[f"{col}_mean"] = g[col].mean()
        for q in TAIL_QUANTILES:
            parts[f"{col}_p{round(q * 100):02d}"] = g[col].quantile(q)
    out = pd.DataFrame(parts)
    out["runs"] = g.size()
    return out.reset_index()


_ORDER = {name: i for i, name in enumerate(ALGORITHMS)}
"""Every algorithm a rank of its own: two sharing one would leave their runs' order to the sort."""


def _algorithm_order(col: pd.Series) -> pd.Series:
    if col.name == "algorithm":
        return col.map(lambda a: _ORDER.get(a, 99))
    return col


def trace_window(steps: pd.DataFrame, max_rows: int = TRACE_MAX_ROWS) -> pd.DataFrame:
    """The first steps of every run, about ``max_rows`` rows in all (all of them when fewer)."""
    if len(steps) <= max_rows:
        return steps
    per_step = max(1, len(steps) // (int(steps["step"].max()) + 1))
    return steps[steps["step"] < max(1, max_rows // per_step)]


def to_chrome_trace(steps: pd.DataFrame) -> dict:
    """Chrome / Perfetto trace (``chrome://tracing``, ui.perfetto.dev): one process per
    (source, algorithm, run), one thread per worker, one complete event per phase row."""
    events: list[dict] = []
    groups = steps.groupby(["source", "algorithm", "run"], sort=False)
    for pid, ((source, algorithm, run), g) in enumerate(groups):
        name = f"{source}:{algorithm}" + (f" run {run}" if run else "")
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": name}})
        for worker in np.unique(g["worker"].to_numpy()):
            events.append(
                {"ph": "M", "pid": pid, "tid": int(worker), "name": "thread_name",
                 "args": {"name": f"worker {worker}"}}
            )
        ts = (g["start_s"].to_numpy() * 1e6).round(3)
        dur = ((g["end_s"] - g["start_s"]).to_numpy() * 1e6).round(3)
        for w, s, ph, t, d, b in zip(
            g["worker"].to_numpy(), g["step"].to_numpy(), g["phase"].to_numpy(), ts, dur,
            g["bytes"].to_numpy(), strict=True,
        ):
            args = {"step": int(s)}
            if b:
                args["bytes"] = float(b)
            events.append({"ph": "X", "pid": pid, "tid": int(w), "name": ph, "ts": float(t),
                           "dur": float(d), "args": args})
    return {"traceEvents": events, "displayTimeUnit": "ms"}
