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
import torch.distributed as dist
from gloo_ranks import save_from_all_ranks, spawn
from scenarios import TRAINS, batch, gathered, harness_run, loss_fn, model_fn
from torch import nn
from torch.distributed.algorithms.model_averaging.utils import average_parameters

from palsgd.core.algorithms import plan
from palsgd.core.config import AlgorithmSpec
from palsgd.real.optim import build_optimizer

H, W = 4, 2
STEPS = W + 3 * H  # three whole intervals: no tail after the last sync
SLOW = (1.0, 1.5)  # slow_k of rank 0 and rank 1


def ours(rank, world, name, train, **algo):
    spec = AlgorithmSpec(name=name, sync_every=H, warmup_steps=W, averager="torchft", sync_balanced=True, **algo)
    p = plan(name, workers=world, steps=STEPS, seed=0, warmup_steps=W, sync_every=H, averager="torchft",
             slow=np.array(SLOW))
    return harness_run(rank, world, spec, p, train, STEPS)


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
