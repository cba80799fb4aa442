"""Streaming DiLoCo with a whole round of delay (tau = H/P), plain and eager, next to a reference written
from the papers' update rules: ``python delayed_outer.py OUT.pt`` runs ours on 2 gloo ranks, and rank 0
runs ``reference`` alone, one process for both workers, over the same seeded batches.

The reference holds the K workers' models side by side and follows the rule of ``docs/algorithms.md``
(DiLoCoX, arXiv 2506.21263, one-step delay; Kale et al., arXiv 2502.12996, eager updates), generalized
to P fragments synced in turn: at the sync of fragment f (every H/P steps), each worker m

    takes Δ_m of the next fragment g = z_m,g - x_m,g and sends it (its average lands at g's sync);
    takes the average Δ̄ of f sent at the last sync (zero at the first), and its own share D_m in it;
    plain: g_m = Δ̄;  eager: g_m = Δ̄ + (z_m,f - x_m,f - D_m) / K
    outer Nesterov step on z_m,f with g_m (torch.optim.SGD, nesterov=True);  x_m,f ← z_m,f
"""

from __future__ import annotations

import sys

import torch
from gloo_ranks import save_from_all_ranks, spawn
from torchft_diff import OUTER_LR, OUTER_MOMENTUM, STEPS, TRAIN, H, batch, loss_fn, model_fn, our_run

from palsgd.core.buckets import fragment_bounds
from palsgd.real.optim import build_optimizer, set_lr

CASES = {  # name: (P, tau, eager)
    "p1_delayed": (1, H, False),
    "p1_eager": (1, H, True),
    "p2_delayed": (2, H // 2, False),
    "p2_eager": (2, H // 2, True),
}


def reference(world: int, fragments: int, eager: bool) -> list[list[torch.Tensor]]:
    """Every worker's flat parameters after each step: [step][worker]."""
    models = [model_fn() for _ in range(world)]
    inner = [build_optimizer(m.parameters(), TRAIN) for m in models]
    numels = [p.numel() for p in models[0].parameters()]
    offsets = [sum(numels[:i]) for i in range(len(numels) + 1)]
    parts = [slice(offsets[a], offsets[b]) for a, b in fragment_bounds(numels, fragments)]
    z = [flat(m) for m in models]
    outer_params = [[torch.nn.Parameter(zm[part].clone()) for part in parts] for zm in z]
    outer = [[torch.optim.SGD([p], lr=OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True) for p in ps]
             for ps in outer_params]
    period, syncs, in_flight, out = H // fragments, 0, None, []
    for step in range(STEPS):
        for m, model in enumerate(models):
            loss_fn(model, batch(m, step)).backward()
            set_lr(inner[m], TRAIN.lr)
            inner[m].step()
            inner[m].zero_grad(set_to_none=True)
        if (step + 1) % period == 0:
            f, g = syncs % fragments, (syncs + 1) % fragments
            x = [flat(model) for model in models]
            sent = [outer_params[m][g].detach() - x[m][parts[g]] for m in range(world)]
            if in_flight is None:
                mean, own = torch.zeros_like(x[0][parts[f]]), [torch.zeros_like(x[0][parts[f]])] * world
            else:
                mean, own = sum(in_flight) / world, in_flight
            for m in range(world):
                step_m = mean.clone()
                if eager:
                    step_m = step_m + (outer_params[m][f].detach() - x[m][parts[f]] - own[m]) / world
                outer_params[m][f].grad = step_m
                outer[m][f].step()
                x[m][parts[f]] = outer_params[m][f].detach()
                load(models[m], x[m])
            in_flight = sent if step + period < STEPS else None
            syncs += 1
        out.append([flat(model) for model in models])
    return out


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def load(model, values: torch.Tensor) -> None:
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(values, model.parameters())


def run(rank, world, out):
    results = {case: our_run(rank, world, "streaming_diloco", p, tau, 0.0, "fp32", eager)
               for case, (p, tau, eager) in CASES.items()}
    if rank == 0:  # one process, one thread, as the ranks run
        results["reference"] = {case: reference(world, p, eager) for case, (p, _, eager) in CASES.items()}
    results["p2_tau0_eager"] = our_run(rank, world, "streaming_diloco", 2, 0, 0.0, "fp32", True)
    results["p2_tau0"] = our_run(rank, world, "streaming_diloco", 2, 0, 0.0, "fp32")
    # The quantized mean runs on a background thread: with tau = H/P it too has one fragment in flight.
    results["p1_eager_int8"] = our_run(rank, world, "streaming_diloco", 1, H, 0.0, "int8", True)
    save_from_all_ranks(results, world, rank, out)


if __name__ == "__main__":
    spawn(run, 2, sys.argv[1])
