"""Per-step timers that become step-table rows (``core/schema.py``: one row per worker, step and phase).

Clock: seconds since ``zero``, the moment every rank left one barrier together (``TorchComm.common_clock``),
read from each rank's own monotonic clock, so all ranks share one time axis.

On a GPU a phase is bracketed by CUDA events and resolved at the end of the step against the host time
at which the step's first event was recorded (after a synchronize), so kernels are timed where they run,
not where the host launched them. On CPU the host clock is the truth.

DDP's overlapped all-reduce (``allreduce_hidden``) is timed by a communication hook: each bucket's
all-reduce is stamped when the hook launches it and when its future completes. The last bucket is
launched when the last gradient is ready, i.e. when backward *compute* ends; so

    compute           = [forward start, last bucket launched]
    allreduce_hidden  = [first bucket launched, last bucket launched]   (overlapped; costs no wall-clock)
    allreduce         = [last bucket launched, backward returned]        (what backward could not hide)

The exposed part also holds any wait for a slower rank: DDP has no separate barrier to measure it with.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ..core.schema import PHASES


class StepTimer:
    """Collects (phase, start_s, end_s, bytes) of the current step; ``end_step`` turns them into rows."""

    def __init__(self, *, algorithm: str, worker: int, zero: float, device: torch.device, run: int = 0,
                 offset_s: float = 0.0):
        self.algorithm, self.worker, self.run = algorithm, worker, run
        self.zero = zero - offset_s  # a resumed run goes on from where the checkpoint's clock stood
        self.cuda = device.type == "cuda"
        self.rows: list[tuple] = []
        self._step = -1
        self.last_end_s = 0.0
        self._pending: list[tuple] = []  # (phase, start, end, bytes) with floats or CUDA events
        self._anchor: tuple[float, object] | None = None

    def now(self) -> float:
        return time.perf_counter() - self.zero

    def begin_step(self, step: int) -> None:
        self._step = step
        self._pending = []
        if self.cuda:
            torch.cuda.synchronize()
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._anchor = (self.now(), event)

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self.now()

    @contextmanager
    def phase(self, name: str, nbytes: float = 0.0):
        """Time the body as ``name``; ``nbytes`` may also be set later via the yielded list."""
        if name not in PHASES:
            raise ValueError(name)
        box = [nbytes]
        start = self._mark()
        try:
            yield box
        finally:
            self._pending.append((name, start, self._mark(), box[0]))

    def add(self, name: str, start_s: float, end_s: float, nbytes: float = 0.0) -> None:
        """A phase timed by the host clock elsewhere (DDP comm-hook stamps)."""
        self._pending.append((name, start_s, max(start_s, end_s), nbytes))

    def end_step(self) -> float:
        """Resolve the step's phases into rows; return the step's end time."""
        if self.cuda:
            torch.cuda.synchronize()
        end = 0.0
        for name, start, stop, nbytes in self._pending:
            s, e = self._resolve(start), self._resolve(stop)
            self.rows.append(("real", self.algorithm, self.run, self.worker, self._step, name, s, e,
                              float(nbytes)))
            end = max(end, e)
        self._pending = []
        self.last_end_s = end
        return end

    def _resolve(self, mark) -> float:
        if isinstance(mark, float):
            return mark
        t0, anchor = self._anchor
        return t0 + anchor.elapsed_time(mark) / 1e3


class DDPCommTimer:
    """State of a DDP communication hook that averages gradient buckets and stamps each one's
    launch and completion on the step clock (see the module docstring). ``payload`` casts the bucket
    (bf16/fp16 compression, as ``bf16_compress_hook`` does) before the all-reduce. ``group``: the DDP's
    process group (a replica group's members), None for all ranks."""

    def __init__(self, timer: StepTimer, payload: torch.dtype, group=None):
        self.timer = timer
        self.payload = payload
        self.group = group
        self.launched: list[float] = []
        self.finished: list[float] = []
        self.bytes = 0

    def reset(self) -> None:
        self.launched, self.finished, self.bytes = [], [], 0


def ddp_timed_hook(state: DDPCommTimer, bucket):
    """DDP comm hook: mean all-reduce of one gradient bucket, timed (PyTorch ``allreduce_hook`` semantics:
    divide by the world size first, then sum)."""
    buf = bucket.buffer()
    state.launched.append(state.timer.now())
    send = buf if state.payload == buf.dtype else buf.to(state.payload)
    send.div_(dist.get_world_size(state.group))
    state.bytes += send.numel() * send.element_size()
    fut = dist.all_reduce(send, async_op=True, group=state.group).get_future()

    def done(f):
        result = f.value()[0]
        state.finished.append(state.timer.now())
        if result.dtype != buf.dtype:
            buf.copy_(result)
            return buf
        return result

    return fut.then(done)
