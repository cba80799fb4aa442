"""SparseLoCo on 2 gloo ranks against a reference written from the paper's algorithm box (Sarfi et al.,
arXiv 2508.15706, Algorithm 1): ``python sparseloco_ranks.py OUT.pt``; the tests read OUT.pt.

The reference works on dense tensors, parameter by parameter, and picks the top-k by sorting: it shares
with the harness only the model, the data and the inner optimizer (the scenarios of ``scenarios.py``).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.distributed as dist
from gloo_ranks import save_from_all_ranks, spawn
from scenarios import STEPS, TRAINS, H, W, batch, gathered, loss_fn, model_fn, ours
from torch import nn

from palsgd.real.optim import build_optimizer

SETTINGS = {"int2": dict(topk_density=0.2, error_decay=0.9, payload_dtype="int2", outer_lr=0.8),
            "fp32": dict(topk_density=0.3, error_decay=0.5, payload_dtype="fp32", outer_lr=0.8)}


def quantize_int2(v: torch.Tensor) -> torch.Tensor:
    """Q of docs/algorithms.md: four levels (c - 1.5)·s, s = max|v| / 1.5, c the nearest level."""
    s = v.abs().max() / 1.5
    if s == 0:
        return torch.zeros_like(v)
    return ((v / s + 1.5).round().clamp(0, 3) - 1.5) * s


def outer_step(theta, x, e, density, beta, dtype, lr):
    """One sync of the box, on every parameter tensor: e <- beta·e + Δ, send Q(top-k(e)), e <- e - sent,
    θ <- θ - lr·mean(sent); every rank then starts from θ."""
    world = dist.get_world_size()
    for t, p, err in zip(theta, x, e, strict=True):
        err.mul_(beta).add_(t - p.detach())
        k = max(1, math.ceil(density * err.numel()))
        flat = err.reshape(-1)
        idx = flat.abs().argsort(descending=True)[:k]
        values = quantize_int2(flat[idx]) if dtype == "int2" else flat[idx]
        sent = torch.zeros_like(flat)
        sent[idx] = values
        flat.sub_(sent)
        everyone = [torch.empty_like(sent) for _ in range(world)]
        dist.all_gather(everyone, sent)
        mean = sum(everyone[1:], everyone[0]) / world
        t.sub_(lr * mean.view_as(t))
        with torch.no_grad():
            p.copy_(t)


def reference(rank, train, topk_density, error_decay, payload_dtype, outer_lr):
    model = model_fn()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = build_optimizer(model.parameters(), train)
    trajectory, theta, e = [], None, None
    for step in range(STEPS):
        loss_fn(ddp if step < W else model, batch(rank, step)).backward()
        opt.step()
        opt.zero_grad()
        if step == W - 1:  # local training starts from the warmed-up model
            theta = [p.detach().clone() for p in model.parameters()]
            e = [torch.zeros_like(t) for t in theta]
        if step >= W and (step - W + 1) % H == 0:
            outer_step(theta, list(model.parameters()), e, topk_density, error_decay, payload_dtype, outer_lr)
        trajectory.append(gathered(model))
    return trajectory


def main(rank, world, out):
    train = TRAINS["adamw"]
    results = {}
    for name, setting in SETTINGS.items():
        results[f"ours/{name}"], _, results[f"rows/{name}"] = ours(rank, world, "sparseloco", train, **setting)
        results[f"reference/{name}"] = reference(rank, train, **setting)
    dense = dict(topk_density=1.0, error_decay=0.0, payload_dtype="fp32", outer_lr=0.8)
    results["dense"] = ours(rank, world, "sparseloco", train, **dense)[0]
    results["diloco_sgd"] = ours(rank, world, "diloco", train, outer_lr=0.8, outer_momentum=0.0)[0]
    save_from_all_ranks(results, world, rank, out)


if __name__ == "__main__":
    spawn(main, 2, sys.argv[1])
