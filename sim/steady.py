"""What ``simulate`` answers for a whole run, at the cost of a few hundred steps: the points of ``palsgd
explore`` and ``simulate --sensitivity`` (``answer_parts``).

A point whose run ``simulate`` gives the fast path (``bounds.engine_for``), or that the exact engine
simulates in under ``WHOLE_RUN_WORK_S``, is simulated as ``simulate`` does. Otherwise each algorithm in
turn (its runs share nothing with the others'): a local algorithm takes the fast path where it applies
(``fast.why_not``; equal up to rounding without variability, in distribution with it), and the others
(DDP, and what the fast path does not model) the exact engine's prefix, extrapolated as below.

After its warm-up a run repeats one period of L steps: the least common multiple of the local
algorithms' H (a Streaming DiLoCo period syncs each of its P fragments once; a DDP run repeats every
step). Every total of a run (each worker's time, bytes and count per phase, its wall-clock and steps)
is a sum over its steps, so with A = T - n·L (the run less n whole periods, so that the prefix ends as
the run does: the same last, partial interval) and m periods measured after A,

    total(T) = total(A) + (n / m) · (total(A + m·L) - total(A))

The prefix runs are the run's own first steps (the plan and the compute factors of step t depend only
on the seed and t). The rule is exact when every period costs the same: no variability, no failures, no
PALSGD pseudo-syncs (equal up to rounding, ``tests/sim/test_steady.py``). Otherwise the m measured
periods are a sample of the n, and the total is within their sampling error (the test states the
tolerance).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.config import BudgetSpec, Experiment
from . import bounds, fast
from .engine import simulate_tables

SETTLE_PERIODS = 1
"""Whole periods between the warm-up and A: the first interval after the warm-up may still settle (a
Streaming DiLoCo all-reduce in flight, a PyTorch average right after the warm-up)."""
MEASURED_STEPS = 400
"""At least this many steps (and two periods) are measured: their mean stands for the other periods."""
WHOLE_RUN_WORK_S = 0.1
"""A point the exact engine simulates in under this (``bounds`` estimate) is simulated whole."""
_KEYS = ["source", "algorithm", "run", "worker", "phase"]


def period_steps(exp: Experiment) -> int:
    """L: the steps after which every local algorithm's plan repeats (1 without a local algorithm)."""
    return math.lcm(1, *(a.sync_every for a in exp.algorithms if a.is_local))


def prefix(exp: Experiment) -> tuple[int, int, int] | None:
    """(A, m·L, n·L): the prefix simulated, the steps measured after it and the steps extrapolated; None
    when the run is too short for extrapolation to save anything."""
    period, steps = period_steps(exp), exp.nominal_steps
    warm = max((a.warmup_steps for a in exp.algorithms if a.is_local), default=0)
    measured = period * max(2, math.ceil(MEASURED_STEPS / period))
    rest = (steps - warm - SETTLE_PERIODS * period) // period * period
    if rest <= measured:
        return None
    return steps - rest, measured, rest


def answer_parts(exp: Experiment) -> list[tuple[str, Experiment]]:
    """(how, the experiment of some of ``exp``'s algorithms) that together answer for ``exp``: ``fast``
    (``sim/fast_runs.py``), ``exact`` (``engine.simulate_tables``) or ``steady`` (``simulate_tables_steady``)."""
    chosen = bounds.engine_for(exp, record_steps=False)
    exact = bounds.estimate(exp, record_steps=False, keep_totals=False, engine="exact")
    if chosen == "fast" or exact.work_s <= WHOLE_RUN_WORK_S:
        return [(chosen, exp)]
    parts: dict[str, list] = {}
    for spec in exp.algorithms:
        one = exp.replace(algorithms=(spec,))
        if spec.is_local and fast.why_not(one, record_steps=False) is None:
            parts.setdefault("fast", []).append(spec)
        else:
            parts.setdefault("steady" if prefix(one) is not None else "exact", []).append(spec)
    out = [(how, exp.replace(algorithms=tuple(specs))) for how, specs in parts.items()]
    return [("exact" if how == "steady" and prefix(part) is None else how, part) for how, part in out]


def simulate_tables_steady(exp: Experiment, *, run_offset: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(phase totals, run extents) of every run of ``exp``, extrapolated from its prefix (``prefix``,
    which must not be None): what ``engine.simulate_tables`` gives for the whole run."""
    first, measured, rest = prefix(exp)
    (t_a, e_a), (t_b, e_b) = (
        simulate_tables(exp.replace(budget=BudgetSpec(steps=n)), record_steps=False, run_offset=run_offset)[:2]
        for n in (first, first + measured))
    return (_extrapolate(t_a, t_b, _KEYS, ["duration_s", "bytes", "count"], rest / measured),
            _extrapolate(e_a, e_b, _KEYS[:3], ["steps", "wall_clock_s"], rest / measured))


def describe(how: str, exp: Experiment) -> str:
    """What a page says simulated an algorithm's run (``answer_parts``'s ``how``)."""
    if how == "steady":
        first, measured, _ = prefix(exp)
        return f"exact engine, {first + measured:,} steps extrapolated"
    return f"{how} engine"


def _extrapolate(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], values: list[str], scale: float) -> pd.DataFrame:
    """b's rows with a + scale · (b - a), rows matched on ``keys``. b ran longer than a from the same
    start, so it holds every row of a; a row of b alone (a phase first seen after a) counts from zero.
    Counts stay whole numbers. Matched in Python: a pandas join costs more than the simulation."""
    where = {key: i for i, key in enumerate(zip(*(a[k].tolist() for k in keys), strict=True))}
    rows = np.array([where.get(key, -1) for key in zip(*(b[k].tolist() for k in keys), strict=True)], dtype=np.int64)
    out = b.copy()
    for v in values:
        end = b[v].to_numpy()
        start = np.where(rows >= 0, a[v].to_numpy()[rows], 0)
        value = start + scale * (end - start)
        out[v] = np.rint(value).astype(end.dtype) if np.issubdtype(end.dtype, np.integer) else value
    return out
