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

The draws come from a stream of their own: a fast run is distributed as the exact engine's run of
the same seed (``tests/sim/test_fast.py`` compares them), not equal to it draw for draw. Without
variability both compute the same numbers up to rounding. ``why_not`` names what the fast path
does not model (the exact engine then runs): failures, a kept step table, Streaming DiLoCo's
overlapped all-reduce (tau > 0), PALSGD's ``skipped_batches = kept``, a single worker.
"""

from __future__ import annotations

import numpy as np

from ..core.algorithms import plan, pseudo_sync_mask
from ..core.config import AlgorithmSpec, Experiment
from ..core.schema import PHASES
from ..core.variability import ComputeFactors
from .algorithms import SimAlgorithm
from .costs import StepCosts, ddp_comm_end
from .draws import Factors

CELLS_PER_BLOCK = 1 << 21
"""Array elements (repeats x steps or intervals x workers, x steps for cell draws) per block: bounds
the fast path's working set at ~30 arrays of this many float64."""
MIN_SUM_STEPS = 16
"""Steps of an interval from which a worker's sum is drawn from its distribution, not cell by cell."""
MAX_SUM_CV = 0.3
"""Largest jitter cv for which sums are drawn from their distribution (the log-normal fit's range)."""
MIN_MAX_WORKERS = 64
"""Workers from which a DDP step's maximum is drawn from its distribution, not cell by cell."""
_FAST_STREAM = 0xFA57
_P = {name: i for i, name in enumerate(PHASES)}


def why_not(exp: Experiment, record_steps: bool) -> str | None:
    """What of ``exp`` the fast path does not model, or None when it simulates it."""
    if record_steps:
        return "the step table is kept"
    if exp.cluster.failures.mtbf_s > 0:
        return "workers fail (cluster.failures.mtbf_s > 0)"
    if exp.workers < 2:
        return "a single worker"
    for a in exp.algorithms:
        if a.name == "streaming_diloco" and a.fragment_sync_delay > 0:
            return "Streaming DiLoCo overlaps its all-reduce (fragment_sync_delay > 0)"
        if a.name == "palsgd" and a.skipped_batches == "kept" and a.effective_p > 0:
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
                   seeds: list[int]) -> tuple[Tally, np.ndarray, int]:
    """Runs of ``algo`` with plan seeds ``seeds``: (their totals, their wall-clocks, their steps)."""
    spec, var = algo.spec, exp.cluster.variability
    rng = np.random.default_rng([seeds[0], _FAST_STREAM])
    groups = _Groups(exp)
    run = _Batch(exp, algo, costs, groups, Factors(var, rng), len(seeds))
    shape = plan(spec.name, workers=1, steps=exp.nominal_steps, seed=0, warmup_steps=spec.warmup_steps,
                 sync_every=spec.sync_every, fragments=spec.fragments)
    ddp_steps = int((shape.kinds[0] == 0).sum())
    run.ddp(ddp_steps)
    run.local(_intervals(shape.sync_after, ddp_steps), shape.fragment, _gradient_rows(exp, spec, seeds))
    return groups.expand(run.tally), run.wall_s, exp.nominal_steps


def _intervals(sync_after: np.ndarray, first: int) -> list[tuple[int, int, bool]]:
    """(first, last, sync after last) of each run of local steps."""
    out = []
    for t in np.flatnonzero(sync_after):
        out.append((first, int(t), True))
        first = int(t) + 1
    if first < len(sync_after):
        out.append((first, len(sync_after) - 1, False))
    return out


def _gradient_rows(exp: Experiment, spec: AlgorithmSpec, seeds: list[int]) -> np.ndarray | None:
    """PALSGD with shared draws: bool [repeats, steps], True at a gradient step, from each seed's plan
    (``core.algorithms.pseudo_sync_mask``, one row: every worker's is the same). None otherwise."""
    if spec.effective_p <= 0 or spec.skip_draws != "shared":
        return None
    return np.stack([~pseudo_sync_mask(s, 1, exp.nominal_steps, spec.effective_p, spec.warmup_steps,
                                       "shared")[0] for s in seeds])


