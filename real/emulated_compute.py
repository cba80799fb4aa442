"""Emulated accelerators: the real model, buffers, DDP buckets, syncs and outer steps, but compute that
costs a sleep of its modelled time instead of host CPU.

On a GPU the forward and backward run on the device while the host CPU is free for communication; on a
2-core test machine the same forward and backward would compete with gloo's threads for the cores, and
that contention, not the systems model, would dominate any comparison. Here each layer of the real model
(every module that owns parameters, in registration order, which is forward order for the models in
``real/models.py``) sleeps its share of the step's compute c, split by FLOPs, the backward twice the
forward, and its parameters' gradients appear when its backward ends: layer by layer, in reverse, as on a
GPU, so DDP's buckets fill and launch as they would there. Gradients are zeros of the right shapes and
the inner optimizer step is a sleep of o, so the parameters never change and losses mean nothing (every
output of this mode says so): this is a testbed for the systems model, and a way to measure a real
network without training.

Sleeps run to absolute deadlines (the step's start plus the modelled time so far), so the overshoot of
``time.sleep`` (about 0.1-0.3 ms here, more under load) is paid once per micro-batch, not once per layer.
A sleeping rank releases the GIL, so gloo's threads keep communicating, as NCCL does beside a kernel.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.compute import optimizer_step_s, outer_step_s, pseudo_sync_s, step_compute_s
from ..core.config import Experiment
from ..core.variability import ComputeFactors
from ..core.workload import ModelSpec
from .models import build_model

BACKWARD_SHARE = 2 / 3
"""Backward ≈ 2x forward (Kaplan et al. 2020: 6N FLOPs per token = 2N forward + 4N backward)."""


@dataclass(frozen=True)
class Layer:
    name: str
    params: tuple[nn.Parameter, ...]
    share: float  # fraction of one micro-batch's forward + backward


def layers(model: nn.Module, spec: ModelSpec, flops_per_sample: float) -> list[Layer]:
    """The modules that own parameters, each with its share of the compute by FLOPs, plus a last layer
    without parameters for what no such module computes (GPT's tied LM head and attention scores).

    Multiply-adds of linear and convolution layers are counted on a meta-device forward of one sample
    (shapes only, no memory); parameter-owning modules without multiply-adds (norms, embeddings) get no
    time of their own, only their gradient's place in the order."""
    macs = _macs_per_module(spec)
    named = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    flops = {n: 6.0 * macs.get(n, 0) for n, _ in named}
    rest = max(0.0, flops_per_sample - sum(flops.values()))
    total = sum(flops.values()) + rest
    out = [Layer(n, tuple(p for p in m.parameters(recurse=False) if p.requires_grad), flops[n] / total)
           for n, m in named]
    return [*out, Layer("(rest)", (), rest / total)]


def _macs_per_module(spec: ModelSpec) -> dict[str, int]:
    with torch.device("meta"):
        model = build_model(spec)
    counts: dict[str, int] = {}

    def hook(name, module, _inputs, output):
        if isinstance(module, nn.Linear):
            counts[name] = output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            counts[name] = output.numel() * module.in_channels // module.groups * k

    handles = [m.register_forward_hook(lambda mod, i, o, n=n: hook(n, mod, i, o))
               for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.device("meta"), torch.no_grad():
        model(_one_sample(spec))
    for h in handles:
        h.remove()
    return counts


def _one_sample(spec: ModelSpec) -> torch.Tensor:
    if spec.family == "gpt_neo":
        return torch.zeros(1, spec.seq_len, dtype=torch.long)
    return torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size)


class _Deadlines:
    """One micro-batch's clock, from the moment its first layer starts: layer i's forward ends at
    forward_end[i], its backward (the last layer's comes first) at backward_end[i]. One time line for
    both passes, so the host's own work between them (the loss, launching the backward) is hidden in the
    modelled time instead of added to it, as on a GPU that runs ahead of the host."""

    def __init__(self, shares: np.ndarray, seconds: float):
        forward = shares * (1 - BACKWARD_SHARE) * seconds
        backward = shares * BACKWARD_SHARE * seconds
        self.forward_end = np.cumsum(forward)
        self.backward_end = self.forward_end[-1] + np.cumsum(backward[::-1])[::-1]  # F + Σ_{j >= i} b_j
        self.t0 = None

    def forward(self, i: int) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        _sleep_until(self.t0 + self.forward_end[i])

    def backward(self, i: int) -> None:
        _sleep_until(self.t0 + self.backward_end[i])


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


class _Layer(torch.autograd.Function):
    """Forward: sleep until this layer's forward deadline. Backward: sleep until its backward deadline,
    then hand its parameters zero gradients when DDP is to all-reduce them (its hooks fire when a gradient
    is accumulated), and none otherwise: a local step's optimizer only sleeps, and writing 4N bytes of
    zeros per micro-batch would put host work (seconds for ResNet-50's 16 micro-batches) where a GPU has
    none."""

    @staticmethod
    def forward(ctx, clock: _Deadlines, index: int, grads: bool, h: torch.Tensor, *params: torch.Tensor):
        ctx.clock, ctx.index, ctx.grads = clock, index, grads
        ctx.save_for_backward(*params)
        clock.forward(index)
        return h.clone()

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        ctx.clock.backward(ctx.index)
        zeros = [torch.zeros_like(p) if ctx.grads else None for p in ctx.saved_tensors]
        return (None, None, None, grad_h, *zeros)


class EmulatedCompute:
    """Turns a model's forward into the layer-by-layer sleep of an emulated accelerator.

    ``install(model)`` replaces the model's ``forward`` (DDP still wraps it and still hooks every
    parameter's gradient); ``loss_fn`` is the training loss to pass to the algorithms; ``begin_step(step)``
    sets the step whose compute time is drawn (c times this rank's variability factor at that step).
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, *, flops_per_sample: float, step_compute_s: float,
                 grad_accum: int, factors: np.ndarray):
        self.layers = layers(model, spec, flops_per_sample)
        self.shares = np.array([layer.share for layer in self.layers])
        self.micro_batch_s = step_compute_s / grad_accum
        self.factors = factors  # this rank's factor per step
        self.seconds = self.micro_batch_s
        self.device_s: dict[str, float] = {}  # u and m, for the algorithms' device phases (Setup.device_s)

    def begin_step(self, step: int) -> None:
        self.seconds = self.micro_batch_s * float(self.factors[step])

    def install(self, model: nn.Module) -> None:
        model.forward = types.MethodType(lambda _model, grads: self.forward(grads), model)

    def forward(self, grads: bool) -> torch.Tensor:
        clock = _Deadlines(self.shares, self.seconds)
        h = torch.zeros(())
        for i, layer in enumerate(self.layers):
            h = _Layer.apply(clock, i, grads, h, *layer.params)
        return h

    @staticmethod
    def loss_fn(module: nn.Module, batch) -> torch.Tensor:
        """The "loss": the emulated forward's scalar (always 0; no input is read). Gradients are handed out
        only when ``module`` is DDP about to all-reduce them (not under ``no_sync``)."""
        ddp = isinstance(module, nn.parallel.DistributedDataParallel)
        return module(ddp and module.require_backward_grad_sync)


class EmulatedOptimizer:
    """The inner optimizer as an emulated accelerator runs it: ``step`` sleeps o; the rest is the real one's
    (state dicts, learning-rate groups, ``zero_grad``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, step_s: float):
        self._optimizer, self.step_s = optimizer, step_s

    def step(self, closure=None) -> None:
        _sleep_until(time.perf_counter() + self.step_s)

    def __getattr__(self, name):
        return getattr(self._optimizer, name)


def emulate(model: nn.Module, optimizer: torch.optim.Optimizer, exp: Experiment, rank: int,
            steps: int, dilation: float = 1.0) -> tuple[EmulatedCompute, EmulatedOptimizer]:
    """Make ``model`` and ``optimizer`` those of an emulated accelerator of ``exp``'s cluster: c, o, u and m
    from its description (``core.compute``, as the simulator charges them), this rank's compute factors
    drawn with the simulator's distributions (``core.variability``) from the experiment's seed. Under time
    dilation (``harness/machinery/dilation.py``) every one of them is ``dilation`` times longer."""
    wl, compute = exp.workload, exp.cluster.compute
    factors = ComputeFactors(exp.cluster.variability, exp.workers, exp.seed).draw(steps)[rank]
    emu = EmulatedCompute(model, wl.model, flops_per_sample=wl.flops_per_sample,
                          step_compute_s=dilation * step_compute_s(wl, compute), grad_accum=wl.grad_accum,
                          factors=factors)
    emu.install(model)
    emu.device_s = {"outer_step": dilation * outer_step_s(wl, compute),
                    "pseudo_sync": dilation * pseudo_sync_s(wl, compute)}
    return emu, EmulatedOptimizer(optimizer, dilation * optimizer_step_s(wl, compute))


class NoData:
    """The data source of an emulated accelerator: the emulated forward reads no input, so nothing is
    loaded (a real batch of ResNet-50 images would cost the host more than the step it stands for)."""

    _EMPTY = (torch.zeros(0), torch.zeros(0))

    def train_batch(self, index: int):
        return self._EMPTY

    def eval_batches(self, count: int) -> list:
        return []
