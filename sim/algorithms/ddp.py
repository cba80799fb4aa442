"""DDP, the baseline: every step is a forward, a backward overlapped with bucketed all-reduces, an
optimizer step."""

from __future__ import annotations

from .base import SimAlgorithm


class DDP(SimAlgorithm):
    """PyTorch ``DistributedDataParallel`` (Li et al., "PyTorch Distributed", VLDB 2020).

    Every step: c (forward + backward) with the all-reduce of S bytes of gradients in buckets that
    overlap the backward, then the exposed part of T_AR(S), then o. The plan has only DDP steps and
    no syncs, so ``sync`` is never called; the engine times the buckets (``costs.ddp_comm_end``).
    """

    name = "ddp"
