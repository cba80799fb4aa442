"""What one rank's PyTorch profiler trace says about its DDP steps.

Per ``ProfilerStep#N`` (the CPU range ``torch.profiler``'s ``prof.step()`` marks), from the GPU events
launched inside it (a kernel belongs to the step whose range holds the ``cudaLaunch*`` call with the same
``correlation``, so work that runs after the CPU moved on still counts for its step):

* compute: the union of every kernel, copy and memset that is not a NCCL kernel and was not launched inside
  an ``Optimizer.step#`` range (forward, backward, loss);
* optimizer: the union of what ``Optimizer.step#`` launched, less its overlap with compute;
* DDP's buckets: NCCL all-reduce kernels, each with its bytes (the kernel's ``In msg nelems`` and ``dtype``
  arguments, or the ``Input Dims`` of the ``nccl:all_reduce`` / ``record_param_comms`` op that launched it,
  recorded with ``record_shapes=True``), duration and start;
* DDP's buffer broadcasts: NCCL broadcast kernels; other NCCL kernels (send/receive, all-to-all) are other
  communication, measured but not DDP's;
* exposed: the part of a union not overlapped by compute or optimizer kernels.

The world size comes from ``distributedInfo`` and the GPUs of a node from ``deviceProperties``. A file that
cannot be used raises ConfigError with one line naming it and what is missing.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import ConfigError
from . import kineto_stream

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
COMM_OPS = ("nccl:all_reduce", "nccl:broadcast", "record_param_comms", "c10d::allreduce_", "c10d::broadcast_")
_US = 1e-6


@dataclass(frozen=True)
class Collective:
    kind: str  # "allreduce", "broadcast" or "other"
    nbytes: float  # 0 when the trace does not say
    start_s: float  # from the step's start
    duration_s: float


@dataclass(frozen=True)
class Step:
    name: str
    step_s: float  # the ProfilerStep range
    compute_s: float
    optimizer_s: float
    collectives: tuple[Collective, ...]
    allreduce_exposed_s: float
    broadcast_exposed_s: float
    other_comm_exposed_s: float

    def of(self, kind: str) -> list[Collective]:
        return [c for c in self.collectives if c.kind == kind]

    @property
    def allreduce_s(self) -> float:
        return sum(c.duration_s for c in self.of("allreduce"))

    @property
    def rest_s(self) -> float:
        """What the step spent outside compute, optimizer and exposed DDP communication: host overhead, input,
        other communication; measured, never predicted."""
        return self.step_s - self.compute_s - self.optimizer_s - self.allreduce_exposed_s - self.broadcast_exposed_s


@dataclass(frozen=True)
class Trace:
    path: Path
    rank: int
    world_size: int
    backend: str
    gpu: str
    gpus_on_node: int  # entries of deviceProperties (0: not recorded)
    steps: tuple[Step, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".gz").removesuffix(".json")


def trace_files(paths: list[Path]) -> list[Path]:
    """The files given, with a folder replaced by its ``*.json`` and ``*.json.gz`` files, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.json"), *p.glob("*.json.gz")])
            if not found:
                raise ConfigError("holds no *.json or *.json.gz trace", source=str(p))
            out.extend(found)
        elif not p.is_file():
            raise ConfigError("no such file" if not p.exists() else "is not a regular file or a folder of traces",
                              source=str(p))
        else:
            out.append(p)
    return out


def load(path: Path) -> Trace:
    """Read one rank's trace (``.json`` or ``.json.gz``) and measure its steps."""
    path = Path(path)
    events = _Events()
    meta = kineto_stream.read(path, events.add)
    dist = meta.get("distributedInfo") if isinstance(meta.get("distributedInfo"), dict) else {}
    devices = meta.get("deviceProperties") if isinstance(meta.get("deviceProperties"), list) else []

    def missing(what: str) -> ConfigError:
        return ConfigError(what, source=str(path))

    if not events.gpu:
        raise missing("has no GPU kernels (a CPU-only trace?): profile with ProfilerActivity.CUDA")
    if not events.steps:
        raise missing("has no ProfilerStep#N ranges: profile with a schedule and call prof.step() every step")
    world = int(dist.get("world_size") or events.group_size or 0)
    if world < 1:
        raise missing("has no distributedInfo.world_size: not a trace of a distributed run")
    steps = tuple(s for s in events.measure() if s is not None)
    if not steps:
        raise missing("has no GPU work inside its ProfilerStep#N ranges: the trace looks truncated")
    gpu = str(devices[0].get("name", "")) if devices and isinstance(devices[0], dict) else ""
    return Trace(path, int(dist.get("rank", 0) or 0), world, str(dist.get("backend", "")), gpu, len(devices),
                 steps)


