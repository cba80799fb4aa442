"""``simulate(experiment)``: every algorithm x every Monte-Carlo repeat, as SimPy processes.

Each (algorithm, run) is one SimPy process in its own ``simpy.Environment``, simulated one after
another: runs own their workers, network stream and recorder and share nothing, so simulating them
in turn gives what one shared clock would, while only one run's arrays are alive at a time and only
its totals (or summary) outlive it. Run r uses seed ``exp.seed + r`` for its plan (the one the real
harness draws too) and for its variability. The algorithms of one run draw their step-time jitter
from the same stream (common random numbers), so a speedup compares the algorithms under the same
noise, not under different luck.

Large jobs and many repeats go to the fast path instead (``sim/fast.py``, chosen by
``bounds.engine_for``): the same timing as arrays over repeats x sync intervals x workers, with sums
and maxima of step times drawn from their distributions; this engine stays the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from ..core import schema
from ..core.config import Experiment
from . import algorithms, bounds
from .costs import step_costs
from .fast_runs import simulate_fast
from .record import Recorder
from .run import Run

SOURCE = "sim"


@dataclass(frozen=True)
class SimResult:
    runs: pd.DataFrame
    """Run table (``schema.RUN_COLUMNS``): one row per (algorithm, run), speedup_vs_ddp filled."""
    steps: pd.DataFrame | None
    """Step table (``schema.STEP_COLUMNS``), or None when not recorded."""
    totals: pd.DataFrame | None
    """Phase totals (``schema.TOTAL_COLUMNS``): per (algorithm, run, worker, phase); None when not kept."""


def simulate(exp: Experiment, *, record_steps: bool | None = None, keep_totals: bool = True,
             on_repeat=None, engine: str = "auto") -> SimResult:
    """Simulate every algorithm of ``exp`` for ``exp.repeats`` runs, after checking that the job fits
    (``bounds.check``: ConfigError otherwise). ``record_steps=None`` keeps the step table of small
    jobs only; without ``keep_totals`` the phase totals are summarized and dropped as runs stream by.
    ``on_repeat()`` is called after each repeat (a progress bar). ``engine``: ``exact`` (this module's
    SimPy runs), ``fast`` (``sim/fast.py``) or ``auto`` (``bounds.engine_for``)."""
    record_steps = bounds.records_steps(exp, record_steps)
    est = bounds.check(exp, record_steps=record_steps, keep_totals=keep_totals, engine=engine)
    if est.engine == "fast":
        runs, totals = simulate_fast(exp, keep_totals=keep_totals, on_repeat=on_repeat)
        return SimResult(runs=runs, steps=None, totals=totals)
    summaries, kept_totals, steps = [], [], []
    batch: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    rows = 0
    for totals, extents, table in repeat_tables(exp, record_steps=record_steps):
        batch.append((totals, extents))
        rows += len(totals)
        if table is not None:
            steps.append(table)
        if keep_totals:
            kept_totals.append(totals)
        if on_repeat is not None:
            on_repeat()
        if rows >= bounds.TOTALS_BATCH_ROWS:  # summarize whole repeats: a speedup pairs runs of one seed
            summaries.append(_summarize(batch))
            batch, rows = [], 0
    if batch:
        summaries.append(_summarize(batch))
    return SimResult(
        runs=pd.concat(summaries, ignore_index=True) if len(summaries) > 1 else summaries[0],
        steps=pd.concat(steps, ignore_index=True) if record_steps else None,
        totals=pd.concat(kept_totals, ignore_index=True) if keep_totals else None,
    )


def _summarize(batch: list[tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    totals, extents = zip(*batch, strict=True)
    return schema.summarize(pd.concat(totals, ignore_index=True), pd.concat(extents, ignore_index=True))


def simulate_tables(exp: Experiment, *, record_steps: bool | None = None, run_offset: int = 0):
    """(phase totals, run extents, step table or None) of every run: what ``schema.summarize`` needs.
    Runs are numbered from ``run_offset`` (a sweep summarizes many small points in one call)."""
    record_steps = bounds.records_steps(exp, record_steps)
    parts = list(repeat_tables(exp, record_steps=record_steps, run_offset=run_offset))
    totals = pd.concat([t for t, _, _ in parts], ignore_index=True)
    extents = pd.concat([e for _, e, _ in parts], ignore_index=True)
    steps = pd.concat([s for *_, s in parts], ignore_index=True) if record_steps else None
    return totals, extents, steps


def repeat_tables(exp: Experiment, *, record_steps: bool, run_offset: int = 0
                  ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]]:
    """(phase totals, run extents, step table or None) of each repeat in turn, all algorithms in it."""
    built = [(algorithms.build(spec, exp), step_costs(exp, spec)) for spec in exp.algorithms]
    for r in range(exp.repeats):
        recs = [(algo.name, r + run_offset, _run(exp, algo, costs, exp.seed + r, record_steps))
                for algo, costs in built]
        yield _tables(recs, record_steps)


def _run(exp: Experiment, algo, costs, seed: int, record_steps: bool) -> Recorder:
    """One run on its own clock; only its recorder outlives it (the plan and arrays are freed)."""
    env = simpy.Environment()
    run = Run(env, algo, costs, algo.plan(seed), seed, record_steps)
    env.process(run.process())
    env.run()
    return run.rec


def _tables(recs: list[tuple[str, int, Recorder]], record_steps: bool):
    parts = [(name, r, rec.totals()) for name, r, rec in recs]
    columns = {k: np.concatenate([t[k] for *_, t in parts]) for k in parts[0][2]}
    sizes = [len(t["worker"]) for *_, t in parts]
    totals = pd.DataFrame({
        "source": SOURCE, "algorithm": np.repeat([name for name, *_ in parts], sizes).astype(object),
        "run": np.repeat([r for _, r, _ in parts], sizes).astype(np.int64), **columns,
    })[list(schema.TOTAL_COLUMNS)]
    extents = pd.DataFrame({
        "source": SOURCE,
        "algorithm": [name for name, _, _ in recs],
        "run": [r for _, r, _ in recs],
        "steps": [rec.last_step + 1 for *_, rec in recs],
        "wall_clock_s": [rec.end_s for *_, rec in recs],
    })
    steps = None
    if record_steps:
        steps = pd.concat([rec.steps(SOURCE, name, r) for name, r, rec in recs], ignore_index=True)
    return totals, extents, steps
