"""The exact engine's own draws on the fast path (``sim/fast.py``), for runs whose every step is drawn
cell by cell: each seed's compute factors (``ExactFactors``), PALSGD's pseudo-sync steps where each
seed's plan puts them (``gradient_mask``), and worker failures as the exact engine has them
(``Failures``; ``sim/run.py``, ``sim/cluster.Workers``).

Each worker fails after an exponential time of mean ``mtbf_s``, drawn from the run's failure stream
(seed, FAILURE_STREAM) in the exact engine's order; a failure is charged at the start of the step it
falls in (``restart_s`` more, the step redone) and the worker's next failure is drawn from the end of
its restart (policy ``wait``: the others wait for it at the next barrier). Failures are rare, so a
block of steps is first simulated for every repeat at once without them; only the repeats in which a
worker's next failure falls inside the block are then walked step by step, exactly as the exact engine
walks them, which fixes the time lost to failures per (repeat, step or interval, worker). Same seed,
same failure times: a run equals the exact engine's up to rounding (``tests/sim/test_fast.py``).
"""

from __future__ import annotations

import numpy as np

from ..core.algorithms import pseudo_sync_mask
from ..core.config import AlgorithmSpec, Experiment
from ..core.variability import ComputeFactors
from .cluster import FAILURE_STREAM
from .costs import StepCosts, ddp_comm_end, ddp_comm_end_one
from .run import redos


class ExactFactors:
    """The exact engine's factors slow_k · J_kt · S_kt of a batch of seeds, [repeats, workers, steps]:
    ``ComputeFactors(var, workers, seed).draw(steps)``, the sequence the exact engine's run of that seed
    draws block by block (every algorithm of a run draws the same, so they are drawn once per batch)."""

    def __init__(self, exp: Experiment, seeds: list[int]):
        self.exp, self.seeds, self._table = exp, seeds, None

    def table(self) -> np.ndarray:
        if self._table is None:
            var, w, n = self.exp.cluster.variability, self.exp.workers, self.exp.nominal_steps
            self._table = np.stack([ComputeFactors(var, w, s).draw(n) for s in self.seeds])
        return self._table


def gradient_mask(exp: Experiment, spec: AlgorithmSpec, seeds: list[int], exact: bool) -> np.ndarray | None:
    """PALSGD: bool [repeats, 1 or workers, steps], True at a gradient step, from each seed's plan
    (``core.algorithms.pseudo_sync_mask``): one row with shared draws (every worker's is the same), one
    per worker with independent draws where the runs draw exactly. None otherwise (independent draws
    are then binomial counts of the fast path's own stream)."""
    if spec.effective_p <= 0 or (spec.skip_draws != "shared" and not exact):
        return None
    rows = 1 if spec.skip_draws == "shared" else exp.workers
    return np.stack([~pseudo_sync_mask(s, rows, exp.nominal_steps, spec.effective_p, spec.warmup_steps,
                                       spec.skip_draws) for s in seeds])


