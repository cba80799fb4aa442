"""What a simulation will cost, estimated before it starts, and the refusal of what cannot end.

Each estimate is for the engine that will run the job (``engine_for``). The fast path (``sim/fast.py``)
keeps one block of [repeats x intervals x workers] arrays and a batch of repeats' totals at a time, and
its work is a number of cells (``_fast``). The exact engine simulates one (algorithm, repeat) run at a
time and keeps only its totals, so the peak memory is one run's working set (its [workers x steps]
plan and [workers x block] float64 arrays)
plus what is kept across runs: the run rows, the phase totals when they are written, the step table
when it is recorded. The work is a fixed cost per run plus a cost per worker-step. The constants
below were measured on a 2-core VM (docs/benchmarks-sim.md) and err on the large side; the limits
themselves are listed in docs/limits.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from ..core.algorithms import FACTS
from ..core.config import Experiment
from ..core.errors import ConfigError
from ..core.schema import PHASES
from . import fast
from .costs import step_costs
from .fast_runs import repeats_per_batch
from .run import DDP_CHUNK

RECORD_LIMIT = 1_000_000
"""Worker-steps (summed over algorithms and repeats) up to which the step table may be kept."""
TOTALS_BATCH_ROWS = 200_000
"""Phase-total rows summarized at once when the totals are not kept (repeats stream through)."""

PLAN_BYTES_PER_CELL = 12  # int8 kinds, PALSGD's bool mask and its draws, per (worker, step)
BLOCK_BYTES_PER_CELL = 8 * 24  # ~24 float64 arrays alive per (worker, step) of a block
RECORDED_BYTES_PER_WORKER_STEP = 1_600  # step-table rows (3-6 per worker-step) as arrays, then pandas
TOTAL_ROW_BYTES = 600  # a phase-total row in pandas, and its share of the summary's pivots
RUN_ROW_BYTES = 1_000  # a run-table row
BASE_BYTES = 64 << 20  # SimPy, the costs and one run's small arrays

TIMELINE_WORKER_STEPS = 200_000
"""Worker-steps (summed over algorithms) of the first steps simulated again for ``timeline.parquet`` when
the step table is not kept."""
TRACE_ROWS = 200_000
"""Step-table rows written to ``trace.json`` at most (a trace viewer chokes on more)."""
TRACE_BYTES_PER_ROW = 2_000  # a trace event as a Python dict, then its share of the JSON text

RUN_OVERHEAD_S = 0.02  # Python and pandas cost of one run, whatever its size
WORKER_STEPS_PER_S = 3e6  # the engine's speed on one loaded core
CELLS_PER_S = 5e7  # numpy's speed redoing a block after a failure
FAST_AFTER_WORK_S = 2.0
"""``engine = auto`` takes the fast path (``sim/fast.py``) where it applies and the exact engine would
take longer than this; smaller jobs keep the exact engine's draw-for-draw runs."""
FAST_BLOCK_ARRAYS = 12  # float64 [repeats, intervals, workers] arrays of one block alive (4-6 traced at 16,384 workers)
FAST_DRAW_ARRAYS = 4  # float64 [..., workers, steps] arrays where steps are drawn one by one
FAST_CELL_BYTES = 8 * 4  # the [repeats, phase, worker] totals (3 arrays) and their summary, per cell
FAST_RUN_OVERHEAD_S = 2e-3  # Python cost of one (algorithm, batch of repeats)
FAST_FAILURE_WALK_S = 5e-5  # one block of one run walked step by step after a failure (sim/fast_exact.py)
FAST_CELLS_PER_S = 2e6  # cells/s: 2-10 M measured through the CLI on the loaded 2-core VM (benchmarks-sim.md)
MAX_WORK_S = 86_400.0
"""The longest job accepted: one day of one core."""
MAX_ATTEMPTS_PER_STEP = 100.0
"""The most expected attempts of one step under failures, exp(step time / mtbf)."""


