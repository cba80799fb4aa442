"""Our DiLoCo and Streaming DiLoCo next to torchft's ``local_sgd.DiLoCo``, and our Local SGD with
``averager = "torchft"`` next to torchft's ``local_sgd.LocalSGD``, on gloo ranks:
``python torchft_diff.py WORLD OUT.pt``; rank 0 saves, per case, both parameter trajectories.

A script (not a test module) so that torch.multiprocessing can spawn its functions by path. torchft's
``Manager`` needs a lighthouse and its own process groups; ``Manager`` below stands in for it with only
what ``DiLoCo`` calls, all-reducing through torch.distributed as torchft's does: sum, then divide by the
participants (``Manager.allreduce`` with ``ReduceOp.AVG``). torchft quantizes (``should_quantize``) only
with triton on a GPU; the stand-in then runs our quantized mean (``real/dist._QuantizedMean``) on the
tensor torchft hands it, so those cases check which tensors are quantized when, and how the result is
used, not torchft's fp8 kernels. torchft all-reduces one tensor at a time: our quantized cases do too
(``per_tensor_allreduce``), so that the quantization blocks are the same.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from gloo_ranks import save_from_all_ranks, spawn
from torch import nn
from torchft.local_sgd import DiLoCo as TorchftDiLoCo
from torchft.local_sgd import LocalSGD as TorchftLocalSGD

from palsgd.core.algorithms import plan
from palsgd.core.buckets import fragment_bounds
from palsgd.core.config import AlgorithmSpec
from palsgd.core.workload import TrainSpec
from palsgd.real.algorithms import ALGORITHM_CLASSES, Setup
from palsgd.real.dist import DistContext, TorchComm, _QuantizedMean, flatten_
from palsgd.real.optim import build_optimizer, flat_order, set_lr
from palsgd.real.timing import StepTimer

STEPS, H, BATCH = 16, 4, 8
OUTER_LR, OUTER_MOMENTUM = 0.7, 0.9
TRAIN = TrainSpec(optimizer="adamw", lr=0.01, weight_decay=0.1)
CASES = {  # name: (algorithm, P, tau, alpha, payload dtype)
    "diloco": ("diloco", 1, 0, 0.0, "fp32"),
    "p1_tau0_alpha0": ("streaming_diloco", 1, 0, 0.0, "fp32"),
    "p2_tau0_alpha0": ("streaming_diloco", 2, 0, 0.0, "fp32"),
    "p2_tau1_alpha0": ("streaming_diloco", 2, 1, 0.0, "fp32"),
    "p2_tau1_alpha05": ("streaming_diloco", 2, 1, 0.5, "fp32"),
    "p4_tau0_alpha025": ("streaming_diloco", 4, 0, 0.25, "fp32"),
    "p1_tau3_alpha05": ("streaming_diloco", 1, 3, 0.5, "fp32"),
    "diloco_int8": ("diloco", 1, 0, 0.0, "int8"),
    "p2_tau1_alpha05_int8": ("streaming_diloco", 2, 1, 0.5, "int8"),
    "p2_tau0_alpha0_fp4": ("streaming_diloco", 2, 0, 0.0, "fp4"),
    "local_sgd_torchft": ("local_sgd", 1, 0, 0.0, "fp32"),  # averages after every H local steps
}


def model_fn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 2))


def batch(rank: int, index: int):
    g = torch.Generator().manual_seed(1000 * rank + index)
    return torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 2, generator=g)


def loss_fn(model, b):
    return nn.functional.mse_loss(model(b[0]), b[1])


def trajectory(algorithm, model, rank: int) -> list[torch.Tensor]:
    """The flat parameters after each of ``STEPS`` steps of ``algorithm`` (step i takes batch i)."""
    out = []
    for step in range(STEPS):
        algorithm.step(step, lambda step=step: batch(rank, step))
        out.append(flat(model))
    return out


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


class _AverageWork:
    def __init__(self, work, tensor: torch.Tensor):
        self.work, self.tensor = work, tensor

    def wait(self) -> bool:
        self.work.wait()
        self.tensor /= dist.get_world_size()
        return True


class _QuantizedWork:
    def __init__(self, dtype: str, tensor: torch.Tensor):
        self.mean = _QuantizedMean(dtype, [tensor], dist.get_world_size())

    def wait(self) -> bool:
        self.mean.wait()
        return True


class Manager:
    """torchft's ``Manager``, as far as ``DiLoCo`` uses it, for a fixed group with no failures: every
    quorum is everyone, every commit succeeds, and the step counts commits (one per fragment sync).
    ``quantize``: the payload dtype of a ``should_quantize`` all-reduce."""

    _use_async_quorum = False

    def __init__(self, quantize: str = "fp32"):
        self._step = 0
        self.quantize = quantize

    def register_state_dict_fn(self, key, load_fn, save_fn) -> None:
        pass

    def allow_state_dict_read(self) -> None:
        pass

    def disallow_state_dict_read(self) -> None:
        pass

    def start_quorum(self) -> None:
        pass

    def current_step(self) -> int:
        return self._step

    def should_commit(self) -> bool:
        self._step += 1
        return True

    def allreduce(self, tensor: torch.Tensor, should_quantize: bool = False) -> _AverageWork | _QuantizedWork:
        if should_quantize:
            return _QuantizedWork(self.quantize, tensor)
        return _AverageWork(dist.all_reduce(tensor, async_op=True), tensor)


class _Fragment(nn.Module):
    def __init__(self, params):
        super().__init__()
        self.params = nn.ParameterList(params)


def torchft_local_sgd_run(rank) -> list[torch.Tensor]:
    model = model_fn()
    inner = build_optimizer(model.parameters(), TRAIN)
    trajectory = []
    with TorchftLocalSGD(Manager(), model, inner, sync_every=H):
        for step in range(STEPS):
            loss_fn(model, batch(rank, step)).backward()
            set_lr(inner, TRAIN.lr)
            inner.step()  # torchft's hook averages the parameters after every H-th step
            inner.zero_grad(set_to_none=True)
            trajectory.append(flat(model))
    return trajectory


def torchft_run(rank, fragments, tau, alpha, dtype) -> list[torch.Tensor]:
    model = model_fn()
    params = flat_order(model)  # our fragments are runs of the flat buffer
    modules = [_Fragment(params[a:b]) for a, b in fragment_bounds([p.numel() for p in params], fragments)]
    inner = build_optimizer(model.parameters(), TRAIN)
    outer = [torch.optim.SGD(m.parameters(), lr=OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True)
             for m in modules]
    trajectory = []
    with TorchftDiLoCo(Manager(dtype), modules, inner, outer, sync_every=H, fragment_sync_delay=tau,
                       fragment_update_alpha=alpha, should_quantize=dtype != "fp32"):
        for step in range(STEPS):
            loss_fn(model, batch(rank, step)).backward()
            set_lr(inner, TRAIN.lr)
            inner.step()  # torchft's hooks start and apply the fragment syncs after the step
            inner.zero_grad(set_to_none=True)
            trajectory.append(flat(model))
    return trajectory


def our_run(rank, world, name, fragments, tau, alpha, dtype, eager=False) -> list[torch.Tensor]:
    extra = {"fragments": fragments, "fragment_sync_delay": tau, "fragment_update_alpha": alpha, "eager_outer": eager}
    spec = AlgorithmSpec(name=name, sync_every=H, warmup_steps=0, outer_lr=OUTER_LR,
                         outer_momentum=OUTER_MOMENTUM, payload_dtype=dtype, per_tensor_allreduce=dtype != "fp32",
                         averager="torchft" if name == "local_sgd" else "pytorch",
                         **(extra if name == "streaming_diloco" else {}))
    model = model_fn()
    flatten_(model)
    ctx = DistContext(rank, world, rank, world, torch.device("cpu"), "gloo")
    comm = TorchComm(ctx, payload=dtype, per_tensor=spec.per_tensor_allreduce)
    p = plan(name, workers=world, steps=STEPS, seed=0, sync_every=H, fragments=spec.fragments,
             sync_delay=spec.fragment_sync_delay, averager=spec.averager)
    algorithm = ALGORITHM_CLASSES[name](Setup(
        model=model, optimizer=build_optimizer(model.parameters(), TRAIN), spec=spec, train=TRAIN,
        kinds=p.worker_kinds(rank), sync_after=p.sync_after, comm=comm,
        timer=StepTimer(algorithm=name, worker=rank, zero=0.0, device=ctx.device), loss_fn=loss_fn,
        fragment=p.fragment, start_after=p.start_after))
    return trajectory(algorithm, model, rank)


def run(rank, world, out):
    results = {}
    for case, (name, *settings) in CASES.items():
        reference = torchft_local_sgd_run(rank) if name == "local_sgd" else torchft_run(rank, *settings)
        results[case] = (our_run(rank, world, name, *settings), reference)
    save_from_all_ranks(results, world, rank, out)


if __name__ == "__main__":
    spawn(run, int(sys.argv[1]), sys.argv[2])
