"""Differential scenarios run on 2 gloo ranks: ``python scenarios.py OUT.pt``; tests read OUT.pt.

A script (not a test module) so that torch.multiprocessing can spawn its functions by path. Rank 0
saves, per scenario, the parameters of every rank after every step.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from gloo_ranks import spawn
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import (
    PostLocalSGDState,
    post_localSGD_hook,
)
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.distributed.optim import PostLocalSGDOptimizer

from palsgd.core.algorithms import plan
from palsgd.core.config import AlgorithmSpec
from palsgd.core.workload import TrainSpec
from palsgd.real.algorithms import ALGORITHM_CLASSES, Setup
from palsgd.real.dist import DistContext, TorchComm, flatten_
from palsgd.real.optim import build_optimizer
from palsgd.real.timing import DDPCommTimer, StepTimer, ddp_timed_hook

STEPS, H, W, BATCH = 9, 3, 2, 8


def model_fn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))


def batch(rank: int, index: int):
    g = torch.Generator().manual_seed(1000 * rank + index)
    return torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 2, generator=g)


def loss_fn(model, b):
    return nn.functional.mse_loss(model(b[0]), b[1])


def trajectory(algorithm, model, rank: int, steps: int) -> list[list[torch.Tensor]]:
    """The model's tensors after each of ``steps`` steps, every batch drawn once, in order."""
    position = [0]

    def next_batch():
        position[0] += 1
        return batch(rank, position[0] - 1)

    out = []
    for step in range(steps):
        algorithm.step(step, next_batch)
        out.append(gathered(model))
    return out


def gathered(model) -> list[torch.Tensor]:
    """Flat parameters of every rank (rank order)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    out = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(out, flat)
    return out


def ours(rank, world, name, train, **algo):
    spec = AlgorithmSpec(name=name, sync_every=H, warmup_steps=W, **algo)
    p = plan(name, workers=world, steps=STEPS, seed=0, warmup_steps=W, sync_every=H, p=spec.effective_p,
             skip_draws=spec.skip_draws)
    return harness_run(rank, world, spec, p, train, STEPS)


def harness_run(rank, world, spec, p, train, steps):
    """The harness's algorithm ``spec`` on this rank, taking the plan ``p``: (its trajectory over ``steps``,
    the plan's step kinds, the step timer's rows)."""
    model = model_fn()
    flatten_(model)  # the worker's layout: syncs all-reduce the parameters in place
    opt = build_optimizer(model.parameters(), train)
    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    comm = TorchComm(ctx, payload=spec.dense_payload_dtype)
    timer = StepTimer(algorithm=spec.name, worker=rank, zero=comm.common_clock(), device=ctx.device)
    ddp = nn.parallel.DistributedDataParallel(model)
    hook = DDPCommTimer(timer, torch.float32)
    ddp.register_comm_hook(hook, ddp_timed_hook)
    algorithm = ALGORITHM_CLASSES[spec.name](Setup(
        model=model, optimizer=opt, spec=spec, train=train, kinds=p.worker_kinds(rank), sync_after=p.sync_after,
        comm=comm, timer=timer, loss_fn=loss_fn, ddp=ddp, ddp_timer=hook))
    return trajectory(algorithm, model, rank, steps), p.kinds, timer.rows


def reference_local_sgd(rank, world, train, first_average=W):
    """PyTorch's Post-local SGD: the post_localSGD_hook for the W warm-up steps, then
    PeriodicModelAverager, which averages after ``first_average`` and every H steps from there."""
    model = model_fn()
    ddp = nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(PostLocalSGDState(process_group=None, subgroup=None, start_localSGD_iter=W,
                                             post_local_gradient_allreduce=False), post_localSGD_hook)
    opt = PostLocalSGDOptimizer(build_optimizer(model.parameters(), train),
                                PeriodicModelAverager(period=H, warmup_steps=first_average))
    trajectory = []
    for step in range(STEPS):
        loss_fn(ddp, batch(rank, step)).backward()
        opt.step()
        opt.zero_grad()
        trajectory.append(gathered(model))
    return trajectory


def single_process(world, train):
    """DDP's reference: one process, the ranks' batches concatenated."""
    model = model_fn()
    opt = build_optimizer(model.parameters(), train)
    trajectory = []
    for step in range(STEPS):
        parts = [batch(r, step) for r in range(world)]
        loss_fn(model, (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))).backward()
        opt.step()
        opt.zero_grad()
        trajectory.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return trajectory


TRAINS = {
    "sgd_momentum": TrainSpec(optimizer="sgd_momentum", lr=0.05, momentum=0.9, weight_decay=0.0),
    "adamw": TrainSpec(optimizer="adamw", lr=0.01, weight_decay=0.1),
}


def scenarios(rank, world, out):
    results = {}
    for opt_name, train in TRAINS.items():
        results[f"local_sgd/{opt_name}"] = ours(rank, world, "local_sgd", train)[0]
        results[f"reference/{opt_name}"] = reference_local_sgd(rank, world, train)
    train = TRAINS["adamw"]
    results["ddp"], _, results["ddp_rows"] = ours(rank, world, "ddp", train)
    results["single"] = single_process(world, train)
    results["diloco_1_0"] = ours(rank, world, "diloco", train, outer_lr=1.0, outer_momentum=0.0)[0]
    # DiLoCo's outer steps follow H local steps: after steps W + H - 1, W + 2H - 1, ...
    results["reference/outer_schedule"] = reference_local_sgd(rank, world, train, first_average=W + H - 1)
    results["diloco"] = ours(rank, world, "diloco", train, outer_lr=0.7, outer_momentum=0.9)[0]
    results["palsgd_p0"] = ours(rank, world, "palsgd", train, outer_lr=0.7, outer_momentum=0.9, p=0.0)[0]
    for draws in ("shared", "independent"):
        traj, kinds, _rows = ours(rank, world, "palsgd", train, p=0.4, eta=0.5, skip_draws=draws)
        results[f"palsgd/{draws}"] = (traj, kinds)
    results["bf16_payload"] = ours(rank, world, "local_sgd", train, payload_dtype="bf16")[0]
    results["per_tensor"] = ours(rank, world, "local_sgd", train, per_tensor_allreduce=True)[0]
    if rank == 0:
        torch.save(results, out)


if __name__ == "__main__":
    spawn(scenarios, 2, sys.argv[1])
