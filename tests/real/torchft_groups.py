"""Our DiLoCo and Streaming DiLoCo with replica groups next to torchft's replica groups, on 4 gloo ranks as
2 groups of 2: ``python torchft_groups.py OUT.pt``; rank 0 saves, per case, both parameter trajectories
of every rank.

torchft's replica-group setting (its ``train_diloco.py`` example): inside a replica group the model trains
with PyTorch's DDP over the group's ranks, and ``local_sgd.DiLoCo`` syncs through the ``Manager``, whose
all-reduce spans the same rank of every replica group. The stand-in ``Manager`` of ``torchft_diff.py``
does that here over the peers' process group (sum, then divide by the replica groups)."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from gloo_ranks import save_from_all_ranks, spawn
from torch import nn
from torchft.local_sgd import DiLoCo as TorchftDiLoCo
from torchft_diff import (
    OUTER_LR,
    OUTER_MOMENTUM,
    STEPS,
    TRAIN,
    H,
    Manager,
    _Fragment,
    batch,
    flat,
    loss_fn,
    model_fn,
    trajectory,
)

from palsgd.core.algorithms import plan
from palsgd.core.buckets import fragment_bounds
from palsgd.core.config import AlgorithmSpec
from palsgd.core.groups import ReplicaGroups
from palsgd.real.algorithms import ALGORITHM_CLASSES, Setup
from palsgd.real.dist import DistContext, TorchComm, _QuantizedMean, flatten_, replica_process_groups
from palsgd.real.optim import build_optimizer, flat_order, set_lr
from palsgd.real.timing import DDPCommTimer, StepTimer, ddp_timed_hook

SIZE = 2
CASES = {  # name: (algorithm, P, tau, alpha, payload dtype)
    "diloco": ("diloco", 1, 0, 0.0, "fp32"),
    "p2_tau1_alpha05": ("streaming_diloco", 2, 1, 0.5, "fp32"),
    # int8: the stand-in Manager runs our quantized mean over the peers (as torchft_diff.py over everyone);
    # ours runs it on a background thread through the peers' own process group (tau > 0)
    "p2_tau1_alpha05_int8": ("streaming_diloco", 2, 1, 0.5, "int8"),
}


class _GroupAverage:
    def __init__(self, work, tensor: torch.Tensor, replicas: int):
        self.work, self.tensor, self.replicas = work, tensor, replicas

    def wait(self) -> bool:
        self.work.wait()
        self.tensor /= self.replicas
        return True


class _GroupQuantized:
    def __init__(self, dtype: str, tensor: torch.Tensor, peers):
        self.mean = _QuantizedMean(dtype, [tensor], dist.get_world_size(peers), group=peers)

    def wait(self) -> bool:
        self.mean.wait()
        return True


class GroupManager(Manager):
    """The stand-in Manager, all-reducing over the replica dimension only (this rank's peers)."""

    def __init__(self, peers, quantize: str = "fp32"):
        super().__init__(quantize)
        self.peers = peers

    def allreduce(self, tensor: torch.Tensor, should_quantize: bool = False) -> _GroupAverage | _GroupQuantized:
        if should_quantize:
            return _GroupQuantized(self.quantize, tensor, self.peers)
        work = dist.all_reduce(tensor, async_op=True, group=self.peers)
        return _GroupAverage(work, tensor, dist.get_world_size(self.peers))


def torchft_run(rank, pgs, fragments, tau, alpha, dtype) -> list[torch.Tensor]:
    model = model_fn()
    params = flat_order(model)
    modules = [_Fragment(params[a:b]) for a, b in fragment_bounds([p.numel() for p in params], fragments)]
    ddp = nn.parallel.DistributedDataParallel(model, process_group=pgs.members)
    inner = build_optimizer(model.parameters(), TRAIN)
    outer = [torch.optim.SGD(m.parameters(), lr=OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True)
             for m in modules]
    trajectory = []
    with TorchftDiLoCo(GroupManager(pgs.peers, dtype), modules, inner, outer, sync_every=H,
                       fragment_sync_delay=tau, fragment_update_alpha=alpha, should_quantize=dtype != "fp32"):
        for step in range(STEPS):
            loss_fn(ddp, batch(rank, step)).backward()
            set_lr(inner, TRAIN.lr)
            inner.step()
            inner.zero_grad(set_to_none=True)
            trajectory.append(flat(model))
    return trajectory


def our_run(rank, world, pgs, name, fragments, tau, alpha, dtype) -> list[torch.Tensor]:
    extra = {"fragments": fragments, "fragment_sync_delay": tau, "fragment_update_alpha": alpha}
    spec = AlgorithmSpec(name=name, sync_every=H, warmup_steps=0, outer_lr=OUTER_LR, outer_momentum=OUTER_MOMENTUM,
                         replica_group=SIZE, payload_dtype=dtype, per_tensor_allreduce=dtype != "fp32",
                         **(extra if name == "streaming_diloco" else {}))
    model = model_fn()
    flatten_(model)
    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    comm = TorchComm(ctx)
    timer = StepTimer(algorithm=name, worker=rank, zero=0.0, device=ctx.device)
    group_ddp = nn.parallel.DistributedDataParallel(model, process_group=pgs.members)
    hook = DDPCommTimer(timer, torch.float32, group=pgs.members)
    group_ddp.register_comm_hook(hook, ddp_timed_hook)
    p = plan(name, workers=world, steps=STEPS, seed=0, sync_every=H, fragments=spec.fragments,
             sync_delay=spec.fragment_sync_delay, group_size=SIZE)
    algorithm = ALGORITHM_CLASSES[name](Setup(
        model=model, optimizer=build_optimizer(model.parameters(), TRAIN), spec=spec, train=TRAIN,
        kinds=p.worker_kinds(rank), sync_after=p.sync_after, comm=comm, timer=timer, loss_fn=loss_fn,
        fragment=p.fragment, start_after=p.start_after, group_ddp=group_ddp, group_ddp_timer=hook,
        sync_comm=TorchComm(ctx, payload=dtype, per_tensor=spec.per_tensor_allreduce, groups=pgs, parent=comm)))
    return trajectory(algorithm, model, rank)


def run(rank, world, out):
    pgs = replica_process_groups(ReplicaGroups(world, SIZE), rank, quantized=True)
    results = {}
    for case, (name, *settings) in CASES.items():
        results[case] = (our_run(rank, world, pgs, name, *settings), torchft_run(rank, pgs, *settings))
    save_from_all_ranks(results, world, rank, out)


if __name__ == "__main__":
    spawn(run, 4, sys.argv[1])
