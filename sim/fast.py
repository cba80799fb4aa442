"""The fast path of ``simulate``: the exact engine's timing (``sim/run.py``) as array arithmetic over
repeats x sync intervals x workers, without SimPy, the Recorder or a [workers x steps] plan.

Between two barriers the workers are independent, so the time to a barrier is each worker's sum of
its step times and the barrier their maximum; a DDP step waits for the slowest worker's compute.
Nothing else of the run depends on the order of the steps inside an interval, so the fast path keeps,
per (repeat, interval, worker), the number of gradient steps and the sum of their compute factors,
and per DDP step the slowest worker's. Those sums and maxima are drawn cell by cell where that is
cheap (few workers, short intervals) and from their distributions where it is not (``sim/draws.py``).
The costs are the exact engine's (``sim/costs.py``, ``SimAlgorithm.sync``), so both follow any
change to them.

Where every step of every worker of a run is drawn cell by cell (``draws_exactly``), the cells are
the exact engine's own factors (``core/variability.ComputeFactors`` of the run's seed, step-major,
shared by the algorithms as there) and PALSGD's pseudo-sync steps are where the seed's plan puts them,
so a fast run equals the exact engine's run of the same seed up to rounding; worker failures (policy
``wait``) are simulated there only, with the exact engine's failure stream (``sim/fast_exact.py``).
Where sums and maxima are
drawn from their distributions, the draws come from a stream of their own: a fast run is then
distributed as the exact engine's run of the same seed, not equal to it draw for draw
(``tests/sim/test_fast.py`` checks both; ``benchmarks/bench_fast_agreement.py`` measures them).
Without variability both compute the same numbers up to rounding. ``why_not`` names what the fast path
does not model (the exact engine then runs): failures with policy ``rejoin`` or in runs too large to
draw step by step, a kept step table, Streaming DiLoCo's overlapped all-reduce (tau > 0), PALSGD's
``skipped_batches = kept``, replica groups, a single worker.
"""

from __future__ import annotations

import functools

import numpy as np

from ..core.algorithms import FACTS, Plan, plan
from ..core.config import AlgorithmSpec, Experiment
from ..core.schema import PHASES
from ..core.variability import slow_factors
from .algorithms import SimAlgorithm
from .costs import StepCosts, ddp_comm_end
from .draws import Factors
from .fast_exact import ExactFactors, Failures, comm_end_with, gradient_mask

CELLS_PER_BLOCK = 1 << 21
"""Array elements (repeats x steps or intervals x workers, x steps for cell draws) per block: bounds
the fast path's working set at ~30 arrays of this many float64."""
MIN_SUM_STEPS = 16
"""Steps of an interval from which a worker's sum is drawn from its distribution, not cell by cell."""
MAX_SUM_CV = 0.3
"""Largest jitter cv for which sums are drawn from their distribution (the log-normal fit's range)."""
MIN_MAX_WORKERS = 64
"""Workers from which a DDP step's maximum is drawn from its distribution, not cell by cell."""
EXACT_TABLE_CELLS = 1 << 24
"""Most (repeats x workers x steps) factors of the exact engine drawn at once (128 MB of float64): a run
of more workers x steps draws from the fast path's own stream (``draws_exactly``)."""
EXACT_JOB_CELLS = 1 << 26
"""Worker-steps of a whole job (repeats x workers x steps, per algorithm) up to which every step is drawn
from the exact engine's own factors even where sums and maxima could be drawn instead: about 3 s of
draws on one loaded core, for runs equal to the exact engine's."""
_FAST_STREAM = 0xFA57
_P = {name: i for i, name in enumerate(PHASES)}


