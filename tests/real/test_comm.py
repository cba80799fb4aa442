"""TorchComm's averaging: bit for bit PyTorch's ``average_parameters`` with 3 ranks, where dividing by 3
and multiplying by 1/3 differ, and where gloo's ring sums each chunk of the flat buffer in its own rank
order, so the bits match only if every element lies at the same offset as in PyTorch's buffer (the
optimizer's group order, ``core.buckets.flat_order``; with 2 ranks a + b = b + a would hide a different
layout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = """
import os, socket, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp
sys.path.insert(0, {here!r})
import scenarios

def entry(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train = scenarios.TRAINS["sgd_momentum"]
        ours = scenarios.ours(rank, world, "local_sgd", train)[0]
        reference = scenarios.reference_local_sgd(rank, world, train)
        if rank == 0:
            torch.save((ours, reference), out)
    finally:
        dist.destroy_process_group()

if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(entry, args=(3, port, sys.argv[1]), nprocs=3, join=True)
"""


@pytest.mark.slow
def test_local_sgd_on_3_ranks_equals_pytorch_post_local_sgd_bitwise(tmp_path):
    script = tmp_path / "three_ranks.py"
    script.write_text(SCRIPT.format(here=str(Path(__file__).parent)))
    out = tmp_path / "out.pt"
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=600)
    ours, reference = torch.load(out)
    for step, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        for rank in range(3):
            assert torch.equal(mine[rank], theirs[rank]), f"step {step}, rank {rank}"
