"""The quantized mean of ``TorchComm`` on gloo ranks: ``python quantized_mean.py WORLD OUT.pt``; rank 0
saves every rank's inputs and results per payload dtype."""

from __future__ import annotations

import sys

import torch
from gloo_ranks import save_from_all_ranks, spawn

from palsgd.real.dist import DistContext, TorchComm

NUMELS = (1000, 37)  # two tensors of one call, neither a whole number of blocks


def run(rank, world, out):
    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    results = {}
    for dtype in ("int8", "fp4"):
        g = torch.Generator().manual_seed(rank)
        tensors = [torch.randn(n, generator=g) * (rank + 1) for n in NUMELS]
        inputs = [t.clone() for t in tensors]
        sent = TorchComm(ctx, payload=dtype).allreduce_mean_([tensors])
        results[dtype] = (inputs, tensors, sent)
    save_from_all_ranks(results, world, rank, out)


if __name__ == "__main__":
    spawn(run, int(sys.argv[1]), sys.argv[2])
