"""Time DDP's bucketed all-reduces as they run beside the backward, on the process group the environment
describes: what ``harness/machinery/calibrate_ddp.py`` sets beside the flat all-reduce that ``bench_collectives`` times.

Run one process per rank with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set:

    python -m palsgd.real.bench_ddp_buckets --out ddp_buckets.json [--width 512 --layers 8 --bucket-mib 1]

A stack of ``--layers`` square Linear layers is wrapped in PyTorch's DDP with ``bucket_cap_mb`` (the first
bucket too), and a communication hook (``DistributedDataParallel.register_comm_hook``) does what DDP's
default hook does, an all-reduce of the bucket and a division by the world size, while recording when each
bucket's all-reduce was launched and when its future completed. Per step the communication time is the
union of those intervals (gloo runs two buckets at once, so their sum would count the overlap twice).
Rank 0 writes the bucket sizes and the median union over the timed steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..core import io
from . import dist


def timed_hook(records: list):
    """DDP's default all-reduce hook, recording (bucket index, bytes, launch, completion) per bucket."""
    def hook(_state, bucket):
        buf = bucket.buffer()
        start = time.perf_counter()
        fut = tdist.all_reduce(buf, async_op=True).get_future()

        def done(f):
            records.append((bucket.index(), buf.numel() * buf.element_size(), start, time.perf_counter()))
            return f.value()[0].div_(tdist.get_world_size())
        return fut.then(done)
    return hook


def union_s(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bucket-mib", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    dist.init(threads=1)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(args.width, args.width) for _ in range(args.layers)])
    ddp = DistributedDataParallel(model, bucket_cap_mb=args.bucket_mib)
    records: list = []
    ddp.register_comm_hook(None, timed_hook(records))
    x = torch.randn(args.batch, args.width)
    unions, sizes = [], {}
    for step in range(args.warmup + args.steps):
        records.clear()
        tdist.barrier()
        ddp(x).square().mean().backward()
        if step >= args.warmup:
            unions.append(union_s([(a, b) for _, _, a, b in records]))
            sizes = {index: nbytes for index, nbytes, _, _ in records}
    if tdist.get_rank() == 0:
        io.write_json(args.out, {
            "ranks": tdist.get_world_size(), "bucket_mib": args.bucket_mib,
            "param_numels": [p.numel() for p in model.parameters()],
            "bucket_bytes": [sizes[i] for i in sorted(sizes)], "comm_s": statistics.median(unions),
            "comm_s_per_step": unions,
        })
    dist.teardown()


if __name__ == "__main__":
    main()