class _Events:
    """What ``load`` keeps of the stream: compact tuples, not the events."""

    def __init__(self):
        self.steps: list[tuple[str, float, float]] = []  # name, start, end (us)
        self.optimizer: list[tuple[float, float]] = []
        self.comm_ops: dict[object, list[tuple[float, float, float]]] = defaultdict(list)  # tid -> (ts, end, bytes)
        self.launch: dict[object, tuple[float, object]] = {}  # correlation -> (ts, tid)
        self.gpu: list[tuple[float, float, object, str, float]] = []  # ts, end, correlation, kind, bytes
        self.group_size = 0
        self.op_starts: dict[object, list[float]] = {}

    def add(self, e: dict) -> None:
        if e.get("ph") != "X":
            return
        cat, name, args = e.get("cat"), str(e.get("name", "")), e.get("args") or {}
        ts, dur = float(e.get("ts", 0.0)), float(e.get("dur", 0.0))
        if cat in GPU_CATEGORIES:
            kind = _nccl_kind(name, args) if cat == "kernel" else ""
            self.gpu.append((ts, ts + dur, args.get("correlation"), kind, _nbytes(args)))
            self.group_size = max(self.group_size, int(args.get("Group size", 0) or 0))
        elif cat in LAUNCH_CATEGORIES and "correlation" in args:
            self.launch[args["correlation"]] = (ts, e.get("tid"))
        elif cat == "gpu_user_annotation":
            return  # the GPU's copy of the CPU ranges
        elif name.startswith("ProfilerStep#"):
            self.steps.append((name, ts, ts + dur))
        elif name.startswith("Optimizer.step#"):
            self.optimizer.append((ts, ts + dur))
        elif name in COMM_OPS and (nbytes := _nbytes(args)):
            self.comm_ops[e.get("tid")].append((ts, ts + dur, nbytes))

    def measure(self) -> list[Step | None]:
        steps = sorted(self.steps, key=lambda s: s[1])
        starts = [s[1] for s in steps]
        optimizer = _union(self.optimizer)
        optimizer_starts = [a for a, _ in optimizer]
        for ops in self.comm_ops.values():
            ops.sort()
        self.op_starts = {tid: [a for a, _, _ in ops] for tid, ops in self.comm_ops.items()}
        per_step: list[list[tuple]] = [[] for _ in steps]
        for ts, end, corr, kind, nbytes in self.gpu:
            launch_ts, tid = self.launch.get(corr, (ts, None))
            i = bisect.bisect_right(starts, launch_ts) - 1
            if i < 0 or launch_ts >= steps[i][2]:
                continue
            if kind and not nbytes:
                nbytes = self._op_bytes(tid, launch_ts)
            j = bisect.bisect_right(optimizer_starts, launch_ts) - 1
            in_optimizer = j >= 0 and launch_ts < optimizer[j][1]
            per_step[i].append((ts, end, kind or ("optimizer" if in_optimizer else "compute"), nbytes))
        return [_step(name, start, end, work) if work else None
                for (name, start, end), work in zip(steps, per_step, strict=True)]

    def _op_bytes(self, tid: object, ts: float) -> float:
        """Bytes of the innermost communication op on the launching thread that holds ``ts`` (ops nest a few
        deep: ``c10d::allreduce_`` > ``record_param_comms`` > ``nccl:all_reduce``)."""
        ops = self.comm_ops.get(tid, [])
        i = bisect.bisect_right(self.op_starts.get(tid, []), ts) - 1
        for start, end, nbytes in reversed(ops[max(i - 7, 0):i + 1]):
            if start <= ts <= end:
                return nbytes
        return 0.0


def _step(name: str, start: float, end: float, work: list[tuple]) -> Step:
    def spans(kind: str) -> list[tuple[float, float]]:
        return _union([(a, b) for a, b, k, _ in work if k == kind])

    compute = spans("compute")
    busy = _union(compute + spans("optimizer"))
    collectives = tuple(Collective(k, n, (a - start) * _US, (b - a) * _US)
                        for a, b, k, n in sorted(work) if k in ("allreduce", "broadcast", "other"))
    return Step(name, (end - start) * _US, _length(compute) * _US, (_length(busy) - _length(compute)) * _US,
                collectives, _exposed(spans("allreduce"), busy), _exposed(spans("broadcast"), busy),
                _exposed(spans("other"), busy))


def _nccl_kind(name: str, args: dict) -> str:
    if "nccl" not in name.lower():
        return ""
    what = (str(args.get("Collective name", "")) + name).lower().replace("_", "")
    return "allreduce" if "allreduce" in what else "broadcast" if "broadcast" in what else "other"


def _elem_bytes(dtype: object) -> int:
    """Bytes per element of a trace's dtype name (kernel ``dtype``: ``Float``, ``BFloat16``; op ``Input type``:
    ``float``, ``c10::Half``, ``long int``)."""
    t = str(dtype).lower()
    for words, size in ((("bfloat16", "half", "float16", "short"), 2), (("double", "long", "int64", "float64"), 8),
                        (("float", "int"), 4), (("char", "bool", "byte", "int8", "uint8"), 1)):
        if any(w in t for w in words):
            return size
    return 0


def _nbytes(args: dict) -> float:
    """Bytes of a collective from an event's arguments: ``In msg nelems`` x ``dtype``, or the first input's
    ``Input Dims`` x ``Input type``; 0 when neither is there."""
    if "In msg nelems" in args:
        return float(args["In msg nelems"]) * _elem_bytes(args.get("dtype", ""))
    dims, types = args.get("Input Dims"), args.get("Input type")
    if isinstance(dims, list) and dims and isinstance(dims[0], list) and dims[0] and isinstance(types, list):
        return float(math.prod(dims[0])) * _elem_bytes(types[0] if types else "")
    return 0.0


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in spans)


def _exposed(spans: list[tuple[float, float]], busy: list[tuple[float, float]]) -> float:
    """Seconds of the (disjoint, sorted) ``spans`` not covered by the (disjoint, sorted) ``busy``."""
    covered, j = 0.0, 0
    for a, b in spans:
        while j < len(busy) and busy[j][1] <= a:
            j += 1
        k = j
        while k < len(busy) and busy[k][0] < b:
            covered += min(b, busy[k][1]) - max(a, busy[k][0])
            k += 1
    return (_length(spans) - covered) * _US
