"""Replica groups on 4 gloo ranks as 2 groups of 2: ``python group_scenarios.py OUT.pt``; tests read OUT.pt.

Rank 0 saves, per scenario, every rank's parameters after every step from our algorithms (DDP inside a
group over its process group, syncs over the peers at each group position: ``real/dist.py``), and a
hand-written reference computed in one process with no torch.distributed at all: per group one model
and one optimizer, the gradient the mean of its two members' gradients, and at a sync the mean over
the two groups. Every sum is of two terms, so gloo's ring order cannot change a bit.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from gloo_ranks import spawn
from scenarios import batch, loss_fn, model_fn, trajectory
from torch import nn

from palsgd.core.algorithms import GRADIENT_STEP, PSEUDO_SYNC_STEP, plan
from palsgd.core.config import AlgorithmSpec
from palsgd.core.groups import ReplicaGroups
from palsgd.core.workload import TrainSpec
from palsgd.real.algorithms import ALGORITHM_CLASSES, Setup
from palsgd.real.dist import DistContext, TorchComm, flatten_, replica_process_groups
from palsgd.real.optim import build_optimizer, flat_order, lr_at
from palsgd.real.timing import DDPCommTimer, StepTimer, ddp_timed_hook

STEPS, H, SIZE = 8, 3, 2
TRAIN = TrainSpec(optimizer="sgd_momentum", lr=0.05, momentum=0.9, weight_decay=0.0)
SPECS = {
    "local_sgd": dict(),
    "diloco": dict(outer_lr=0.7, outer_momentum=0.9),
    "palsgd": dict(outer_lr=0.7, outer_momentum=0.9, p=0.4, eta=0.5, skip_draws="independent"),
}

def make_plan(name, spec, world):
    return plan(name, workers=world, steps=STEPS, seed=0, sync_every=H, p=spec.effective_p,
                skip_draws=spec.skip_draws, group_size=SIZE)


def ours(rank, world, name):
    spec = AlgorithmSpec(name=name, sync_every=H, warmup_steps=0, replica_group=SIZE, **SPECS[name])
    model = model_fn()
    flatten_(model)
    opt = build_optimizer(model.parameters(), TRAIN)
    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    comm = TorchComm(ctx)
    pgs = replica_process_groups(ReplicaGroups(world, SIZE), rank, quantized=False)
    sync_comm = TorchComm(ctx, groups=pgs, parent=comm)
    timer = StepTimer(algorithm=name, worker=rank, zero=comm.common_clock(), device=ctx.device)
    group_ddp = nn.parallel.DistributedDataParallel(model, process_group=pgs.members)
    hook = DDPCommTimer(timer, torch.float32, group=pgs.members)
    group_ddp.register_comm_hook(hook, ddp_timed_hook)
    p = make_plan(name, spec, world)
    algorithm = ALGORITHM_CLASSES[name](Setup(
        model=model, optimizer=opt, spec=spec, train=TRAIN, kinds=p.worker_kinds(rank), sync_after=p.sync_after,
        comm=comm, timer=timer, loss_fn=loss_fn, group_ddp=group_ddp, group_ddp_timer=hook, sync_comm=sync_comm))
    return trajectory(algorithm, model, rank, STEPS), timer.rows


def reference(world, name):
    """Flat parameters of every rank after every step, by hand: group j is one model trained on the
    mean gradient of ranks 2j and 2j+1; a sync means over the groups (each term divided first, as the
    real all-reduce does)."""
    spec = AlgorithmSpec(name=name, sync_every=H, warmup_steps=0, replica_group=SIZE, **SPECS[name])
    p = make_plan(name, spec, world)
    groups = world // SIZE
    models = [model_fn() for _ in range(groups)]
    opts = [build_optimizer(m.parameters(), TRAIN) for m in models]
    flat = lambda m: torch.cat([t.detach().reshape(-1) for t in flat_order(m)])  # noqa: E731
    z = [flat(m) for m in models]
    buf = [torch.zeros_like(z[0]) for _ in range(groups)]
    used = [0] * world  # batches each rank has drawn
    out = []
    for step in range(STEPS):
        lr = lr_at(TRAIN, step, STEPS)
        for j, (m, opt) in enumerate(zip(models, opts, strict=True)):
            ranks = range(j * SIZE, (j + 1) * SIZE)
            kind = p.kinds[j * SIZE, step]
            if kind == GRADIENT_STEP:
                grads = []
                for r in ranks:
                    m.zero_grad()
                    loss_fn(m, batch(r, used[r])).backward()
                    used[r] += 1
                    grads.append([t.grad.clone() for t in m.parameters()])
                for t, *gs in zip(m.parameters(), *grads, strict=True):
                    t.grad = gs[0] / SIZE + gs[1] / SIZE
                scale = 1 / (1 - spec.p) if name == "palsgd" else 1.0
                for group in opt.param_groups:
                    group["lr"] = lr * scale
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                assert kind == PSEUDO_SYNC_STEP
                for r in ranks:
                    used[r] += 1  # consumed: the batch is drawn and thrown away
                alpha = min(1.0, lr * spec.eta / spec.p)
                with torch.no_grad():
                    x = flat(m).lerp_(z[j], alpha)
                    _write(m, x)
        if p.sync_after[step]:
            _sync(name, spec, models, z, buf, flat)
        # ``gathered`` lists the parameters in registration order
        out.append([torch.cat([t.detach().reshape(-1) for t in models[r // SIZE].parameters()]) for r in range(world)])
    return out


def _sync(name, spec, models, z, buf, flat):
    groups = len(models)
    if name == "local_sgd":
        xs = [flat(m) for m in models]
        mean = xs[0] / groups + xs[1] / groups
        for m in models:
            _write(m, mean)
        return
    deltas = [z[j] - flat(models[j]) for j in range(groups)]
    delta = deltas[0] / groups + deltas[1] / groups
    mu = spec.outer_momentum
    for j in range(groups):  # every group takes the same outer step on the same z
        buf[j].mul_(mu).add_(delta)
        step = torch.add(delta, buf[j], alpha=mu)  # Δ + μ·buf, z - γ·(...), as torch's SGD computes them
        z[j] = torch.add(z[j], step, alpha=-spec.outer_lr)
        _write(models[j], z[j])


def _write(model, flat):
    offset = 0
    with torch.no_grad():
        for t in flat_order(model):
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def scenarios(rank, world, out):
    results = {}
    pgs = replica_process_groups(ReplicaGroups(world, SIZE), rank, quantized=False)
    mine = (tuple(dist.get_process_group_ranks(pgs.members)), tuple(dist.get_process_group_ranks(pgs.peers)))
    results["layout"] = [None] * world
    dist.all_gather_object(results["layout"], mine)
    for name in SPECS:
        results[name], rows = ours(rank, world, name)
        results[f"{name}/rows"] = [None] * world
        dist.all_gather_object(results[f"{name}/rows"], rows)
        if rank == 0:
            results[f"reference/{name}"] = reference(world, name)
    dist.barrier()
    if rank == 0:
        torch.save(results, out)


if __name__ == "__main__":
    spawn(scenarios, 4, sys.argv[1])
