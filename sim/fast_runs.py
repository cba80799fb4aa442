"""The fast path's tables (``sim/fast.py``): run rows and phase totals of every algorithm and repeat,
the same columns ``engine.simulate`` gives, built from [repeats, phase, worker] arrays in batches of
repeats instead of one pandas table per run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core import schema
from ..core.config import Experiment
from ..core.schema import PHASES
from . import algorithms
from .costs import step_costs
from .fast import CELLS_PER_BLOCK, EXACT_TABLE_CELLS, ExactFactors, Tally, draws_exactly, simulate_batch

SOURCE = "sim"
_P = {name: i for i, name in enumerate(PHASES)}
_PHASE_NAMES = np.array(PHASES, dtype=object)
_PHASE_RANK = np.argsort(np.argsort(PHASES))  # alphabetical rank of each phase, as Recorder.totals orders


def repeats_per_batch(exp: Experiment) -> int:
    """Repeats simulated together: their [repeats x workers] and [repeats x steps] arrays (PALSGD's
    pseudo-sync rows) stay within one block, and the exact engine's factors of their seeds, where drawn
    (``fast.draws_exactly``), within EXACT_TABLE_CELLS."""
    batch = min(exp.repeats, CELLS_PER_BLOCK // (8 * exp.workers), CELLS_PER_BLOCK // exp.nominal_steps)
    if any(draws_exactly(exp, spec) for spec in exp.algorithms):
        batch = min(batch, EXACT_TABLE_CELLS // (exp.workers * exp.nominal_steps))
    return max(1, batch)


def simulate_fast(exp: Experiment, *, keep_totals: bool, on_repeat=None):
    """(run table, phase totals or None) of every algorithm of ``exp`` for ``exp.repeats`` runs; run r
    uses the plan seed ``exp.seed + r`` as the exact engine does."""
    rows, totals = [], []
    for name, runs, tally, wall_s, steps in _batches(exp, on_repeat):
        rows.append(_run_rows(name, runs, tally, wall_s, steps))
        if keep_totals:
            totals.append(_totals(name, runs, tally))
    return run_table(rows), pd.concat(totals, ignore_index=True) if keep_totals else None


def run_columns(exp: Experiment, run_offset: int = 0) -> dict[str, np.ndarray]:
    """The run rows of every algorithm and repeat of ``exp`` as columns, its runs numbered from
    ``run_offset``: a sweep gathers many points' columns and builds one table (``run_table``), since a
    pandas table costs more than a small simulation."""
    parts = [_run_rows(name, runs + run_offset, *rest) for name, runs, *rest in _batches(exp)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def run_table(columns: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """The run table (``schema.RUN_COLUMNS``, speedups filled) of some ``run_columns``."""
    return schema.finish_runs(pd.DataFrame({key: np.concatenate([c[key] for c in columns]) for key in columns[0]}))


def _batches(exp: Experiment, on_repeat=None):
    """(algorithm, runs, totals, wall-clocks, steps) of each batch of repeats and algorithm in turn."""
    built = [(algorithms.build(spec, exp), step_costs(exp, spec)) for spec in exp.algorithms]
    batch = repeats_per_batch(exp)
    for first in range(0, exp.repeats, batch):
        runs = np.arange(first, min(first + batch, exp.repeats))
        seeds = [exp.seed + int(r) for r in runs]
        exact = ExactFactors(exp, seeds)  # drawn once, if an algorithm uses them, for all of them
        for algo, costs in built:
            yield algo.name, runs, *simulate_batch(exp, algo, costs, seeds, exact)
        if on_repeat is not None:
            for _ in runs:
                on_repeat()


def _run_rows(name: str, runs: np.ndarray, tally: Tally, wall_s: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """What ``schema.summarize`` makes of these totals: per-worker sums, averaged over the workers."""
    d, k, n = tally.duration, tally.count, len(runs)

    def mean(a):
        return a.mean(axis=1)
    return {
        "source": np.full(n, SOURCE, dtype=object), "algorithm": np.full(n, name, dtype=object),
        "run": runs.astype(np.int64),
        "compute_s": mean(d[:, _P["data"]] + d[:, _P["compute"]] + d[:, _P["optimizer"]]),
        "comm_exposed_s": mean(d[:, _P["allreduce"]]), "comm_hidden_s": mean(d[:, _P["allreduce_hidden"]]),
        "wait_s": mean(d[:, _P["wait"]]), "pseudo_sync_s": mean(d[:, _P["pseudo_sync"]]),
        "outer_step_s": mean(d[:, _P["outer_step"]]), "failure_s": mean(d[:, _P["failure"]]),
        "bytes_sent_per_worker": mean(tally.bytes.sum(axis=1)),
        "syncs": mean(k[:, _P["allreduce"]].astype(float)),
        "pseudo_sync_steps": mean(k[:, _P["pseudo_sync"]].astype(float)),
        "workers": np.full(n, d.shape[2], dtype=np.int64), "steps": np.full(n, steps, dtype=np.int64),
        "wall_clock_s": wall_s,
    }


def _totals(name: str, runs: np.ndarray, tally: Tally) -> pd.DataFrame:
    """Phase-total rows (``schema.TOTAL_COLUMNS``) where a phase occurred, by run, worker, phase name."""
    r, p, w = np.nonzero(tally.count)
    order = np.lexsort((_PHASE_RANK[p], w, r))
    r, p, w = r[order], p[order], w[order]
    return pd.DataFrame({
        "source": SOURCE, "algorithm": name, "run": runs[r].astype(np.int64), "worker": w.astype(np.int64),
        "phase": _PHASE_NAMES[p], "duration_s": tally.duration[r, p, w], "bytes": tally.bytes[r, p, w],
        "count": tally.count[r, p, w],
    })[list(schema.TOTAL_COLUMNS)]
