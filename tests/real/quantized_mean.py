"""The quantized mean of ``TorchComm`` on gloo ranks: ``python quantized_mean.py WORLD OUT.pt``; rank 0
saves every rank's inputs and results per payload dtype, blocking and started asynchronously."""

from __future__ import annotations

import sys
import time

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
        comm = TorchComm(ctx, payload=dtype)
        sent = comm.allreduce_mean_([tensors])
        results[dtype] = (inputs, tensors, sent)
        # Asynchronous, twice in flight: the tensors change after the start (training goes on), and the
        # exchange finishes in the background, before anyone waits.
        first, second = [t.clone() for t in inputs], [t.clone() for t in inputs]
        waits = [comm.start_allreduce_mean_([first]), comm.start_allreduce_mean_([second])]
        for t in (*first, *second):
            t.mul_(-7.0)
        time.sleep(1.0)
        finished = not comm._last.thread.is_alive()
        results[f"{dtype} async"] = (finished, [w() for w in waits], first, second)
    save_from_all_ranks(results, world, rank, out)


if __name__ == "__main__":
    spawn(run, int(sys.argv[1]), sys.argv[2])