@dataclass(frozen=True)
class Estimate:
    run_bytes: int
    """Peak working set of the largest single run."""
    kept_bytes: int
    """What stays across runs: run rows, phase totals, the step table."""
    work_s: float
    """Seconds of one core."""
    engine: str = "exact"
    """The engine that runs the job: ``exact`` or ``fast``."""

    @property
    def peak_bytes(self) -> int:
        return BASE_BYTES + self.run_bytes + self.kept_bytes


def records_steps(exp: Experiment, record_steps: bool | None) -> bool:
    """``record_steps`` with None resolved: keep the step table when it stays under RECORD_LIMIT."""
    if record_steps is None:
        return exp.nominal_steps * exp.workers * len(exp.algorithms) * exp.repeats <= RECORD_LIMIT
    return record_steps


def timeline_steps(exp: Experiment) -> int:
    """The most steps of ``exp`` whose every row ``timeline.parquet`` may keep (0: none)."""
    return TIMELINE_WORKER_STEPS // (exp.workers * len(exp.algorithms))


def output_bytes(exp: Experiment, record_steps: bool) -> int:
    """What writing ``--out`` holds beyond the simulation: the trace of the step table or, when the table
    is not kept, the timeline's rows and their trace."""
    timeline = 0 if record_steps else timeline_steps(exp) * exp.workers * len(exp.algorithms)
    return timeline * RECORDED_BYTES_PER_WORKER_STEP + TRACE_ROWS * TRACE_BYTES_PER_ROW


def engine_for(exp: Experiment, *, record_steps: bool, engine: str = "auto") -> str:
    """``exact`` or ``fast``: what ``engine`` (``auto``, ``exact``, ``fast``) runs ``exp`` with. The fast
    path where it applies (``fast.why_not``) and the exact engine would take over FAST_AFTER_WORK_S."""
    if engine not in ("auto", "exact", "fast"):
        raise ConfigError("the engine must be auto, exact or fast", key="--engine", value=engine,
                          source="command line")
    if engine == "exact":
        return "exact"
    reason = fast.why_not(exp, record_steps)
    if engine == "fast" and reason is not None:
        raise ConfigError(f"the fast path does not simulate this experiment: {reason} (docs/limits.md); "
                          "use --engine exact or auto", key="--engine", value=engine, source="command line")
    if reason is not None:
        return "exact"
    if engine == "fast" or _exact(exp, record_steps, False).work_s > FAST_AFTER_WORK_S:
        return "fast"
    return "exact"


def estimate(exp: Experiment, *, record_steps: bool, keep_totals: bool, engine: str = "auto",
             out: bool = False) -> Estimate:
    """Memory and work of ``simulate(exp)`` (plain integers and floats: no array is built); with ``out``,
    also of the files a results folder gets (``output_bytes``)."""
    if engine_for(exp, record_steps=record_steps, engine=engine) == "fast":
        est = _fast(exp, keep_totals)
    else:
        est = _exact(exp, record_steps, keep_totals)
    if out:
        est = dataclasses.replace(est, kept_bytes=est.kept_bytes + output_bytes(exp, record_steps))
    return est