class _Groups:
    """The workers simulated: every worker, or, when compute does not vary, one per distinct slow factor
    (workers that take the same time at every step have the same totals)."""

    def __init__(self, exp: Experiment):
        var, w = exp.cluster.variability, exp.workers
        slow = ComputeFactors(var, w, 0).slow  # slow_k: the sampler's own (its draws are not used)
        self.random = var.jitter_cv > 0 or var.straggler_prob > 0
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

    def __init__(self, exp, algo, costs: StepCosts, groups: _Groups, factors: Factors, repeats: int):
        self.exp, self.algo, self.c, self.g, self.x = exp, algo, costs, groups, factors
        self.repeats, self.n = repeats, len(groups.slow)
        self.tally = Tally(repeats, self.n)
        self.wall_s = np.zeros(repeats)

    # -- DDP steps: every step waits for the slowest worker ----------------------------------------

    def ddp(self, steps: int) -> None:
        statistical = self.g.random and self.n >= MIN_MAX_WORKERS and steps >= MIN_SUM_STEPS
        per_block = CELLS_PER_BLOCK // self.repeats if statistical else CELLS_PER_BLOCK // (self.repeats * self.n)
        block = max(1, per_block)
        for first in range(0, steps, block):
            n = min(block, steps - first)
            if statistical:
                self._ddp_drawn(n)
            else:
                self._ddp_cells(n)

    def _ddp_cells(self, n: int) -> None:
        """n steps from per-cell compute times [repeats, workers, n]."""
        comp = self.c.compute_s * self.g.slow[None, :, None] * self._cells((self.repeats, self.n, n))
        cmax = comp.max(axis=1)
        idle = cmax[:, None, :] - comp
        self.tally.add("compute", comp.sum(axis=2), n)
        self.tally.add("wait", np.where(idle > 0, idle, 0.0).sum(axis=2), (idle > 0).sum(axis=2))
        self._ddp_common(cmax)

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

    def _ddp_common(self, cmax: np.ndarray) -> None:
        """What every worker shares at a DDP step given its slowest compute ``cmax`` [repeats, n]:
        the buckets' all-reduce (``costs.ddp_comm_end``), data, broadcast, optimizer (``Run._ddp``)."""
        c, n = self.c, cmax.shape[1]
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

    def local(self, intervals, fragment: np.ndarray, gradient: np.ndarray | None) -> None:
        """Intervals of equal length in blocks of [repeats, intervals, workers]."""
        i = 0
        while i < len(intervals):
            n = intervals[i][1] - intervals[i][0] + 1
            cells = n if self._cell_drawn(n) else 1
            limit = max(1, CELLS_PER_BLOCK // (self.repeats * self.n * cells))
            j = i
            while j < len(intervals) and j - i < limit and intervals[j][1] - intervals[j][0] + 1 == n:
                j += 1
            self._block(intervals[i:j], n, fragment, gradient)
            i = j

    def _cell_drawn(self, n: int) -> bool:
        return self.g.random and (n < MIN_SUM_STEPS or self.x.cv > MAX_SUM_CV)

    def _block(self, block, n: int, fragment: np.ndarray, gradient: np.ndarray | None) -> None:
        c, shape = self.c, (self.repeats, len(block), self.n)
        grads = self._gradient_steps(np.array([a for a, _, _ in block]), n, gradient, shape)
        pseudo = n - grads
        m, pseudo_data = self.algo.pseudo_sync(c)
        arrival = self._sums(grads, n, shape)  # [repeats, intervals, workers], compute first
        arrival *= c.compute_s * self.g.slow
        self.tally.add("compute", arrival.sum(axis=1), grads.sum(axis=1))
        arrival += grads * (c.data_s + c.optimizer_s) + pseudo * (pseudo_data + m)
        barrier = arrival.max(axis=2)
        self._local_phases(grads, pseudo, m, pseudo_data)
        synced = np.array([s for *_, s in block])
        costs = [self.algo.sync(c, int(fragment[last])) if s else None for _, last, s in block]
        comm_s = np.array([x.comm_s if x else 0.0 for x in costs])
        outer_s = np.array([x.outer_s if x else 0.0 for x in costs])
        nbytes = np.array([x.bytes if x else 0.0 for x in costs])
        # a worker waits at a sync from its arrival until the barrier's own latency has passed
        idle = np.subtract((barrier + c.barrier_s)[:, synced, None], arrival[:, synced])
        np.maximum(idle, 0.0, out=idle)
        self.tally.add("wait", idle.sum(axis=1), np.count_nonzero(idle, axis=1))
        syncs = int(synced.sum())
        self.tally.add("allreduce", float((comm_s - c.barrier_s)[synced].sum()), syncs, float(nbytes.sum()))
        if (outer_s > 0).any():
            self.tally.add("outer_step", float(outer_s.sum()), int((outer_s > 0).sum()))
        self.wall_s += barrier.sum(axis=1) + float((comm_s + outer_s).sum())

    def _local_phases(self, grads: np.ndarray, pseudo: np.ndarray, m: float, pseudo_data: float) -> None:
        """Data, optimizer and pseudo-sync time of local steps: fixed costs per step of each kind."""
        c, g, s = self.c, grads.sum(axis=1), pseudo.sum(axis=1)
        if c.data_s > 0 or pseudo_data > 0:
            self.tally.add("data", g * c.data_s + s * pseudo_data, g * (c.data_s > 0) + s * (pseudo_data > 0))
        if c.optimizer_s > 0:
            self.tally.add("optimizer", g * c.optimizer_s, g)
        if m > 0:
            self.tally.add("pseudo_sync", s * m, s)

    def _gradient_steps(self, firsts: np.ndarray, n: int, gradient: np.ndarray | None, shape) -> np.ndarray:
        """[repeats, intervals, workers] gradient steps of each interval (the others are pseudo-syncs)."""
        p = self.algo.spec.effective_p
        if gradient is not None:  # shared draws: the plan's own row
            done = np.concatenate([np.zeros((len(gradient), 1), np.int64), np.cumsum(gradient, axis=1)], axis=1)
            counts = done[:, firsts + n] - done[:, firsts]
            return counts[:, :, None]
        if p > 0:  # independent draws: each worker's own Binomial(n, 1 - p)
            return self.x.rng.binomial(n, 1 - p, shape)
        return np.full((1, len(firsts), 1), n)

    def _sums(self, grads: np.ndarray, n: int, shape) -> np.ndarray:
        """Σ of each worker's ``grads`` compute factors (J · S; 1 without variability), [shape]."""
        if not self.g.random:
            return np.broadcast_to(grads, shape).astype(float)
        if not self._cell_drawn(n):
            same = grads.size and grads.min() == grads.max()  # one draw per cell without a mask
            return self.x.sums(grads.ravel()[0] if same else grads, shape)
        cells = self.x.cells((*shape, n))
        return np.where(np.arange(n) < grads[..., None], cells, 0.0).sum(axis=-1)