def why_not(exp: Experiment, record_steps: bool) -> str | None:
    """What of ``exp`` the fast path does not model, or None when it simulates it."""
    if record_steps:
        return "the step table is kept"
    failures = exp.cluster.failures
    if failures.mtbf_s > 0 and failures.policy != "wait":
        return f"failed workers rejoin at the next sync (cluster.failures.policy = {failures.policy!r})"
    if failures.mtbf_s > 0 and exp.workers * exp.nominal_steps > EXACT_TABLE_CELLS:
        return (f"workers fail in a run of over {EXACT_TABLE_CELLS:,} worker-steps (failures are followed "
                "step by step, as the exact engine does)")
    if exp.workers < 2:
        return "a single worker"
    for a in exp.algorithms:
        if FACTS[a.name].fragments and a.fragment_sync_delay > 0:
            return "Streaming DiLoCo overlaps its all-reduce (fragment_sync_delay > 0)"
        if a.effective_p > 0 and a.skipped_batches == "kept":
            return "PALSGD keeps skipped batches (skipped_batches = kept)"
        if a.sync_balanced and exp.cluster.variability.slow_workers:
            return f"{a.name} balances its sync period per replica (algorithm.sync_every = \"balanced\")"
        if exp.group_size(a) > 1:
            return f"{a.name} trains in replica groups (algorithm.replica_group = {a.replica_group!r})"
    return None


class Tally:
    """Per-(repeat, phase, worker) totals of a batch of runs: what ``Recorder`` keeps for one run."""

    def __init__(self, repeats: int, workers: int):
        shape = (repeats, len(PHASES), workers)
        self.duration, self.bytes, self.count = np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64)

    def add(self, phase: str, duration, count, nbytes=0.0) -> None:
        """``duration``, ``count``, ``nbytes`` broadcast to [repeats, workers]."""
        p = _P[phase]
        self.duration[:, p] += duration
        self.count[:, p] += count
        self.bytes[:, p] += nbytes


def simulate_batch(exp: Experiment, algo: SimAlgorithm, costs: StepCosts,
                   seeds: list[int], exact: ExactFactors | None = None) -> tuple[Tally, np.ndarray, int]:
    """Runs of ``algo`` with plan seeds ``seeds``: (their totals, their wall-clocks, their steps).
    ``exact``: the exact engine's factors of these seeds, used where ``draws_exactly``."""
    spec, var = algo.spec, exp.cluster.variability
    rng = np.random.default_rng([seeds[0], _FAST_STREAM])
    groups = _Groups(exp)
    shape = _shape(exp, spec)
    ddp_steps = int((shape.kinds[0] == 0).sum())
    table = None
    if draws_exactly(exp, spec):
        table = (exact or ExactFactors(exp, seeds)).table()
    run = _Batch(exp, algo, costs, groups, Factors(var, rng), len(seeds), table)
    run.mask = gradient_mask(exp, spec, seeds, table is not None)
    if exp.cluster.failures.mtbf_s > 0:
        run.failures = Failures(exp, seeds)
    run.ddp(ddp_steps)
    run.local(_intervals(shape.sync_after, ddp_steps), shape.fragment)
    return groups.expand(run.tally), run.wall_s, exp.nominal_steps


def _shape(exp: Experiment, spec: AlgorithmSpec) -> Plan:
    """The plan's step kinds, syncs and fragments, for one worker (the pseudo-syncs apart)."""
    return _one_worker_plan(spec.name, exp.nominal_steps, spec.warmup_steps, spec.sync_every, spec.fragments,
                            spec.averager)


@functools.lru_cache(maxsize=64)
def _one_worker_plan(name: str, steps: int, warmup_steps: int, sync_every: int, fragments: int,
                     averager: str) -> Plan:
    """Cached: a sweep asks for the same few shapes at every point (the plan's arrays are not written)."""
    shape = plan(name, workers=1, steps=steps, seed=0, warmup_steps=warmup_steps, sync_every=sync_every,
                 fragments=fragments, averager=averager)
    for a in (shape.kinds, shape.sync_after, shape.fragment):
        a.setflags(write=False)
    return shape


