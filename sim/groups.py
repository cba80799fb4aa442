"""Local steps of replica groups (``core/groups.py``): each group trains as DDP, the groups apart.

Inside a group a gradient step is a DDP step over the group's tiers (``costs.GroupCosts``): bucket b's
all-reduce starts when every member has it ready and the buckets run in order, so the group's step ends
at max_b(max_k∈group(fail_k + ready_b·c_k) + Σ_{j>=b} T_j) from the start of its compute phase
(``costs.ddp_comm_end_one``, per group and step), then every member pays o. A pseudo-sync step (the
whole group takes it, ``core.algorithms.pseudo_sync_mask``) sends nothing; a failed member holds its
group up for that step. The groups do not wait for each other until the sync's barrier.
"""

from __future__ import annotations

import numpy as np

from .costs import GroupCosts
from .record import Recorder


def group_max(x: np.ndarray, size: int) -> np.ndarray:
    """[workers, steps] -> the same shape, each cell the max over its group's rows."""
    workers, steps = x.shape
    return np.repeat(x.reshape(workers // size, size, steps).max(axis=1), size, axis=0)


class GroupSteps:
    def __init__(self, costs: GroupCosts, ready: np.ndarray):
        self.c, self.ready = costs, ready
        self.tail = np.cumsum(costs.bucket_s[::-1])[::-1]  # Σ_{j>=b} T_j

    def comm_end(self, fail: np.ndarray, comp: np.ndarray) -> np.ndarray:
        """[workers, steps]: when the group's last bucket's all-reduce ends, from its compute phase's start."""
        end = group_max(fail + comp, self.c.size)
        for ready, tail in zip(self.ready, self.tail, strict=True):
            end = np.maximum(end, group_max(fail + ready * comp, self.c.size) + tail)
        return end

    def main(self, grad: np.ndarray, comp: np.ndarray, fail: np.ndarray, m: float) -> np.ndarray:
        """[workers, steps]: each step's time from after its data to before its optimizer step."""
        ddp = self.c.buffer_broadcast_s + self.comm_end(fail, comp)
        return np.where(grad, ddp, group_max(fail, self.c.size) + m)

    def record(self, rec: Recorder, first: int, starts, done, grad, data, fail, comp, m, opt) -> None:
        """The rows of a block of local steps, as ``Run._record_ddp`` writes a DDP step's, per group."""
        c, size = self.c, self.c.size
        on = done & grad
        origin = starts + data + c.buffer_broadcast_s  # compute phase origin of a gradient step
        offset_max = group_max(fail + comp, size)
        comm_end = self.comm_end(fail, comp)
        total = float(c.bucket_s.sum())
        exposed = comm_end - offset_max
        hidden = np.maximum(total - exposed, 0.0)
        share = exposed / total if total > 0 else np.ones_like(exposed)
        idle = offset_max - fail - comp
        rec.grid("data", first, starts, data, done & (data > 0))
        if c.buffer_broadcast_s > 0:
            rec.grid("allreduce", first, origin - c.buffer_broadcast_s, c.buffer_broadcast_s, on,
                     c.buffer_broadcast_bytes)
        rec.grid("failure", first, starts + data, fail, done & ~grad & (fail > 0))
        rec.grid("failure", first, origin, fail, on & (fail > 0))
        rec.grid("compute", first, origin + fail, comp, on)
        rec.grid("wait", first, origin + fail + comp, idle, on & (idle > 0))
        rec.grid("allreduce_hidden", first, origin + offset_max - hidden, hidden, on & (hidden > 0),
                 c.bucket_bytes_sent * (1 - share))
        rec.grid("allreduce", first, origin + offset_max, exposed, on, c.bucket_bytes_sent * share)
        rec.grid("optimizer", first, origin + comm_end, opt, on & (opt > 0))
        pseudo_end = group_max(fail, size)
        rec.grid("pseudo_sync", first, starts + data + fail, m, done & ~grad & (m > 0))
        lag = pseudo_end - fail  # a member waits for a failed member of its group
        rec.grid("wait", first, starts + data + fail + m, lag, done & ~grad & (lag > 0))
