"""Measure the compute terms of the cost model on this process's device: c, o, m, u and data loading.

``measure_compute`` times what one worker does between collectives (docs/algorithms.md, "Cost of one
step"): c = forward + backward of one optimizer step (all ``grad_accum`` micro-batches),
o = the inner optimizer step, m = the PALSGD pseudo-sync axpy x <- x - a (x - z), u = the DiLoCo outer
Nesterov step (without its all-reduce), and the data fetch. ``palsgd calibrate`` runs it in every rank
under torchrun, so cores or a GPU shared between ranks are part of the measurement, and writes the
medians into ``[cluster.compute]`` and the spread of c into ``[cluster.variability]``.

Nothing here talks to other ranks. On CUDA, times come from CUDA events around each phase (after a
synchronize, so no earlier work leaks in); on CPU from ``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from ..core.config import Experiment
from .data import build_data
from .emulated_compute import NoData, emulate
from .models import build_model, compute_loss
from .optim import build_optimizer

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Timer:
    """Seconds taken by ``fn()``: CUDA events on a GPU (their elapsed time excludes host gaps), else
    ``perf_counter``. Each call synchronizes first, so only ``fn``'s own work is timed."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000.0


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast of forward and backward on GPUs; CPU runs stay fp32 (TrainSpec.precision)."""
    if device.type != "cuda" or precision not in AUTOCAST:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AUTOCAST[precision])


def measure_compute(exp: Experiment, *, steps: int = 20, warmup: int = 3, device: str = "cpu",
                    rank: int = 0, world_size: int = 1) -> dict:
    """Median seconds of c, o, m, u and data fetch over ``steps`` steps after ``warmup`` untimed ones.

    Returns {"step_time_s", "step_time_cv", "optimizer_time_s", "pseudo_sync_time_s",
    "outer_step_time_s", "data_time_s"}; step_time_cv = std / mean of the c samples.
    ``rank`` and ``world_size`` pick this rank's data shard (fetch cost only; no communication).
    """
    if steps < 2 or warmup < 0:
        raise ValueError(f"need steps >= 2 and warmup >= 0, got {steps}, {warmup}")
    dev = torch.device(device)
    wl, train = exp.workload, exp.train
    torch.manual_seed(exp.seed)
    model = build_model(wl.model).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, train)
    loss_fn = compute_loss
    if train.compute == "emulated":  # c and o are the description's sleeps (no variability); m, u are real
        emu, optimizer = emulate(model, optimizer, exp, rank, warmup + steps)
        loss_fn, data = emu.loss_fn, NoData()
    else:
        data = build_data(wl, rank=rank, world_size=world_size, seed=exp.seed)
    outer = OuterState(params, lr=exp.algorithms[0].outer_lr, momentum=exp.algorithms[0].outer_momentum)
    timer, batches = Timer(dev), []
    index = 0

    def fetch() -> None:
        nonlocal index
        batches.clear()
        for _ in range(wl.grad_accum):
            x, y = data.train_batch(index)
            batches.append((x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)))
            index += 1

    def forward_backward() -> None:
        for batch in batches:
            with autocast(dev, train.precision):
                loss = loss_fn(model, batch) / wl.grad_accum
            loss.backward()

    def optimizer_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    names = ("data_time_s", "step_time_s", "optimizer_time_s", "pseudo_sync_time_s", "outer_step_time_s")
    samples: dict[str, list[float]] = {name: [] for name in names}
    for step in range(warmup + steps):
        times = (timer(fetch), timer(forward_backward), timer(optimizer_step),
                 timer(outer.pseudo_sync), timer(outer.outer_step))
        if step >= warmup:
            for name, seconds in zip(names, times, strict=True):
                samples[name].append(seconds)
    out = {name: statistics.median(values) for name, values in samples.items()}
    c = samples["step_time_s"]
    out["step_time_cv"] = statistics.pstdev(c) / statistics.fmean(c)
    return out


class OuterState:
    """The global model z and the outer momentum buffer: the state DiLoCo and PALSGD keep (2N)."""

    PULL = 0.1
    """A pseudo-sync pull a = min(1, lr * eta / p); its value does not change the cost."""

    def __init__(self, params: list[torch.Tensor], *, lr: float, momentum: float):
        self.params, self.lr, self.momentum = params, lr, momentum
        with torch.no_grad():
            self.z = [p.detach().clone() for p in params]
            self.buf = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def pseudo_sync(self) -> None:
        """PALSGD: x <- x - a (x - z) = lerp(x, z, a); about three passes over 4N bytes."""
        torch._foreach_lerp_(self.params, self.z, self.PULL)

    @torch.no_grad()
    def outer_step(self) -> None:
        """DiLoCo: delta = z - x (all-reduced in a real run); buf <- mu buf + delta;
        z <- z - lr (delta + mu buf) (PyTorch's Nesterov SGD); x <- z."""
        delta = torch._foreach_sub(self.z, self.params)
        torch._foreach_mul_(self.buf, self.momentum)
        torch._foreach_add_(self.buf, delta)
        torch._foreach_add_(delta, self.buf, alpha=self.momentum)
        torch._foreach_add_(self.z, delta, alpha=-self.lr)
        torch._foreach_copy_(self.params, self.z)
