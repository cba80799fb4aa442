"""One simulated run of one algorithm: a SimPy process that walks the plan from barrier to barrier.

Workers are vectorized. Between two cluster-wide events (a barrier, a collective) each worker's
timeline is a numpy array: its step times over a block of steps, [workers, steps], turned into
start times by a cumulative sum. The SimPy clock jumps from event to event: the end of a block of
DDP steps, a sync's barrier (the last arrival), the collective on the network stream, the outer step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import simpy

from ..core.algorithms import FACTS, GRADIENT_STEP, IDLE_STEP, Plan
from ..core.config import Experiment
from ..core.errors import ConfigError
from .algorithms import SimAlgorithm
from .cluster import Network, Workers
from .costs import StepCosts, ddp_comm_end, ddp_comm_end_one
from .groups import GroupSteps
from .record import Recorder

MAX_REDOS_PER_STEP = 100
"""Passes of a block's failure loop (each redoes the steps a failure fell in), per step of the block,
before the run is given up: failures then come about as fast as steps end (docs/limits.md)."""
DDP_CHUNK = 256
"""DDP steps evaluated in one numpy block (bounds memory at workers x 256 floats per array)."""


def redos(exp: Experiment, steps: int):
    """The passes of the failure loop of a block of ``steps`` steps: MAX_REDOS_PER_STEP each at most
    (this engine's and the fast path's, ``sim/fast_exact.py``)."""
    yield from range(MAX_REDOS_PER_STEP * steps)
    f = exp.cluster.failures
    raise ConfigError(
        f"more than {MAX_REDOS_PER_STEP * steps:,} failures in a block of {steps:,} steps "
        f"({exp.workers:,} workers, restart_s {f.restart_s:g}): failures come about as fast as "
        "steps end, so the run almost never ends (docs/limits.md); give a larger mtbf_s",
        key="cluster.failures.mtbf_s", value=f.mtbf_s, source="simulate")


def segments(plan: Plan) -> list[tuple[bool, int, int, bool]]:
    """(is_ddp, first, last, sync_after_last) blocks of the plan: the DDP steps in chunks, then one
    block per run of local steps ending at a sync (the tail after the last sync has none)."""
    ddp_steps = int((plan.kinds[0] == 0).sum()) if FACTS[plan.algorithm].local else plan.steps
    out = [(True, a, min(a + DDP_CHUNK, ddp_steps) - 1, False) for a in range(0, ddp_steps, DDP_CHUNK)]
    first = ddp_steps
    for t in np.flatnonzero(plan.sync_after):
        out.append((False, first, int(t), True))
        first = int(t) + 1
    if first < plan.steps:
        out.append((False, first, plan.steps - 1, False))
    return out


class Run:
    def __init__(self, env: simpy.Environment, algo: SimAlgorithm, costs: StepCosts, plan: Plan,
                 seed: int, record: bool):
        exp = algo.exp
        self.env, self.algo, self.costs, self.plan = env, algo, costs, plan
        self.workers = Workers(exp.cluster, seed)
        self.net = Network(env)
        self.rec = Recorder(exp.workers, record)
        self.rejoin = exp.cluster.failures.policy == "rejoin"
        self.restart_s = exp.cluster.failures.restart_s
        self.back_at = np.zeros(exp.workers)  # when a failed worker computes again (rejoin policy)
        self.talk = exp.workers > 1  # a single worker has nothing to all-reduce
        # Replica groups of more than one worker: their local steps are DDP steps over the group.
        self.groups = GroupSteps(costs.group, costs.bucket_ready) if costs.group is not None else None

    def process(self):
        for is_ddp, first, last, sync in segments(self.plan):
            if is_ddp:
                end = self._ddp(first, last, self.env.now)
                yield self.env.timeout(end - self.env.now)
            else:
                yield from self._local(first, last, sync)

    # -- DDP steps: a barrier every step -------------------------------------------------------

    def _redos(self, steps: int):
        yield from redos(self.algo.exp, steps)

    def _ddp(self, first: int, last: int, start_s: float) -> float:
        """Steps first..last, all workers starting together at ``start_s``; returns the end."""
        c, k = self.costs, self.workers
        comp = k.compute(c.compute_s, last - first + 1)
        fail = np.zeros_like(comp)
        for _ in self._redos(last - first + 1):
            offset_max = (fail + comp).max(axis=0)  # C_t: the slowest worker's compute ends
            comm_end = ddp_comm_end(offset_max, c.bucket_ready, c.bucket_s)
            for t in np.flatnonzero(fail.any(axis=0)):
                comm_end[t] = ddp_comm_end_one(fail[:, t], comp[:, t], c.bucket_ready, c.bucket_s)
            dur = c.data_s + c.buffer_broadcast_s + comm_end + c.warmup_extra_s + c.optimizer_s
            ends = start_s + np.cumsum(dur)
            starts = ends - dur
            hit = k.failures_before(np.full(k.count, ends[-1]))
            if len(hit) == 0:
                break
            w = hit[np.argmin(k.next_failure[hit])]  # DDP always waits: the step takes longer
            t = min(int(np.searchsorted(ends, k.next_failure[w], "right")), len(ends) - 1)
            fail[w, t] += self.restart_s
            k.restart(w, starts[t] + c.data_s + c.buffer_broadcast_s + fail[w, t])
        self._record_ddp(first, starts, comp, fail, offset_max, comm_end)
        return float(ends[-1])

    def _record_ddp(self, first, starts, comp, fail, offset_max, comm_end) -> None:
        c, rec = self.costs, self.rec
        # compute phase origin, per step: after the data and DDP's broadcast of the buffers
        grid = np.broadcast_to(starts + c.data_s + c.buffer_broadcast_s, comp.shape)
        total = float(c.bucket_s.sum())
        exposed = comm_end - offset_max
        hidden = np.maximum(total - exposed, 0.0)
        share = exposed / total if total > 0 else np.ones_like(exposed)
        if c.data_s > 0:
            rec.grid("data", first, grid - c.buffer_broadcast_s - c.data_s, c.data_s)
        if c.buffer_broadcast_s > 0:
            rec.grid("allreduce", first, grid - c.buffer_broadcast_s, c.buffer_broadcast_s, None,
                     c.buffer_broadcast_bytes)
        rec.grid("failure", first, grid, fail, fail > 0)
        rec.grid("compute", first, grid + fail, comp)
        idle = offset_max - fail - comp
        rec.grid("wait", first, grid + fail + comp, idle, idle > 0)
        if self.talk:
            row = np.ones(comp.shape[0], dtype=bool)[:, None]
            rec.grid("allreduce_hidden", first, grid + offset_max - hidden, hidden, row & (hidden > 0),
                     c.bucket_bytes_sent * (1 - share))
            rec.grid("allreduce", first, grid + offset_max, exposed, None, c.bucket_bytes_sent * share)
            if c.warmup_extra_s > 0:
                rec.grid("allreduce", first, grid + comm_end, c.warmup_extra_s, None, c.warmup_extra_bytes)
        if c.optimizer_s > 0:
            rec.grid("optimizer", first, grid + comm_end + c.warmup_extra_s, c.optimizer_s)

    # -- Local steps up to a sync ---------------------------------------------------------------

    def _local(self, first: int, last: int, sync: bool):
        """SimPy process part: local steps first..last, then (if ``sync``) barrier, collective, u."""
        env, rec = self.env, self.rec
        start_s = env.now
        present = self.back_at <= start_s  # under ``rejoin``, a worker still restarting sits out
        delay = self.plan.sync_delay if sync else 0
        arrival, present, started = self._local_steps(first, last, start_s, present, delay)
        if not present.any():  # everyone is down: the sync happens when the first one is back
            arrival = np.minimum(arrival, self.back_at)
            present = self.back_at <= self.back_at.min()
        barrier = float(arrival[present].max())
        yield env.timeout(barrier - env.now)
        if not sync:
            return
        who = np.flatnonzero(present)
        sync_cost = self.algo.sync(self.costs, int(self.plan.fragment[last]))
        if delay and not self.plan.sync_started(last):  # tau = H/P, first sync: nothing was sent
            sync_cost = replace(sync_cost, comm_s=0.0, bytes=0.0)
        # A blocking sync enters through a barrier; the real side times it as waiting (it cannot tell the
        # barrier's own latency from the wait for the slowest worker), so the record does too.
        entered = barrier + (self.costs.barrier_s if self.talk and not delay else 0.0)
        idle = entered - arrival[who]
        rec.rows("wait", who[idle > 0], last, arrival[who][idle > 0], entered)
        if delay:
            yield from self._overlapped(who, last, float(started[who].max()), sync_cost)
        else:
            yield env.process(self.net.collective(sync_cost.comm_s if self.talk else 0.0))
            if self.talk:
                rec.rows("allreduce", who, last, entered, env.now, sync_cost.bytes)
        if sync_cost.outer_s > 0:
            rec.rows("outer_step", who, last, env.now, env.now + sync_cost.outer_s)
            yield env.timeout(sync_cost.outer_s)
        back = np.flatnonzero(~present & (self.back_at < env.now))  # rejoin from z after this sync
        rec.rows("wait", back, last, np.maximum(self.back_at[back], start_s), env.now)

    def _overlapped(self, who: np.ndarray, last: int, start_s: float, sync_cost):
        """SimPy process part: a Streaming DiLoCo all-reduce started at ``start_s`` (the last worker
        ends the step tau before the sync; with tau = H/P, the end of the last sync's outer step) and
        overlapped with the steps since; the workers, at the barrier now, wait for what those steps did
        not hide, and the delayed (or eager) outer step is applied after it. The link is free (one
        fragment in flight)."""
        env, rec = self.env, self.rec
        comm_s = sync_cost.comm_s if self.talk else 0.0
        end_s = start_s + comm_s
        hidden_s = min(end_s, env.now) - start_s
        if self.talk and comm_s > 0:
            hidden_share = hidden_s / comm_s
            rec.rows("allreduce_hidden", who, last, start_s, start_s + hidden_s, sync_cost.bytes * hidden_share)
            if end_s > env.now:
                rec.rows("allreduce", who, last, env.now, end_s, sync_cost.bytes * (1 - hidden_share))
        self.net.busy_s += comm_s
        yield env.timeout(max(0.0, end_s - env.now))

    def _local_steps(self, first: int, last: int, start_s: float, present: np.ndarray, delay: int = 0):
        """Each worker's local steps from ``start_s``; returns (arrival at the barrier, present, the end
        of the step ``delay`` steps before the last)."""
        c, k = self.costs, self.workers
        kinds = self.plan.kinds[:, first:last + 1]
        grad, idle = kinds == GRADIENT_STEP, kinds == IDLE_STEP
        m, pseudo_data = self.algo.pseudo_sync(c)
        # An idle slot (``sync_every = "balanced"``) takes no time: its worker is on to the barrier.
        m = np.where(idle, 0.0, m)
        comp = np.where(grad, k.compute(c.compute_s, grad.shape[1]), 0.0)
        data = np.where(grad, c.data_s, np.where(idle, 0.0, pseudo_data))
        main = np.where(grad, comp, m)
        opt = np.where(grad, c.optimizer_s, 0.0)
        fail = np.zeros_like(comp)
        cut = np.full(k.count, grad.shape[1])  # rejoin: steps from here on are lost to a failure
        started = present.copy()
        for _ in self._redos(last - first + 1):
            dur = data + (self.groups.main(grad, comp, fail, m) if self.groups else fail + main) + opt
            ends = start_s + np.cumsum(dur, axis=1)
            arrival = ends[:, -1]
            hit = k.failures_before(np.where(present, arrival, -np.inf))
            if len(hit) == 0:
                break
            for w in hit:
                t = min(int(np.searchsorted(ends[w], k.next_failure[w], "right")), grad.shape[1] - 1)
                begin = ends[w, t] - dur[w, t]
                if self.rejoin:
                    present[w], cut[w] = False, t
                    self.back_at[w] = begin + self.restart_s
                    self.rec.rows("failure", [w], first + t, begin, self.back_at[w])
                    k.restart(w, self.back_at[w])
                else:
                    fail[w, t] += self.restart_s
                    k.restart(w, begin + data[w, t] + fail[w, t])
        starts = ends - dur
        done = (np.arange(grad.shape[1])[None, :] < cut[:, None]) & started[:, None]
        if self.groups:
            self.groups.record(self.rec, first, starts, done, grad, data, fail, comp, m, opt)
        else:
            self._record_local(first, starts, done, grad, data, fail, comp, m, opt)
        # tau = H/P: the all-reduce started when the last sync's outer step ended, when these steps began.
        started_s = ends[:, -1 - delay] if delay < grad.shape[1] else np.full(k.count, start_s)
        return np.where(present, arrival, np.inf), present, started_s

    def _record_local(self, first, starts, done, grad, data, fail, comp, m, opt) -> None:
        rec = self.rec
        rec.grid("data", first, starts, data, done & (data > 0))
        rec.grid("failure", first, starts + data, fail, done & (fail > 0))
        rec.grid("compute", first, starts + data + fail, comp, done & grad)
        rec.grid("optimizer", first, starts + data + fail + comp, opt, done & grad & (opt > 0))
        rec.grid("pseudo_sync", first, starts + data + fail, m, done & ~grad & (m > 0))