def _fast(exp: Experiment, keep_totals: bool) -> Estimate:
    """The fast path: one block of arrays and the totals of a batch of repeats at a time; its work is
    one cell per (repeat, DDP step or sync interval, worker), one per step where steps are drawn one
    by one (short intervals, few workers)."""
    workers, steps, runs = exp.workers, exp.nominal_steps, len(exp.algorithms) * exp.repeats
    batch = repeats_per_batch(exp)
    cells, drawn = 0.0, 1  # drawn: the widest block of steps drawn one by one, per worker
    for a in exp.algorithms:
        warm = steps if not a.is_local else min(a.warmup_steps, steps)
        interval = a.sync_every // (a.fragments if FACTS[a.name].fragments else 1)
        per_cell = interval < fast.MIN_SUM_STEPS or exp.cluster.variability.jitter_cv > fast.MAX_SUM_CV
        ddp_cells = warm * (workers if workers < fast.MIN_MAX_WORKERS else 2)
        cells += exp.repeats * (ddp_cells + (steps - warm) * workers / (1 if per_cell else interval))
        drawn = max(drawn, min(interval, steps) if per_cell else 1)
    # a block holds at least one interval (or DDP step) of every worker of the batch's repeats
    block = max(fast.CELLS_PER_BLOCK, batch * workers)
    draws = max(fast.CELLS_PER_BLOCK, batch * workers * drawn)
    totals = batch * len(PHASES) * workers
    # the exact engine's factors of a batch's seeds (float64) and PALSGD's gradient steps (bool), where drawn
    exact = batch * workers * steps * 9 if any(fast.draws_exactly(exp, a) for a in exp.algorithms) else 0
    run_bytes = 8 * (FAST_BLOCK_ARRAYS * block + FAST_DRAW_ARRAYS * draws) + totals * FAST_CELL_BYTES + exact
    total_rows = runs * workers * len(PHASES) if keep_totals else 0
    kept_bytes = runs * RUN_ROW_BYTES + total_rows * TOTAL_ROW_BYTES
    work_s = runs / batch * FAST_RUN_OVERHEAD_S + cells / FAST_CELLS_PER_S + _fast_failure_walks_s(exp)
    return Estimate(run_bytes, kept_bytes, work_s, "fast")


def _fast_failure_walks_s(exp: Experiment) -> float:
    """The fast path walks a run step by step, in Python, from the first failure of a block (a sync
    interval, or up to CELLS_PER_BLOCK DDP cells) on: at most every interval of every run where a
    failure is expected in most blocks, FAST_FAILURE_WALK_S each."""
    mtbf_s = exp.cluster.failures.mtbf_s
    if mtbf_s <= 0:
        return 0.0
    out = 0.0
    for a in exp.algorithms:
        interval = a.sync_every // (a.fragments if a.name == "streaming_diloco" else 1) if a.is_local else 256
        blocks = exp.nominal_steps / max(1, min(interval, exp.nominal_steps))
        failing = min(1.0, exp.workers * _step_s(exp, a) * exp.nominal_steps / mtbf_s)
        out += exp.repeats * blocks * failing * FAST_FAILURE_WALK_S
    return out


def _exact(exp: Experiment, record_steps: bool, keep_totals: bool) -> Estimate:
    """The exact engine: one run's plan and block arrays at a time."""
    workers, steps, runs = exp.workers, exp.nominal_steps, len(exp.algorithms) * exp.repeats
    block = max([min(DDP_CHUNK, steps), *(min(a.sync_every, steps) for a in exp.algorithms if a.is_local)])
    run_bytes = workers * (steps * PLAN_BYTES_PER_CELL + block * BLOCK_BYTES_PER_CELL)
    run_rows = workers * len(PHASES)  # phase totals of one run, at most
    total_rows = runs * run_rows
    if not keep_totals:  # a batch of whole repeats is summarized once it reaches TOTALS_BATCH_ROWS
        total_rows = min(total_rows, TOTALS_BATCH_ROWS + len(exp.algorithms) * run_rows)
    kept_bytes = runs * RUN_ROW_BYTES + total_rows * TOTAL_ROW_BYTES
    if record_steps:
        kept_bytes += runs * workers * steps * RECORDED_BYTES_PER_WORKER_STEP
    work_s = runs * (RUN_OVERHEAD_S + workers * steps / WORKER_STEPS_PER_S)
    mtbf_s = exp.cluster.failures.mtbf_s
    if mtbf_s > 0:  # each failure redoes a block of every worker
        failures = workers * steps * max(_step_s(exp, a) for a in exp.algorithms) / mtbf_s
        work_s += exp.repeats * len(exp.algorithms) * failures * (workers * block / CELLS_PER_S)
    return Estimate(run_bytes, kept_bytes, work_s)


