"""Real-harness overheads on 2 gloo ranks (CPU): ``python benchmarks/bench_real.py``.

(a) a sync (``TorchComm.allreduce_mean_`` of a model's parameters, laid out flat as the worker does) against one raw
    ``dist.all_reduce`` of a tensor of the same total size: target >= 90% of its bandwidth;
(b) a local step (LocalSGD, no sync) against the same forward/backward/optimizer step in a plain loop:
    target <= 3% more time.
"""

from __future__ import annotations

import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

REPEATS = 15


def model_fn():
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(512, 512) for _ in range(16)])  # 4.2 M params, 32 tensors, 16.8 MB


def timed(fn, repeats=REPEATS):
    fn()
    out = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def bench(rank, world, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from palsgd.core.algorithms import plan
    from palsgd.core.config import AlgorithmSpec
    from palsgd.core.workload import TrainSpec
    from palsgd.real.algorithms import LocalSGD, Setup
    from palsgd.real.dist import DistContext, TorchComm, flat_view, flatten_
    from palsgd.real.optim import build_optimizer, flat_order
    from palsgd.real.timing import StepTimer

    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    comm = TorchComm(ctx)
    model = model_fn()
    scattered = [p.data.clone() for p in model.parameters()]  # one allocation per tensor
    flatten_(model)  # the layout real/worker.py gives every model
    params = [p.data for p in flat_order(model)]  # in that layout's order, as the algorithms hold them
    assert flat_view(params) is not None, "the parameters no longer tile one buffer: (a) would time a copy"
    flat = torch.zeros(sum(p.numel() for p in params))
    raw = timed(lambda: dist.all_reduce(flat))
    sync = timed(lambda: comm.allreduce_mean_([params]))
    copied = timed(lambda: comm.allreduce_mean_([scattered]))
    # (b) local step vs a plain loop, same model, optimizer and batch.
    train = TrainSpec(optimizer="adamw", lr=1e-4)
    x, y = torch.randn(64, 512), torch.randn(64, 512)
    loss_fn = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])  # noqa: E731
    plain_model = model_fn()
    plain_opt = build_optimizer(plain_model.parameters(), train)

    def plain():
        loss_fn(plain_model, (x, y)).backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    steps = 10_000
    spec = AlgorithmSpec(name="local_sgd", sync_every=steps, warmup_steps=0)
    p = plan("local_sgd", workers=world, steps=steps, seed=0, sync_every=steps)
    timer = StepTimer(algorithm="local_sgd", worker=rank, zero=time.perf_counter(), device=ctx.device)
    algo = LocalSGD(Setup(model=model, optimizer=build_optimizer(model.parameters(), train), spec=spec,
                          train=train, kinds=p.worker_kinds(rank), sync_after=p.sync_after, comm=comm,
                          timer=timer, loss_fn=loss_fn))
    counter = iter(range(1, steps))
    ours, base = [], []
    for _ in range(15):  # interleave to share the machine's noise
        base.append(timed(plain, 10))
        ours.append(timed(lambda: algo.step(next(counter), lambda: (x, y)), 10))
    if rank == 0:
        size = flat.numel() * 4
        print(f"(a) payload {size / 1e6:.1f} MB: raw all_reduce {raw * 1e3:.1f} ms, sync {sync * 1e3:.1f} ms "
              f"-> {raw / sync:.1%} of raw bandwidth (target >= 90%); the same tensors scattered in memory "
              f"(copied into buckets): {copied * 1e3:.1f} ms, {raw / copied:.1%}")
        b, o = statistics.median(base), statistics.median(ours)
        print(f"(b) local step {o * 1e3:.2f} ms vs plain loop {b * 1e3:.2f} ms -> {o / b - 1:+.1%} (target <= +3%)")
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    mp.spawn(bench, args=(2, free), nprocs=2, join=True)
