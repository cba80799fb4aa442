"""``simulate(experiment)``: every algorithm x every Monte-Carlo repeat, as SimPy processes.

One ``simpy.Environment`` holds one process per (algorithm, run); each process owns its workers,
its network stream and its recorder, so runs share the clock but nothing else. Run r uses seed
``exp.seed + r`` for its plan (the one the real harness draws too) and for its variability. The
algorithms of one run draw their step-time jitter from the same stream (common random numbers), so
a speedup compares the algorithms under the same noise, not under different luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from ..core import schema
from ..core.config import Experiment
from . import algorithms
from .costs import step_costs
from .run import Run

SOURCE = "sim"
RECORD_LIMIT = 1_000_000
"""Worker-steps (summed over algorithms and repeats) up to which ``record_steps=None`` keeps the step
table; a worker-step is 3-6 rows, so this bounds it at a few hundred MB."""


@dataclass(frozen=True)
class SimResult:
    runs: pd.DataFrame
    """Run table (``schema.RUN_COLUMNS``): one row per (algorithm, run), speedup_vs_ddp filled."""
    steps: pd.DataFrame | None
    """Step table (``schema.STEP_COLUMNS``), or None when not recorded."""
    totals: pd.DataFrame
    """Phase totals (``schema.TOTAL_COLUMNS``): per (algorithm, run, worker, phase)."""


def simulate(exp: Experiment, *, record_steps: bool | None = None) -> SimResult:
    """Simulate every algorithm of ``exp`` for ``exp.repeats`` runs."""
    totals, extents, steps = simulate_tables(exp, record_steps=record_steps)
    return SimResult(runs=schema.summarize(totals, extents), steps=steps, totals=totals)


def simulate_tables(exp: Experiment, *, record_steps: bool | None = None, run_offset: int = 0):
    """(phase totals, run extents, step table or None): what ``schema.summarize`` needs. Runs are
    numbered from ``run_offset`` (a sweep summarizes many points in one call)."""
    env = simpy.Environment()
    runs: list[tuple[str, int, Run]] = []
    prepared = []
    for spec in exp.algorithms:
        algo = algorithms.build(spec, exp)
        costs = step_costs(exp, spec)
        for r in range(exp.repeats):
            prepared.append((algo, costs, r, algo.plan(exp.seed + r)))
    if record_steps is None:
        record_steps = sum(p.steps for *_, p in prepared) * exp.workers <= RECORD_LIMIT
    for algo, costs, r, plan in prepared:
        run = Run(env, algo, costs, plan, exp.seed + r, record_steps)
        env.process(run.process())
        runs.append((algo.name, r, run))
    env.run()
    runs = [(name, r + run_offset, run) for name, r, run in runs]
    parts = [(name, r, run.rec.totals()) for name, r, run in runs]
    columns = {k: np.concatenate([t[k] for *_, t in parts]) for k in parts[0][2]}
    sizes = [len(t["worker"]) for *_, t in parts]
    totals = pd.DataFrame({
        "source": SOURCE, "algorithm": np.repeat([name for name, *_ in parts], sizes).astype(object),
        "run": np.repeat([r for _, r, _ in parts], sizes).astype(np.int64), **columns,
    })[list(schema.TOTAL_COLUMNS)]
    extents = pd.DataFrame({
        "source": SOURCE,
        "algorithm": [name for name, _, _ in runs],
        "run": [r for _, r, _ in runs],
        "steps": [run.rec.last_step + 1 for *_, run in runs],
        "wall_clock_s": [run.rec.end_s for *_, run in runs],
    })
    steps = None
    if record_steps:
        steps = pd.concat([run.rec.steps(SOURCE, name, r) for name, r, run in runs], ignore_index=True)
    return totals, extents, steps