def check(exp: Experiment, *, record_steps: bool, keep_totals: bool, engine: str = "auto",
          out: bool = False) -> Estimate:
    """The estimate, or ConfigError naming what does not fit and how to proceed."""
    _check_failures(exp)
    est = estimate(exp, record_steps=record_steps, keep_totals=keep_totals, engine=engine, out=out)
    available = available_memory_bytes()
    if available is not None and est.peak_bytes > available:
        if est.run_bytes >= est.kept_bytes or exp.repeats == 1:
            raise ConfigError(
                f"{exp.workers:,} workers x {exp.nominal_steps:,} steps need about {_gb(est.peak_bytes)} of "
                f"memory, {_gb(available)} is available (docs/limits.md); simulate fewer workers or steps",
                **_size_key(exp), source="simulate")
        raise ConfigError(
            f"keeping {exp.repeats:,} repeats of {len(exp.algorithms)} algorithms x {exp.workers:,} workers "
            f"needs about {_gb(est.peak_bytes)} of memory, {_gb(available)} is available (docs/limits.md); "
            "give fewer repeats, or leave out --out (the phase totals and step table are kept for it)",
            key="repeats", value=exp.repeats, source="simulate")
    if est.work_s > MAX_WORK_S:
        key = {"key": "repeats", "value": exp.repeats} if exp.repeats > 1 else _size_key(exp)
        hours = f"{est.work_s / 3600:,.{0 if est.work_s >= 36_000 else 2}f}"
        raise ConfigError(
            f"about {hours} h of simulation on one core ({est.engine} engine), over the limit "
            f"of {MAX_WORK_S / 3600:.0f} h (docs/limits.md); give fewer repeats or steps, or split the seeds "
            "over several calls (--seed, --repeats)", **key, source="simulate")
    return est


def check_table_rows(rows: int, *, key: str) -> None:
    """A table of ``rows`` run rows (a sweep's: points x algorithms x repeats) must fit in memory."""
    available = available_memory_bytes()
    need = BASE_BYTES + rows * RUN_ROW_BYTES
    if available is not None and need > available:
        raise ConfigError(f"the sweep table of {rows:,} rows (points x algorithms x repeats) needs about "
                          f"{_gb(need)} of memory, {_gb(available)} is available (docs/limits.md); give fewer "
                          "points or repeats", key=key, source="--vary")


def _size_key(exp: Experiment) -> dict:
    """The input to blame for a run too large: the longer of the two sides of [workers x steps]."""
    if exp.nominal_steps > exp.workers:
        return {"key": "budget.steps", "value": exp.nominal_steps}
    return {"key": "cluster.nodes", "value": exp.cluster.nodes}


def _check_failures(exp: Experiment) -> None:
    """A failing worker redoes its step until no failure falls in it: exp(step / mtbf) attempts on average."""
    mtbf_s = exp.cluster.failures.mtbf_s
    if mtbf_s <= 0:
        return
    step_s = max(_step_s(exp, a) for a in exp.algorithms)
    if step_s / mtbf_s > math.log(MAX_ATTEMPTS_PER_STEP):
        raise ConfigError(
            f"a step of about {step_s:.3g} s is redone until no failure falls in it: exp({step_s:.3g} / "
            f"{mtbf_s:.3g}) attempts on average, over the limit of {MAX_ATTEMPTS_PER_STEP:.0f}, so the run "
            "almost never ends (docs/limits.md); give a larger mtbf_s",
            key="cluster.failures.mtbf_s", value=mtbf_s, source="simulate")


def _step_s(exp: Experiment, algo) -> float:
    """Mean time a worker must survive to finish one step: compute (slowest worker, straggler spikes
    included), optimizer, and DDP's all-reduce."""
    c, var = step_costs(exp, algo), exp.cluster.variability
    slow = var.slow_factor if var.slow_workers else 1.0
    spikes = 1.0 + var.straggler_prob * (var.straggler_factor - 1.0)
    comm_s = float(c.bucket_s.sum()) + c.warmup_extra_s if not algo.is_local or algo.warmup_steps else 0.0
    if c.group is not None:  # a replica group's local steps are DDP steps over the group
        comm_s = max(comm_s, float(c.group.bucket_s.sum()))
    return c.compute_s * slow * spikes + c.optimizer_s + comm_s


def available_memory_bytes() -> int | None:
    """Memory the kernel can give now: MemAvailable (Linux), else the free pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"
