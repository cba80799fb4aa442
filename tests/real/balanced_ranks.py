"""``sync_every = "balanced"`` on 2 gloo ranks, rank 1 1.5x slower, against a reference written from the
rule: ``python balanced_ranks.py OUT.pt``; the tests read OUT.pt.

The reference does not read the plan: each rank takes H_k = floor(H · slow_min / slow_k) local steps
(at least one) after each sync, leaves the other steps of the interval, and averages with PyTorch's
``average_parameters`` after every H plan steps (torchft's LocalSGD schedule: H steps before each
average). It shares with the harness only the model, the data and the inner optimizer (``scenarios.py``).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.distributed as dist
from gloo_ranks import save_from_all_ranks, spawn
from scenarios import TRAINS, batch, gathered, loss_fn, model_fn, trajectory
from torch import nn
from torch.distributed.algorithms.model_averaging.utils import average_parameters

from palsgd.core.algorithms import plan
from palsgd.core.config import AlgorithmSpec
from palsgd.real.algorithms import ALGORITHM_CLASSES, Setup
from palsgd.real.dist import DistContext, TorchComm, flatten_
from palsgd.real.optim import build_optimizer
from palsgd.real.timing import DDPCommTimer, StepTimer, ddp_timed_hook

H, W = 4, 2
STEPS = W + 3 * H  # three whole intervals: no tail after the last sync
SLOW = (1.0, 1.5)  # slow_k of rank 0 and rank 1


def ours(rank, world, name, train, **algo):
    spec = AlgorithmSpec(name=name, sync_every=H, warmup_steps=W, averager="torchft", sync_balanced=True, **algo)
    model = model_fn()
    flatten_(model)
    opt = build_optimizer(model.parameters(), train)
    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    comm = TorchComm(ctx, payload=spec.dense_payload_dtype)
    timer = StepTimer(algorithm=name, worker=rank, zero=comm.common_clock(), device=ctx.device)
    ddp = nn.parallel.DistributedDataParallel(model)
    hook = DDPCommTimer(timer, torch.float32)
    ddp.register_comm_hook(hook, ddp_timed_hook)
    p = plan(name, workers=world, steps=STEPS, seed=0, warmup_steps=W, sync_every=H, averager="torchft",
             slow=np.array(SLOW))
    algorithm = ALGORITHM_CLASSES[name](Setup(
        model=model, optimizer=opt, spec=spec, train=train, kinds=p.worker_kinds(rank), sync_after=p.sync_after,
        comm=comm, timer=timer, loss_fn=loss_fn, ddp=ddp, ddp_timer=hook))
    return trajectory(algorithm, model, rank, STEPS), p.kinds, timer.rows


def reference(rank, train):
    model = model_fn()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = build_optimizer(model.parameters(), train)
    own_h = max(1, math.floor(H * min(SLOW) / SLOW[rank]))
    out, position, taken = [], 0, 0
    for step in range(STEPS):
        if step < W or taken < own_h:
            loss_fn(ddp if step < W else model, batch(rank, position)).backward()
            opt.step()
            opt.zero_grad()
            position += 1
            taken += step >= W
        if step >= W and (step - W + 1) % H == 0:
            average_parameters(model.parameters(), dist.group.WORLD)
            taken = 0
        out.append(gathered(model))
    return out


def main(rank, world, out):
    results = {}
    for opt_name, train in TRAINS.items():
        results[f"ours/{opt_name}"], results["kinds"], results[f"rows/{opt_name}"] = ours(
            rank, world, "local_sgd", train)
        results[f"reference/{opt_name}"] = reference(rank, train)
    train = TRAINS["adamw"]
    results["diloco_1_0"] = ours(rank, world, "diloco", train, outer_lr=1.0, outer_momentum=0.0)[0]
    save_from_all_ranks(results, world, rank, out)


if __name__ == "__main__":
    spawn(main, 2, sys.argv[1])
