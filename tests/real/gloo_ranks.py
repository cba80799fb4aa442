"""The entry point of the multi-rank test scripts beside this file: run ``main(rank, world, out)`` on
``world`` gloo ranks of this machine, one process each, one thread each."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def spawn(main, world: int, out: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_entry, args=(main, world, port, out), nprocs=world, join=True)


def _entry(rank: int, main, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    np.seterr(all="raise")  # a silent overflow in a reference computation would pass a comparison
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        main(rank, world, out)
    finally:
        dist.destroy_process_group()


def save_from_all_ranks(results, world: int, rank: int, out: str) -> None:
    """Every rank's ``results`` in one list, saved by rank 0 to ``out``."""
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        torch.save(gathered, out)