def draws_exactly(exp: Experiment, spec: AlgorithmSpec) -> bool:
    """True where the runs of ``spec`` draw every step of every worker cell by cell, from the exact
    engine's own factors, so that they equal the exact engine's runs of the same seed up to rounding: a
    run's cells fit in EXACT_TABLE_CELLS, and workers fail, or the whole job's cells are affordable
    (EXACT_JOB_CELLS), or the run would be drawn cell by cell anyway (few workers, short intervals)."""
    var = exp.cluster.variability
    cells = exp.workers * exp.nominal_steps
    if cells > EXACT_TABLE_CELLS:
        return False
    if exp.cluster.failures.mtbf_s > 0:  # failure times depend on every step's end: drawn step by step
        return True
    if not (var.jitter_cv > 0 or var.straggler_prob > 0):
        return False
    if exp.repeats * cells <= EXACT_JOB_CELLS:
        return True
    shape = _shape(exp, spec)
    ddp_steps = int((shape.kinds[0] == 0).sum())
    if exp.workers >= MIN_MAX_WORKERS and ddp_steps >= MIN_SUM_STEPS:
        return False
    lengths = {last - first + 1 for first, last, _ in _intervals(shape.sync_after, ddp_steps)}
    return var.jitter_cv > MAX_SUM_CV or all(n < MIN_SUM_STEPS for n in lengths)


def equals_exact(exp: Experiment) -> bool:
    """True where the fast path gives the exact engine's runs up to rounding: it models ``exp``
    (``why_not``) and either nothing is random or every run draws the exact engine's own factors."""
    var = exp.cluster.variability
    if why_not(exp, record_steps=False) is not None:
        return False
    return not (var.jitter_cv > 0 or var.straggler_prob > 0) or all(draws_exactly(exp, a) for a in exp.algorithms)


def _intervals(sync_after: np.ndarray, first: int) -> list[tuple[int, int, bool]]:
    """(first, last, sync after last) of each run of local steps."""
    out = []
    for t in np.flatnonzero(sync_after):
        out.append((first, int(t), True))
        first = int(t) + 1
    if first < len(sync_after):
        out.append((first, len(sync_after) - 1, False))
    return out


class _Groups:
    """The workers simulated: every worker, or, when compute does not vary, one per distinct slow factor
    (workers that take the same time at every step have the same totals)."""

    def __init__(self, exp: Experiment):
        var, w = exp.cluster.variability, exp.workers
        slow = slow_factors(var, w)
        # every worker apart where steps vary or workers fail, else one per slow factor
        self.random = var.jitter_cv > 0 or var.straggler_prob > 0 or exp.cluster.failures.mtbf_s > 0
        if self.random:
            self.slow, self.index = slow, None
        else:
            self.slow, self.index = np.unique(slow, return_inverse=True)
        self.workers = w

    def expand(self, tally: Tally) -> Tally:
        if self.index is None:
            return tally
        out = Tally(tally.duration.shape[0], self.workers)
        out.duration, out.bytes, out.count = (a[:, :, self.index] for a in (tally.duration, tally.bytes, tally.count))
        return out


