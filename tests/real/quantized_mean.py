"""The quantized mean of ``TorchComm`` on gloo ranks: ``python quantized_mean.py WORLD OUT.pt``; rank 0
saves every rank's inputs and results per payload dtype."""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        torch.save(gathered, out)


def _entry(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run(rank, world, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = int(sys.argv[1])
    mp.spawn(_entry, args=(world, port, sys.argv[2]), nprocs=world, join=True)