class Failures:
    """Every worker's next failure time [repeats, workers] (absolute, seconds), per repeat its stream."""

    def __init__(self, exp: Experiment, seeds: list[int]):
        f = exp.cluster.failures
        self.exp, self.mtbf_s, self.restart_s = exp, f.mtbf_s, f.restart_s
        self._rngs = [np.random.default_rng([s, FAILURE_STREAM]) for s in seeds]
        self.next = np.stack([g.exponential(self.mtbf_s, exp.workers) for g in self._rngs])

    def _restart(self, r: int, w: int, back_at: float) -> None:
        self.next[r, w] = back_at + self._rngs[r].exponential(self.mtbf_s, 1)[0]

    # -- DDP steps ---------------------------------------------------------------------------------

    def ddp(self, comp: np.ndarray, start_s: np.ndarray, c: StepCosts) -> np.ndarray:
        """Restart time [repeats, workers, steps] charged to each step of a DDP block of compute times
        ``comp`` [repeats, workers, steps] that starts at ``start_s`` [repeats]."""
        fail = np.zeros_like(comp)
        ends = start_s + ddp_durations(comp.max(axis=1), c).sum(axis=1)
        for r in np.flatnonzero((self.next < ends[:, None]).any(axis=1)):
            self._ddp_one(r, comp[r], fail[r], float(start_s[r]), c)
        return fail

    def _ddp_one(self, r: int, comp: np.ndarray, fail: np.ndarray, start_s: float, c: StepCosts) -> None:
        """``Run._ddp``'s failure loop for repeat r: one failure (the earliest) per pass."""
        nxt = self.next[r]
        for _ in redos(self.exp, comp.shape[1]):
            comm_end = comm_end_with(fail[None], comp[None], c)[0]
            dur = c.data_s + c.buffer_broadcast_s + comm_end + c.warmup_extra_s + c.optimizer_s
            ends = start_s + np.cumsum(dur)
            starts = ends - dur
            hit = np.flatnonzero(nxt < ends[-1])
            if len(hit) == 0:
                return
            w = hit[np.argmin(nxt[hit])]
            t = min(int(np.searchsorted(ends, nxt[w], "right")), len(ends) - 1)
            fail[w, t] += self.restart_s
            self._restart(r, w, starts[t] + c.data_s + c.buffer_broadcast_s + fail[w, t])

    # -- Local steps ---------------------------------------------------------------------------------

    def local(self, start_s: np.ndarray, arrival: np.ndarray, after_s: np.ndarray, steps_of):
        """(restart time, steps with a restart), both [repeats, intervals, workers], of a block of
        intervals that starts at ``start_s`` [repeats]. ``arrival`` [repeats, intervals, workers]: each
        worker's arrival at its barrier without failures, from the interval's start; ``after_s``
        [intervals]: the sync and outer step after each barrier; ``steps_of(r, i)``: (data, main, opt)
        [workers, steps] of interval i of repeat r, as ``Run._local_steps`` builds them."""
        fail_s, fail_n = np.zeros(arrival.shape), np.zeros(arrival.shape, dtype=np.int64)
        cycle_s = arrival.max(axis=2) + after_s
        starts = start_s[:, None] + np.cumsum(cycle_s, axis=1) - cycle_s  # [repeats, intervals]
        hit = (self.next[:, None, :] < starts[:, :, None] + arrival).any(axis=2)
        for r in np.flatnonzero(hit.any(axis=1)):
            first = int(np.argmax(hit[r]))
            begin_s = float(starts[r, first])
            for i in range(first, arrival.shape[1]):
                fail, arrival_s = self._interval(r, begin_s, *steps_of(r, i))
                fail_s[r, i], fail_n[r, i] = fail.sum(axis=1), np.count_nonzero(fail, axis=1)
                begin_s = float(arrival_s.max()) + after_s[i]
        return fail_s, fail_n

    def _interval(self, r: int, start_s: float, data, main, opt) -> tuple[np.ndarray, np.ndarray]:
        """``Run._local_steps``' failure loop (policy ``wait``) for one interval of repeat r: the restart
        time per (worker, step) and each worker's arrival at the barrier."""
        nxt, fail = self.next[r], np.zeros_like(main)
        for _ in redos(self.exp, main.shape[1]):
            dur = data + (fail + main) + opt
            ends = start_s + np.cumsum(dur, axis=1)
            hit = np.flatnonzero(nxt < ends[:, -1])
            if len(hit) == 0:
                break
            for w in hit:
                t = min(int(np.searchsorted(ends[w], nxt[w], "right")), main.shape[1] - 1)
                begin = ends[w, t] - dur[w, t]
                fail[w, t] += self.restart_s
                self._restart(r, w, begin + data[w, t] + fail[w, t])
        return fail, ends[:, -1]


def ddp_durations(cmax: np.ndarray, c: StepCosts) -> np.ndarray:
    """Each DDP step's duration [repeats, steps] given its slowest compute ``cmax`` (``Run._ddp``)."""
    comm_end = ddp_comm_end(cmax.ravel(), c.bucket_ready, c.bucket_s).reshape(cmax.shape)
    return c.data_s + c.buffer_broadcast_s + comm_end + c.warmup_extra_s + c.optimizer_s


def comm_end_with(fail: np.ndarray, comp: np.ndarray, c: StepCosts) -> np.ndarray:
    """``ddp_comm_end`` [repeats, steps] of DDP steps where some workers restart first (``fail``
    [repeats, workers, steps] > 0): those steps' buckets are ready at each worker's own offset."""
    offset_max = (fail + comp).max(axis=1)
    comm_end = ddp_comm_end(offset_max.ravel(), c.bucket_ready, c.bucket_s).reshape(offset_max.shape)
    for r, t in zip(*np.nonzero(fail.any(axis=1)), strict=True):
        comm_end[r, t] = ddp_comm_end_one(fail[r, :, t], comp[r, :, t], c.bucket_ready, c.bucket_s)
    return comm_end
