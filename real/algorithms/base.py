"""What every algorithm shares: the DDP step, the local gradient step, the sync skeleton, timing.

The trainer (``real/worker.py``) calls ``algo.step(step, next_batch)`` once per step of the shared plan
(``core.algorithms.plan``: the same seeded plan the simulator uses). The plan says which kind of step
this worker takes (DDP / gradient / pseudo-sync) and whether a sync follows it. Subclasses define
``sync`` (and PALSGD ``pseudo_sync``); communication goes through ``comm`` (``real/dist.py``), so tests
can drive an algorithm with a fake.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...core.algorithms import DDP_STEP, FACTS, GRADIENT_STEP, IDLE_STEP
from ...core.config import AlgorithmSpec
from ...core.workload import TrainSpec
from ..dist import flat_view, ring_bytes
from ..optim import FINAL_LR_FRACTION, flat_order, lr_at, set_lr
from ..timing import DDPCommTimer, StepTimer

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass
class Setup:
    """Everything an algorithm works with; built by the worker (or a test)."""

    model: nn.Module  # the local model x_k
    optimizer: torch.optim.Optimizer  # the inner optimizer
    spec: AlgorithmSpec
    train: TrainSpec
    kinds: np.ndarray  # this worker's row of the plan
    sync_after: np.ndarray  # bool per step
    comm: object  # TorchComm or a fake with the same methods
    timer: StepTimer
    loss_fn: LossFn
    ddp: nn.Module | None = None  # DistributedDataParallel around ``model`` (DDP steps)
    ddp_timer: DDPCommTimer | None = None
    # Replica groups (``core/groups.py``): a local gradient step is a DDP step over the group
    # (``group_ddp``), and a sync is made over ``sync_comm`` (this rank's peers at its group position).
    # None without groups: local steps are the model's own and syncs go over ``comm``.
    group_ddp: nn.Module | None = None
    group_ddp_timer: DDPCommTimer | None = None
    sync_comm: object | None = None
    grad_accum: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    slow_factor: float = 1.0  # fault injection: each compute phase lasts this many times longer
    fragment: np.ndarray | None = None  # Streaming DiLoCo: the plan's fragment synced after each step
    start_after: np.ndarray | None = None  # Streaming DiLoCo: the fragment whose all-reduce starts
    device_s: dict[str, float] | None = None
    """Emulated accelerators (``real/emulated_compute.py``): the modelled seconds of the device phases
    ``outer_step`` (u) and ``pseudo_sync`` (m), slept instead of computed."""

    @property
    def total_steps(self) -> int:
        return len(self.kinds)


class Algorithm:
    """Base class. Subclasses set ``name`` and implement ``sync``; local ones call ``begin_local``."""

    name = ""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.params = flat_order(setup.model)  # as they lie in the flat buffer
        self.numels = [p.numel() for p in self.params]
        self.flat = flat_view(self.params)
        if self.flat is None and FACTS[self.name].local:
            raise ValueError("the parameters must lie in one flat buffer (real.dist.flatten_ before the "
                             "optimizer and DDP are built): a sync all-reduces them in place")
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=setup.device.type == "cuda" and setup.train.precision == "fp16")
        self._last_compute_s = 0.0
        self.sync_comm = setup.sync_comm if setup.sync_comm is not None else setup.comm
        if setup.spec.warmup_steps == 0 or not FACTS[self.name].local:
            self.begin_local()

    # -- the loop -------------------------------------------------------------------------------

    def step(self, step: int, next_batch: Callable[[], Batch]) -> float:
        """Take step ``step`` of the plan; return its training loss (NaN for a pseudo-sync or idle step)."""
        kind = int(self.setup.kinds[step])
        self.setup.timer.begin_step(step)
        lr = lr_at(self.setup.train, step, self.setup.total_steps)
        if kind == IDLE_STEP:  # a slower replica waits for the barrier (sync_every = "balanced"): no batch
            loss = math.nan
        elif kind == DDP_STEP:
            loss = self.ddp_step(next_batch, lr)
        elif kind == GRADIENT_STEP:
            loss = self.local_step(next_batch, lr * self.lr_scale)
        else:
            loss = self.pseudo_sync(next_batch, lr)
        if kind == DDP_STEP and step == self.setup.spec.warmup_steps - 1 and FACTS[self.name].local:
            self.begin_local()
        self.start_sync(step)
        if self.setup.sync_after[step]:
            self.sync(step)
        self.setup.timer.end_step()
        return loss

    lr_scale = 1.0

    def begin_local(self) -> None:
        """Called once when local training starts (after the warm-up, or at once when W = 0)."""

    def start_sync(self, step: int) -> None:
        """Called after every step, before its sync: Streaming DiLoCo starts a fragment's all-reduce here."""

    def sync(self, step: int) -> None:
        raise NotImplementedError

    def pseudo_sync(self, next_batch: Callable[[], Batch], lr: float) -> float:
        raise NotImplementedError(f"{self.name} takes no pseudo-sync steps")

    # -- checkpoint state beyond model and inner optimizer ------------------------------------

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state["scaler"])

    # -- the pieces -------------------------------------------------------------------------------

    def fetch(self, next_batch: Callable[[], Batch]) -> list[Batch]:
        with self.setup.timer.phase("data"):
            return [next_batch() for _ in range(self.setup.grad_accum)]

    def ddp_step(self, next_batch: Callable[[], Batch], lr: float) -> float:
        """A DDP step over every rank (the warm-up; every step of DDP)."""
        loss = self._ddp_step(next_batch, lr, self.setup.ddp, self.setup.ddp_timer, self.setup.comm.world_size)
        if self.setup.spec.warmup_syncs_optimizer_state and FACTS[self.name].local:
            self.allreduce_mean(self.optimizer_state(), comm=self.setup.comm)
        return loss

    def _ddp_step(self, next_batch: Callable[[], Batch], lr: float, ddp: nn.Module, hook: DDPCommTimer,
                  world: int) -> float:
        """Forward/backward through ``ddp`` (bucketed all-reduce overlapped with backward over its ``world``
        ranks), then the optimizer.

        Gradient accumulation: all but the last micro-batch run under ``no_sync`` (no communication)."""
        batches = self.fetch(next_batch)
        hook.reset()
        self._sync_device()
        start = self.setup.timer.now()
        with self.setup.comm.blocking():
            loss = self._forward_backward(ddp, batches, ddp=True)
        self._sync_device()
        end = self.setup.timer.now()
        last = hook.launched[-1] if hook.launched else end
        self.setup.timer.add("compute", start, last)
        if hook.launched:
            self.setup.timer.add("allreduce_hidden", hook.launched[0], last)
        self.setup.timer.add("allreduce", last, end, ring_bytes(hook.bytes, world))
        self.optimizer_step(lr)
        return loss

    def local_step(self, next_batch: Callable[[], Batch], lr: float) -> float:
        if self.setup.group_ddp is not None:  # the group trains as DDP; the groups apart
            return self._ddp_step(next_batch, lr, self.setup.group_ddp, self.setup.group_ddp_timer,
                                  self.setup.group_ddp.process_group.size())
        batches = self.fetch(next_batch)
        with self.setup.timer.phase("compute"):
            loss = self._forward_backward(self.setup.model, batches, ddp=False)
        self.optimizer_step(lr)
        return loss

    def _forward_backward(self, module: nn.Module, batches: list[Batch], *, ddp: bool) -> float:
        self._slow_down()
        t0 = time.perf_counter()
        module.train()
        total = 0.0
        cuda = self.setup.device.type == "cuda"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.setup.train.precision)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with module.no_sync() if ddp and not last else contextlib.nullcontext():
                with torch.autocast("cuda", dtype=dtype, enabled=cuda and dtype is not None):
                    loss = self.setup.loss_fn(module, batch) / len(batches)
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
        self._last_compute_s = time.perf_counter() - t0
        return total

    def _slow_down(self) -> None:
        """Fault injection: stretch compute by ``slow_factor`` before it starts, from the last step's
        compute time, so that under DDP the gradient buckets are launched late, as on a slow card (a
        sleep after the backward would fall after the buckets' all-reduce and read as communication)."""
        if self.setup.slow_factor > 1.0:
            time.sleep((self.setup.slow_factor - 1.0) * self._last_compute_s)

    def optimizer_step(self, lr: float) -> None:
        with self.setup.timer.phase("optimizer"):
            set_lr(self.setup.optimizer, lr)
            if self.setup.train.grad_clip > 0:
                self.scaler.unscale_(self.setup.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.setup.train.grad_clip)
            self.scaler.step(self.setup.optimizer)
            self.scaler.update()
            self.setup.optimizer.zero_grad(set_to_none=True)
            self._sync_device()

    def float_buffers(self) -> list[torch.Tensor]:
        """BatchNorm running statistics: averaged at every sync (PyTorch's averager leaves them; we say so)."""
        return [b for b in self.setup.model.buffers() if b.is_floating_point()]

    def optimizer_state(self) -> list[torch.Tensor]:
        """The inner optimizer's per-parameter state (AdamW's m and v, SGD's momentum), parameter by
        parameter: what the released PALSGD code also averages in every warm-up step."""
        state = self.setup.optimizer.state
        return [v for p in self.params for v in state[p].values() if torch.is_tensor(v) and v.shape == p.shape]

    def wait_for_all(self) -> None:
        """Idle until the slowest rank arrives, measured apart from the transfer that follows."""
        with self.setup.timer.phase("wait"):
            self.sync_comm.barrier()

    def allreduce_mean(self, *groups: list[torch.Tensor], comm=None) -> None:
        """Average each group over the ranks a sync spans (or ``comm``'s), one all-reduce per group
        (``core.buckets.sync_call_bytes``)."""
        comm = comm or self.sync_comm
        with self.setup.timer.phase("allreduce") as box:
            box[0] = ring_bytes(comm.allreduce_mean_(groups), comm.world_size)

    def outer_lr_at(self, step: int) -> float:
        """γ_out at ``step``: constant, or cosine from ``outer_lr`` to 10% of it over the run (the inner
        schedule's shape, without its warm-up)."""
        lr = self.setup.spec.outer_lr
        if self.setup.train.outer_lr_schedule == "constant":
            return lr
        progress = min(1.0, step / max(1, self.setup.total_steps - 1))
        return lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))

    def on_device(self, phase: str, work: Callable[[], object], share: float = 1.0) -> None:
        """``work``, timed as ``phase``. On an emulated accelerator the parameters never change (zero
        gradients, an optimizer step that sleeps), so there is nothing to compute: the phase sleeps ``share``
        of its modelled time instead, and the host stays free for communication, as beside a GPU."""
        with self.setup.timer.phase(phase):
            if self.setup.device_s is None:
                work()
                self._sync_device()
            else:
                time.sleep(share * self.setup.device_s[phase])

    def _sync_device(self) -> None:
        if self.setup.device.type == "cuda":
            torch.cuda.synchronize(self.setup.device)

