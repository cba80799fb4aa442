"""The only place that touches torch.distributed process groups: set-up, tear-down and collectives.

Everything else talks to a ``Comm`` (``TorchComm`` here; tests may pass a fake with the same methods),
so algorithms never call ``torch.distributed`` themselves (torchft ``local_sgd.py`` does the same).

Bytes sent by one rank in a ring all-reduce of S bytes over n ranks: 2(n-1)/n * S
(Thakur, Rabenseifner, Gropp 2005; nccl-tests "busbw").
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core import groups
from ..core.buckets import PAYLOAD_ELEM_BYTES, QUANT_BLOCK, QUANTIZED
from ..core.config import AlgorithmSpec, Experiment
from ..core.groups import ReplicaGroups
from .optim import flat_order
from .quantize import dequantize, quantize

PAYLOAD_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                  "int8": torch.float32, "fp4": torch.float32}
"""The floating type a payload is held in; int8 and fp4 payloads are quantized from fp32 when a sync
sends them (``_QuantizedMean``). DDP's gradients travel in ``core.buckets.ddp_payload_dtype``'s."""


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


@dataclass(frozen=True)
class SyncGroups:
    """This rank's process groups under replica groups (``core.groups.ReplicaGroups``): ``members``, the
    ranks of its group, over which its local steps run DDP; ``peers``, the rank at its position in every
    group, over which it syncs; ``background``, the peers again for an asynchronous quantized mean."""

    members: object  # torch.distributed ProcessGroup
    peers: object
    background: object | None


def replica_process_groups(groups: ReplicaGroups, rank: int, *, quantized: bool) -> SyncGroups:
    """Every rank makes every subgroup, in the same order (``torch.distributed.new_group`` requires it),
    and keeps its own."""
    members, _ = dist.new_subgroups_by_enumeration(groups.all_members())
    peers, _ = dist.new_subgroups_by_enumeration(groups.all_peers())
    background = dist.new_subgroups_by_enumeration(groups.all_peers())[0] if quantized else None
    return SyncGroups(members, peers, background)


def replica_setup(exp: Experiment, spec: AlgorithmSpec, ctx: DistContext, comm: TorchComm
                  ) -> tuple[SyncGroups, TorchComm] | None:
    """Under replica groups: this rank's process groups and the comm its syncs use (its peers at the same
    group position, reporting its collectives through ``comm``'s flag); None without groups."""
    if exp.group_size(spec) == 1:
        return None
    pgs = replica_process_groups(groups.layout(spec.replica_group, exp.cluster), ctx.rank,
                                 quantized=spec.payload_dtype in QUANTIZED)
    return pgs, TorchComm(ctx, payload=spec.dense_payload_dtype, per_tensor=spec.per_tensor_allreduce, groups=pgs,
                          parent=comm)


