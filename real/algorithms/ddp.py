"""DDP: the baseline every speedup is measured against."""

from __future__ import annotations

from .base import Algorithm


class DDP(Algorithm):
    """Data-parallel SGD (PyTorch ``DistributedDataParallel``; Li et al., VLDB 2020, arXiv 2006.15704).

    Every step: forward and backward on the local micro-batches while gradient buckets of
    ``bucket_mib`` are all-reduced as soon as they are ready (overlapped with backward), then the same
    inner optimizer step on every worker. Payload per step: S = 4N bytes of gradients (fp32).
    """

    name = "ddp"

    def sync(self, step: int) -> None:  # the plan never asks DDP for one: every step already syncs
        raise AssertionError("ddp has no periodic sync")
