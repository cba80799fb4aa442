"""The only place that touches torch.distributed process groups: set-up, tear-down and collectives.

Everything else talks to a ``Comm`` (``TorchComm`` here; tests may pass a fake with the same methods),
so algorithms never call ``torch.distributed`` themselves (torchft ``local_sgd.py`` does the same).

Bytes sent by one rank in a ring all-reduce of S bytes over n ranks: 2(n-1)/n * S
(Thakur, Rabenseifner, Gropp 2005; nccl-tests "busbw").
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

PAYLOAD_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SYNC_BUCKET_BYTES = 64 * 2**20
"""Flat buffers a sync all-reduces: a few large ones, so per-call latency is paid a few times, not once
per tensor, while the extra memory stays bounded."""


def ring_bytes(payload_bytes: float, world_size: int) -> float:
    """Bytes one rank sends in a ring all-reduce of ``payload_bytes``: 2(n-1)/n * S."""
    return 2.0 * (world_size - 1) / world_size * payload_bytes if world_size > 1 else 0.0


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_rank(requested: int, local_world_size: int) -> int:
    """``requested`` or the cores divided among the ranks of this node, so ranks do not fight over cores."""
    return requested if requested > 0 else max(1, usable_cores() // max(1, local_world_size))


def init(*, threads: int = 0, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...).

    nccl with one GPU per local rank when CUDA is present, gloo on CPU.
    """
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    torch.set_num_threads(threads_per_rank(threads, local_world))
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=dt.timedelta(seconds=timeout_s), **kwargs)
    return DistContext(rank, world, local_rank, local_world, device, backend)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def flatten_(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """Move ``tensors`` (a model's parameters) into one contiguous buffer that they then view, so a sync
    all-reduces them in place with no copy: PyTorch's ``average_parameters`` leaves parameters as views
    of its flat buffer after the first average too. Call before building optimizers and DDP."""
    if not tensors:
        return None
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    offset = 0
    for t in tensors:
        t.data = flat[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
    return flat


def _runs(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``tensors`` cut into runs that lie end to end in one storage (same dtype, contiguous)."""
    runs: list[list[torch.Tensor]] = []
    for t in tensors:
        prev = runs[-1][-1] if runs else None
        if (prev is not None and t.is_contiguous() and prev.is_contiguous() and t.dtype == prev.dtype
                and t.untyped_storage().data_ptr() == prev.untyped_storage().data_ptr()
                and t.data_ptr() == prev.data_ptr() + prev.numel() * prev.element_size()):
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int, elem_bytes: int) -> list[list[int]]:
    """Indices of ``tensors`` grouped into consecutive buckets of at most ``bucket_bytes`` of payload
    (a tensor larger than a bucket gets one of its own)."""
    out: list[list[int]] = []
    size = 0
    for i, t in enumerate(tensors):
        nbytes = t.numel() * elem_bytes
        if not out or size + nbytes > bucket_bytes:
            out.append([])
            size = 0
        out[-1].append(i)
        size += nbytes
    return out


class TorchComm:
    """Collectives over the default process group, with the payload dtype and bucketing of a sync.

    ``in_collective`` is True while a blocking collective runs: the heartbeat reports it, so that a
    launcher can tell the rank that hangs from the ranks that wait for it.
    """

    def __init__(self, ctx: DistContext, *, payload: str = "fp32", per_tensor: bool = False,
                 bucket_bytes: int = SYNC_BUCKET_BYTES):
        self.ctx = ctx
        self.payload = PAYLOAD_DTYPES[payload]
        self.per_tensor = per_tensor
        self.bucket_bytes = bucket_bytes
        self.in_collective = False
        self._tiny = torch.zeros(1, device=ctx.device)

    @property
    def world_size(self) -> int:
        return self.ctx.world_size

    @contextmanager
    def blocking(self) -> Iterator[None]:
        self.in_collective = True
        try:
            yield
        finally:
            self.in_collective = False

    def barrier(self) -> None:
        """Wait for every rank: an all-reduce of one element, so that the wait before a sync is measured
        apart from the transfer (``dist.barrier`` on nccl would allocate and sync a device of its own)."""
        with self.blocking():
            dist.all_reduce(self._tiny)
            _synchronize(self.ctx.device)

    def allreduce_mean_(self, tensors: Sequence[torch.Tensor]) -> int:
        """Average ``tensors`` in place over all ranks; return the payload bytes (S) this sync carried.

        Tensors that tile one buffer end to end (parameters after ``flatten_``) are all-reduced where
        they lie, with no copy: divide, then sum, in the order of PyTorch's ``average_parameters``, so
        the bits are the same. Others are copied into buckets of the payload dtype and back."""
        if not tensors:
            return 0
        elem = torch.tensor([], dtype=self.payload).element_size()
        runs = [] if self.per_tensor else _runs(tensors)
        flat_runs = [r for r in runs if len(r) > 1 and r[0].dtype == self.payload]
        in_place = {id(t) for r in flat_runs for t in r}
        with self.blocking():
            for run in flat_runs:
                self._in_place(run)
            rest = [t for t in tensors if id(t) not in in_place]
            if rest:
                self._copied(rest)
            _synchronize(self.ctx.device)
        return sum(t.numel() for t in tensors) * elem

    def _in_place(self, run: list[torch.Tensor]) -> None:
        first = run[0].detach()
        flat = first.as_strided((sum(t.numel() for t in run),), (1,), first.storage_offset())
        flat.mul_(1.0 / self.world_size)
        dist.all_reduce(flat)

    def _copied(self, tensors: list[torch.Tensor]) -> None:
        elem = torch.tensor([], dtype=self.payload).element_size()
        groups = [[i] for i in range(len(tensors))] if self.per_tensor else \
            buckets(tensors, self.bucket_bytes, elem)
        scale = 1.0 / self.world_size
        # fp32: sum, then scale while copying back (one pass fewer); a 16-bit payload is divided first so
        # the sum cannot overflow. For two ranks both orders give the same bits (halving is exact).
        pre_divide = self.payload != torch.float32
        for idx in groups:
            members = [tensors[i] for i in idx]
            flat = torch.cat([t.detach().reshape(-1).to(self.payload) for t in members])
            if pre_divide:
                flat.mul_(scale)
            dist.all_reduce(flat)
            offset = 0
            for t in members:
                view = flat[offset:offset + t.numel()].view_as(t)
                if pre_divide:
                    t.detach().copy_(view)
                else:
                    torch.mul(view, scale, out=t.detach())
                offset += t.numel()

    def mean_scalar(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.ctx.device)
        with self.blocking():
            dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def reduce_scalar(self, value: float, op: str) -> float:
        """``min`` or ``max`` of one number over the ranks."""
        t = torch.tensor([value], dtype=torch.float64, device=self.ctx.device)
        with self.blocking():
            dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
        return float(t.item())

    def common_clock(self) -> float:
        """The local ``time.perf_counter()`` at which every rank leaves one barrier together: the zero of
        a run's clock. Subtracting it from each rank's own monotonic clock puts all ranks on one time
        axis, whatever the host clocks say, up to the barrier's exit skew (well under a millisecond)."""
        self.barrier()
        return time.perf_counter()

    def broadcast_(self, tensors: Sequence[torch.Tensor], src: int = 0) -> None:
        with self.blocking():
            for t in tensors:
                dist.broadcast(t.detach(), src=src)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