class _Batch:
    """The totals and wall-clocks of a batch of runs, built block by block."""

    def __init__(self, exp, algo, costs: StepCosts, groups: _Groups, factors: Factors, repeats: int,
                 table: np.ndarray | None):
        self.exp, self.algo, self.c, self.g, self.x = exp, algo, costs, groups, factors
        self.repeats, self.n = repeats, len(groups.slow)
        self.table = table  # the exact engine's factors [repeats, workers, steps], or None
        self.failures: Failures | None = None  # the workers' failures (cell by cell only)
        self.mask: np.ndarray | None = None  # PALSGD's gradient steps [repeats, 1 or workers, steps]
        self.tally = Tally(repeats, self.n)
        self.wall_s = np.zeros(repeats)

    # -- DDP steps: every step waits for the slowest worker ----------------------------------------

    def ddp(self, steps: int) -> None:
        statistical = self.table is None and self.g.random and self.n >= MIN_MAX_WORKERS and steps >= MIN_SUM_STEPS
        per_block = CELLS_PER_BLOCK // self.repeats if statistical else CELLS_PER_BLOCK // (self.repeats * self.n)
        block = max(1, per_block)
        for first in range(0, steps, block):
            n = min(block, steps - first)
            if statistical:
                self._ddp_drawn(n)
            else:
                self._ddp_cells(first, n)

    def _ddp_cells(self, first: int, n: int) -> None:
        """Steps first.. first + n - 1 from per-cell compute times [repeats, workers, n]."""
        if self.table is not None:
            comp = self.c.compute_s * self.table[:, :, first:first + n]
        else:
            comp = self.c.compute_s * (self.g.slow[None, :, None] * self._cells((self.repeats, self.n, n)))
        if self.failures is None:
            cmax, comm_end = comp.max(axis=1), None
            idle = cmax[:, None, :] - comp
        else:  # a worker restarting after a failure starts its compute later (``Run._ddp``)
            fail = self.failures.ddp(comp, self.wall_s, self.c)
            cmax, comm_end = (fail + comp).max(axis=1), comm_end_with(fail, comp, self.c)
            idle = cmax[:, None, :] - fail - comp
            self.tally.add("failure", fail.sum(axis=2), np.count_nonzero(fail, axis=2))
        self.tally.add("compute", comp.sum(axis=2), n)
        self.tally.add("wait", np.where(idle > 0, idle, 0.0).sum(axis=2), (idle > 0).sum(axis=2))
        self._ddp_common(cmax, comm_end)

    def _cells(self, shape):
        return self.x.cells(shape) if self.g.random else np.ones(shape)

    def _ddp_drawn(self, n: int) -> None:
        """n steps of many workers: each step's slowest compute from the distribution of the maximum
        of each slow-factor group, each worker's compute over the n steps from the sum's. A worker
        waits at a step for the slowest one's compute less its own: summed over the steps, the sum of
        the maxima less its own sum; it waits at every step but those it is the slowest at (drawn by
        group, then uniformly in the group)."""
        c, slow = self.c.compute_s, self.g.slow
        levels = np.unique(slow)
        group_max = np.stack([level * self.x.maxima(int((slow == level).sum()), (self.repeats, n))
                              for level in levels])
        cmax = c * group_max.max(axis=0)
        comp = c * slow[None, :] * self.x.sums(n, (self.repeats, self.n))
        self.tally.add("compute", comp, n)
        wait = np.maximum(cmax.sum(axis=1)[:, None] - comp, 0.0)
        self.tally.add("wait", wait, n - self._slowest_counts(group_max.argmax(axis=0), levels))
        self._ddp_common(cmax)

    def _slowest_counts(self, winner: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """[repeats, workers]: steps at which each worker was the slowest (so did not wait)."""
        slow, rng = self.g.slow, self.x.rng
        out = np.zeros((self.repeats, self.n), dtype=np.int64)
        for i, level in enumerate(levels):
            members = np.flatnonzero(slow == level)
            wins = (winner == i).sum(axis=1)
            out[:, members] = rng.multinomial(wins, np.full(len(members), 1 / len(members)))
        return out

    def _ddp_common(self, cmax: np.ndarray, comm_end: np.ndarray | None = None) -> None:
        """What every worker shares at a DDP step given its slowest compute ``cmax`` [repeats, n]:
        the buckets' all-reduce (``costs.ddp_comm_end`` unless given), data, broadcast, optimizer
        (``Run._ddp``)."""
        c, n = self.c, cmax.shape[1]
        if comm_end is None:
            comm_end = ddp_comm_end(cmax.ravel(), c.bucket_ready, c.bucket_s).reshape(cmax.shape)
        dur = c.data_s + c.buffer_broadcast_s + comm_end + c.warmup_extra_s + c.optimizer_s
        self.wall_s += dur.sum(axis=1)
        total = float(c.bucket_s.sum())
        exposed = comm_end - cmax
        hidden = np.maximum(total - exposed, 0.0)
        share = exposed / total if total > 0 else np.ones_like(exposed)
        col = (slice(None), None)
        if c.data_s > 0:
            self.tally.add("data", n * c.data_s, n)
        if c.buffer_broadcast_s > 0:
            self.tally.add("allreduce", n * c.buffer_broadcast_s, n, n * c.buffer_broadcast_bytes)
        self.tally.add("allreduce_hidden", np.where(hidden > 0, hidden, 0.0).sum(axis=1)[col],
                       (hidden > 0).sum(axis=1)[col],
                       np.where(hidden > 0, c.bucket_bytes_sent * (1 - share), 0.0).sum(axis=1)[col])
        self.tally.add("allreduce", exposed.sum(axis=1)[col], n, (c.bucket_bytes_sent * share).sum(axis=1)[col])
        if c.warmup_extra_s > 0:
            self.tally.add("allreduce", n * c.warmup_extra_s, n, n * c.warmup_extra_bytes)
        if c.optimizer_s > 0:
            self.tally.add("optimizer", n * c.optimizer_s, n)

    # -- Local steps: a barrier at each sync -------------------------------------------------------

    def local(self, intervals, fragment: np.ndarray) -> None:
        """Intervals of equal length in blocks of [repeats, intervals, workers]."""
        i = 0
        while i < len(intervals):
            n = intervals[i][1] - intervals[i][0] + 1
            cells = n if self._cell_drawn(n) else 1
            limit = max(1, CELLS_PER_BLOCK // (self.repeats * self.n * cells))
            j = i
            while j < len(intervals) and j - i < limit and intervals[j][1] - intervals[j][0] + 1 == n:
                j += 1
            self._block(intervals[i:j], n, fragment)
            i = j

    def _cell_drawn(self, n: int) -> bool:
        return self.table is not None or (self.g.random and (n < MIN_SUM_STEPS or self.x.cv > MAX_SUM_CV))

    def _block(self, block, n: int, fragment: np.ndarray) -> None:
        c, shape = self.c, (self.repeats, len(block), self.n)
        grads = self._gradient_steps(np.array([a for a, _, _ in block]), n, shape)
        pseudo = n - grads
        m, pseudo_data = self.algo.pseudo_sync(c)
        arrival = self._sums(grads, block[0][0], n, shape)  # [repeats, intervals, workers], compute first
        arrival *= c.compute_s
        self.tally.add("compute", arrival.sum(axis=1), grads.sum(axis=1))
        arrival += grads * (c.data_s + c.optimizer_s) + pseudo * (pseudo_data + m)
        self._local_phases(grads, pseudo, m, pseudo_data)
        synced = np.array([s for *_, s in block])
        comm_s, outer_s, nbytes = self._sync_costs(np.where(synced, fragment[[last for _, last, _ in block]], -1))
        if self.failures is not None:
            fail_s, fail_n = self.failures.local(self.wall_s, arrival, comm_s + outer_s, self._steps_of(block[0][0], n))
            arrival += fail_s
            self.tally.add("failure", fail_s.sum(axis=1), fail_n.sum(axis=1))
        barrier = arrival.max(axis=2)
        # a worker waits at a sync from its arrival until the barrier's own latency has passed
        idle = np.subtract((barrier + c.barrier_s)[:, synced, None], arrival[:, synced])
        np.maximum(idle, 0.0, out=idle)
        self.tally.add("wait", idle.sum(axis=1), np.count_nonzero(idle, axis=1))
        syncs = int(synced.sum())
        self.tally.add("allreduce", float((comm_s - c.barrier_s)[synced].sum()), syncs, float(nbytes.sum()))
        if (outer_s > 0).any():
            self.tally.add("outer_step", float(outer_s.sum()), int((outer_s > 0).sum()))
        self.wall_s += barrier.sum(axis=1) + float((comm_s + outer_s).sum())

    def _sync_costs(self, fragments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(comm_s, outer_s, bytes) of each interval's sync (zero where ``fragments`` is -1: no sync):
        a sync's cost depends only on its fragment, so each fragment's is asked once."""
        out = np.zeros((3, len(fragments)))
        for f in np.unique(fragments[fragments >= 0]):
            x = self.algo.sync(self.c, int(f))
            out[:, fragments == f] = np.array([[x.comm_s], [x.outer_s], [x.bytes]])
        return out[0], out[1], out[2]

    def _steps_of(self, first: int, n: int):
        """(r, i) -> (data, main, opt) [workers, n] of the block's interval i in repeat r, built as
        ``Run._local_steps`` builds them (for the failure loop, ``sim/fast_exact.py``)."""
        c = self.c
        m, pseudo_data = self.algo.pseudo_sync(c)

        def steps(r: int, i: int):
            a = first + i * n
            comp = c.compute_s * self.table[r, :, a:a + n]
            grad = np.broadcast_to(True if self.mask is None else self.mask[r, :, a:a + n], comp.shape)
            comp = np.where(grad, comp, 0.0)
            return np.where(grad, c.data_s, pseudo_data), np.where(grad, comp, m), np.where(grad, c.optimizer_s, 0.0)
        return steps

    def _local_phases(self, grads: np.ndarray, pseudo: np.ndarray, m: float, pseudo_data: float) -> None:
        """Data, optimizer and pseudo-sync time of local steps: fixed costs per step of each kind."""
        c, g, s = self.c, grads.sum(axis=1), pseudo.sum(axis=1)
        if c.data_s > 0 or pseudo_data > 0:
            self.tally.add("data", g * c.data_s + s * pseudo_data, g * (c.data_s > 0) + s * (pseudo_data > 0))
        if c.optimizer_s > 0:
            self.tally.add("optimizer", g * c.optimizer_s, g)
        if m > 0:
            self.tally.add("pseudo_sync", s * m, s)

    def _gradient_steps(self, firsts: np.ndarray, n: int, shape) -> np.ndarray:
        """[repeats, intervals, workers] gradient steps of each interval (the others are pseudo-syncs)."""
        p = self.algo.spec.effective_p
        if self.mask is not None:  # the plan's own rows
            cells = self._interval_cells(self.mask, firsts[0], len(firsts), n)
            return cells.sum(axis=-1, dtype=np.int64)
        if p > 0:  # independent draws: each worker's own Binomial(n, 1 - p)
            return self.x.rng.binomial(n, 1 - p, shape)
        return np.full((1, len(firsts), 1), n)

    def _sums(self, grads: np.ndarray, first: int, n: int, shape) -> np.ndarray:
        """Σ of each worker's ``grads`` compute factors slow_k · J · S over the intervals of ``shape``
        from step ``first`` on, [shape]."""
        if not self.g.random:
            return np.broadcast_to(grads * self.g.slow, shape).astype(float)
        if not self._cell_drawn(n):
            same = grads.size and grads.min() == grads.max()  # one draw per cell without a mask
            return self.g.slow * self.x.sums(grads.ravel()[0] if same else grads, shape)
        if self.table is not None:  # the exact engine's cells, at the plan's gradient steps
            cells = self._interval_cells(self.table, first, shape[1], n)
            return (cells if self.mask is None else
                    np.where(self._interval_cells(self.mask, first, shape[1], n), cells, 0.0)).sum(axis=-1)
        cells = self.g.slow[:, None] * self.x.cells((*shape, n))
        return np.where(np.arange(n) < grads[..., None], cells, 0.0).sum(axis=-1)

    @staticmethod
    def _interval_cells(a: np.ndarray, first: int, intervals: int, n: int) -> np.ndarray:
        """[repeats, workers, steps] ``a`` from step ``first`` as [repeats, intervals, workers, n]."""
        block = a[:, :, first:first + intervals * n]
        return block.reshape(block.shape[0], block.shape[1], intervals, n).transpose(0, 2, 1, 3)