def flatten_(model: torch.nn.Module) -> torch.Tensor | None:
    """Move the model's trainable parameters into one contiguous buffer that they then view, so a sync
    all-reduces them in place with no copy: PyTorch's ``average_parameters`` leaves parameters as views
    of its flat buffer after the first average too, laid out in the optimizer's group order
    (``optim.flat_order``), as here. Call before building optimizers and DDP."""
    tensors = flat_order(model)
    if not tensors:
        return None
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    offset = 0
    for t in tensors:
        t.data = flat[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
    return flat


def flat_view(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The one 1-D buffer that ``tensors`` tile end to end (parameters after ``flatten_``, or the views
    of one flat tensor), or None when they do not."""
    first = tensors[0].detach()
    offset = first.data_ptr()
    for t in tensors:
        if (not t.is_contiguous() or t.dtype != first.dtype or t.data_ptr() != offset
                or t.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()):
            return None
        offset += t.numel() * t.element_size()
    return first.as_strided((sum(t.numel() for t in tensors),), (1,), first.storage_offset())


class TorchComm:
    """Collectives over the default process group, with the payload dtype and the calls of a sync.

    ``in_collective`` is True while a blocking collective runs: the heartbeat reports it, so that a
    launcher can tell the rank that hangs from the ranks that wait for it.
    """

    def __init__(self, ctx: DistContext, *, payload: str = "fp32", per_tensor: bool = False,
                 groups: SyncGroups | None = None, parent: TorchComm | None = None):
        self.ctx = ctx
        self.payload = PAYLOAD_DTYPES[payload]
        self.elem_bytes = PAYLOAD_ELEM_BYTES[payload]
        self.quantized = payload if payload in QUANTIZED else None
        self.per_tensor = per_tensor
        self.in_collective = False
        self._owner = parent or self  # whose in_collective the heartbeat reads
        self._tiny = torch.zeros(1, device=ctx.device)
        # The ranks this comm spans: all of them, or this rank's peers across replica groups.
        self.group = groups.peers if groups is not None else None
        self._world = dist.get_world_size(self.group) if groups is not None else ctx.world_size
        # An asynchronous quantized mean runs on a thread (_Background), through a process group of its
        # own, so that its collectives never interleave with the main thread's.
        if groups is not None:
            self._group = groups.background
        else:
            self._group = dist.new_group() if self.quantized and ctx.world_size > 1 else None
        self._last: _Background | None = None

    @property
    def world_size(self) -> int:
        return self._world

    @contextmanager
    def blocking(self) -> Iterator[None]:
        self._owner.in_collective = True
        try:
            yield
        finally:
            self._owner.in_collective = False

    def barrier(self) -> None:
        """Wait for every rank: an all-reduce of one element, so that the wait before a sync is measured
        apart from the transfer (``dist.barrier`` on nccl would allocate and sync a device of its own)."""
        with self.blocking():
            dist.all_reduce(self._tiny, group=self.group)
            _synchronize(self.ctx.device)

    def allreduce_mean_(self, groups: Sequence[Sequence[torch.Tensor]]) -> int:
        """Average every tensor of ``groups`` in place over all ranks; return the payload bytes (S) sent.

        One all-reduce per group (per tensor with ``per_tensor``): the calls ``core.buckets.sync_call_bytes``
        charges. A group that tiles one buffer of the payload dtype is all-reduced where it lies; any other
        is copied into one flat buffer of the payload dtype and back."""
        calls = [[t] for g in groups for t in g] if self.per_tensor else [g for g in groups if g]
        with self.blocking():
            for tensors in calls:
                self._mean_(tensors)
            _synchronize(self.ctx.device)
        return sum(t.numel() for g in calls for t in g) * self.elem_bytes

    def _mean_(self, tensors: Sequence[torch.Tensor]) -> None:
        """PyTorch ``average_parameters``' order, so the bits are the same: divide by the world size,
        then sum (a 16-bit sum of undivided values could also overflow)."""
        self._start_mean(tensors).wait()

    def _start_mean(self, tensors: Sequence[torch.Tensor]) -> _PendingMean | _QuantizedMean:
        if self.quantized:
            return _QuantizedMean(self.quantized, tensors, self.world_size, group=self.group)
        flat = flat_view(tensors) if tensors[0].dtype == self.payload else None
        copied = flat is None
        if copied:
            flat = torch.cat([t.detach().reshape(-1).to(self.payload) for t in tensors])
        flat.div_(self.world_size)
        return _PendingMean(dist.all_reduce(flat, async_op=True, group=self.group), flat, tensors if copied else ())

    def start_allreduce_mean_(self, groups: Sequence[Sequence[torch.Tensor]]) -> Callable[[], int]:
        """``allreduce_mean_`` started asynchronously (``async_op=True``, gloo's threads or NCCL's stream
        carry it while training goes on); returns a ``wait`` that finishes it in place and returns the
        payload bytes (S) sent. Training must not touch the tensors before ``wait``."""
        calls = [[t] for g in groups for t in g] if self.per_tensor else [g for g in groups if g]
        sent = sum(t.numel() for g in calls for t in g) * self.elem_bytes
        if self._group is not None and self.quantized:
            # The whole exchange of a quantized mean (all-to-all, then all-gather of the re-quantized
            # mean) in the background, as torchft's runs on a CUDA stream of its own; one job after another.
            means = [_QuantizedMean(self.quantized, tensors, self.world_size, group=self._group, start=False)
                     for tensors in calls]
            device = self.ctx.device
            self._last = job = _Background(lambda: [m.exchange() for m in means], after=self._last, device=device)

            def wait_background() -> int:
                with self.blocking():
                    job.result()
                    for m in means:
                        m.wait()
                    _synchronize(device)
                return sent

            return wait_background
        pending = [self._start_mean(tensors) for tensors in calls]

        def wait() -> int:
            with self.blocking():
                for p in pending:
                    p.wait()
                _synchronize(self.ctx.device)
            return sent

        return wait

    def allgather(self, message: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``message`` (all of one size), in rank order, over this comm's ranks (all, or the
        peers across replica groups): one ``all_gather`` (SparseLoCo's sparse messages, ``real/sparse.py``;
        gloo and NCCL run it as a ring)."""
        gathered = [torch.empty_like(message) for _ in range(self.world_size)]
        with self.blocking():
            dist.all_gather(gathered, message, group=self.group)
            _synchronize(self.ctx.device)
        return gathered

    def mean_scalar(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.ctx.device)
        with self.blocking():
            dist.all_reduce(t, group=self.group)
        return float(t.item()) / self.world_size

    def reduce_scalar(self, value: float, op: str) -> float:
        """``min`` or ``max`` of one number over the ranks."""
        t = torch.tensor([value], dtype=torch.float64, device=self.ctx.device)
        with self.blocking():
            dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX, group=self.group)
        return float(t.item())

    def common_clock(self) -> float:
        """The local ``time.perf_counter()`` at which every rank leaves one barrier together: the zero of
        a run's clock. Subtracting it from each rank's own monotonic clock puts all ranks on one time
        axis, whatever the host clocks say, up to the barrier's exit skew (well under a millisecond)."""
        self.barrier()
        return time.perf_counter()


@dataclass(frozen=True)
class _PendingMean:
    """An all-reduce in flight of ``flat``, to be copied back into ``tensors`` (when it is a copy)."""

    work: object  # torch.distributed Work
    flat: torch.Tensor
    tensors: Sequence[torch.Tensor]

    def wait(self) -> None:
        self.work.wait()
        offset = 0
        for t in self.tensors:
            t.detach().copy_(self.flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


class _QuantizedMean:
    """The mean of an int8 or fp4 payload with fp32 accumulation, as torchft's ``allreduce_quantized``:
    each rank quantizes its payload in W chunks and sends chunk j to rank j (one all-to-all); rank j
    dequantizes the W copies of its chunk, sums them in fp32 in rank order, divides by W, quantizes that
    mean and all-gathers it, and every rank dequantizes every chunk. Each rank sends 2(W-1)/W of the
    quantized payload, as in a ring all-reduce of it (what the simulator charges). Every rank ends with
    the same values.

    The payload is quantized when the mean is made (a snapshot: training may go on), and the all-to-all
    started then unless ``start`` is False; ``exchange`` does the rest of the communication (on a
    background thread for an asynchronous sync, which then starts the all-to-all itself) and ``wait``
    writes the mean back into the tensors."""

    def __init__(self, dtype: str, tensors: Sequence[torch.Tensor], world: int, *, group=None,
                 start: bool = True):
        self.dtype, self.tensors, self.world, self.group = dtype, tensors, world, group
        x = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        self.numel = x.numel()
        self.chunk = -(-self.numel // (world * QUANT_BLOCK)) * QUANT_BLOCK  # whole blocks per rank
        x = torch.nn.functional.pad(x, (0, world * self.chunk - self.numel))
        self.send = torch.stack([quantize(part, dtype) for part in x.split(self.chunk)])
        self.received = torch.empty_like(self.send)
        self.work = self._all_to_all(async_op=True) if start else None
        self.mean: torch.Tensor | None = None

    def _all_to_all(self, async_op: bool):
        return dist.all_to_all_single(self.received, self.send, group=self.group, async_op=async_op)

    def exchange(self) -> None:
        if self.work is None:
            self._all_to_all(async_op=False)
        else:
            self.work.wait()
        total = torch.zeros(self.chunk, device=self.received.device)
        for copy in self.received:
            total += dequantize(copy, self.chunk, self.dtype)
        mine = quantize(total / self.world, self.dtype)
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine, group=self.group)
        self.mean = torch.cat([dequantize(g, self.chunk, self.dtype) for g in gathered])

    def wait(self) -> None:
        if self.mean is None:
            self.exchange()
        offset = 0
        for t in self.tensors:
            t.detach().copy_(self.mean[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


class _Background:
    """``fn`` on a daemon thread (a rank that dies must not wait for it), started after the job ``after``
    has finished so that jobs issue their collectives in the same order on every rank; ``result`` waits
    for it and raises what it raised."""

    def __init__(self, fn: Callable[[], object], *, after: _Background | None, device: torch.device):
        self.error: BaseException | None = None

        def run() -> None:
            try:
                if after is not None:
                    after.thread.join()
                if device.type == "cuda":  # the current device is per thread
                    torch.cuda.set_device(device)
                fn()
            except BaseException as err:  # handed to the caller by result()
                self.error = err

        self.thread = threading.Thread(target=run, name="palsgd-background-sync", daemon=True)
        self.thread.start()

    def result(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
