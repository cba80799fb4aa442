"""ClusterSpec: the machines, their links and how their speed varies. Units are in the names:
``_gbps`` is gigabits per second (network convention), ``_us`` microseconds, ``_s`` seconds."""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Literal

from .errors import check


@dataclass(frozen=True)
class LinkSpec:
    bandwidth_gbps: float = 100.0
    """Unidirectional bandwidth, Gbit/s. Intra-node: per accelerator (NVLink bus bandwidth).
    Inter-node: per node (all its NICs together). WAN: per group of nodes."""
    latency_us: float = 10.0
    """One-way latency of one hop, microseconds."""

    def __post_init__(self):
        check(self.bandwidth_gbps > 0, "bandwidth_gbps", self.bandwidth_gbps, "must be > 0")
        check(self.latency_us >= 0, "latency_us", self.latency_us, "must be >= 0")


@dataclass(frozen=True)
class WanSpec:
    groups: int = 1
    """Groups of nodes (datacenters) joined by the WAN; 1 means there is no WAN tier."""
    bandwidth_gbps: float = 10.0
    """Unidirectional WAN bandwidth of one group, Gbit/s."""
    latency_us: float = 5000.0
    """One-way WAN latency, microseconds."""

    def __post_init__(self):
        check(self.groups >= 1, "groups", self.groups, "must be >= 1")
        check(self.bandwidth_gbps > 0, "bandwidth_gbps", self.bandwidth_gbps, "must be > 0")
        check(self.latency_us >= 0, "latency_us", self.latency_us, "must be >= 0")


@dataclass(frozen=True)
class TransportSpec:
    """How a collective library turns link bandwidth and latency into time
    (``docs/model.md``, "All-reduce costs"; NCCL ``src/graph/tuning.cc``)."""

    kind: Literal["nccl", "gloo"] = "nccl"
    """``nccl``: GPU collectives; ``gloo``: TCP collectives on CPUs."""
    efficiency: float = 1.0
    """Fraction of line rate a large transfer reaches (TCP transports often reach <= 0.6)."""
    base_latency_us: float = 8.4
    """Fixed cost of launching one collective (NCCL ring/simple: 8.4 us)."""
    step_overhead_us: float = 0.0
    """Software cost added to every ring step (gloo on TCP: 200-400 us measured here)."""
    step_latency: Literal["one_way", "rtt"] = "one_way"
    """What one ring step waits for: one one-way latency (NCCL) or one round trip (gloo over TCP)."""
    window_bytes: int = 0
    """Bytes in flight per ring step; caps throughput at window / RTT on long links. 0: no cap."""
    segment_bytes: int = 0
    """Pipelining segment: latency overlaps transfer for messages of a few segments. 0: no pipelining."""
    ddp_bucket_efficiency: float = 1.0
    """Bandwidth one of DDP's gradient buckets gets, as a fraction of what a flat all-reduce of the same
    bytes gets (``docs/model.md``, "DDP's buckets"): its all-reduce runs beside the backward's kernels and
    starts as soon as the bucket is ready. 1: charged as a flat all-reduce. Fitted from a profiler trace
    by ``palsgd calibrate --from-trace``."""
    slow_start_after_idle: bool = False
    """TCP transports (gloo, NCCL's sockets): a link idle for longer than its RTO restarts from a smaller
    window and ramps up again (Linux ``net.ipv4.tcp_slow_start_after_idle = 1`` with CUBIC or Reno; not
    BBR; ``sim/tcp.py``). Off: every call gets the full rate from its first byte, as on RDMA or BBR."""
    initial_window_segments: int = 10
    """TCP's initial window, the floor of a restart (RFC 6928; Linux's ``TCP_INIT_CWND``)."""
    mss_bytes: int = 1448
    """TCP segment: 1448 B for a 1500 B MTU with timestamps, 8948 B for 9000 B jumbo frames."""
    rto_min_ms: float = 200.0
    """Minimum retransmission timeout (Linux ``TCP_RTO_MIN``; a route's ``rto_min``)."""
    queue_bytes: int = 0
    """The bottleneck's queue, which a loss-based window fills above the bandwidth-delay product before
    the link falls idle (the window then restarts from that, halved)."""

    def __post_init__(self):
        check(0 < self.efficiency <= 1, "efficiency", self.efficiency, "must be in (0, 1]")
        check(self.base_latency_us >= 0, "base_latency_us", self.base_latency_us, "must be >= 0")
        check(self.step_overhead_us >= 0, "step_overhead_us", self.step_overhead_us, "must be >= 0")
        check(self.window_bytes >= 0, "window_bytes", self.window_bytes, "must be >= 0")
        check(self.segment_bytes >= 0, "segment_bytes", self.segment_bytes, "must be >= 0")
        check(0 < self.ddp_bucket_efficiency <= 10, "ddp_bucket_efficiency", self.ddp_bucket_efficiency,
              "must be in (0, 10]")
        check(self.initial_window_segments >= 1, "initial_window_segments", self.initial_window_segments,
              "must be >= 1")
        check(self.mss_bytes >= 1, "mss_bytes", self.mss_bytes, "must be >= 1")
        check(self.rto_min_ms > 0, "rto_min_ms", self.rto_min_ms, "must be > 0")
        check(self.queue_bytes >= 0, "queue_bytes", self.queue_bytes, "must be >= 0")


@dataclass(frozen=True)
class ComputeSpec:
    """Per-accelerator speed: peak FLOP/s and utilisation, or times measured by ``palsgd calibrate``."""

    peak_tflops: float = 312.0
    """Dense peak in the training precision, TFLOP/s (A100 bf16: 312; H100 SXM bf16: 989)."""
    utilization: float = 0.4
    """Achieved fraction of peak (model FLOPs utilisation) in forward + backward."""
    memory_gbytes_per_s: float = 2039.0
    """Memory bandwidth, GB/s: optimizer, outer and pseudo-sync steps are memory-bound."""
    step_time_s: float = 0.0
    """Measured forward + backward of one optimizer step; overrides the FLOP estimate when > 0."""
    optimizer_time_s: float = 0.0
    """Measured inner optimizer step; overrides the memory-traffic estimate when > 0."""
    pseudo_sync_time_s: float = 0.0
    """Measured pseudo-sync step; overrides the memory-traffic estimate when > 0."""
    outer_step_time_s: float = 0.0
    """Measured outer step; overrides the memory-traffic estimate when > 0."""
    data_time_s: float = 0.0
    """Measured data loading per step that prefetching does not hide; overrides the workload's."""

    def __post_init__(self):
        check(self.peak_tflops > 0, "peak_tflops", self.peak_tflops, "must be > 0")
        check(0 < self.utilization <= 1, "utilization", self.utilization, "must be in (0, 1]")
        check(self.memory_gbytes_per_s > 0, "memory_gbytes_per_s", self.memory_gbytes_per_s, "must be > 0")
        for name in ("step_time_s", "optimizer_time_s", "pseudo_sync_time_s", "outer_step_time_s",
                     "data_time_s"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")


@dataclass(frozen=True)
class VariabilitySpec:
    """How step times vary; it meets the algorithms at their barriers."""

    jitter_cv: float = 0.0
    """Coefficient of variation of every step's compute time (log-normal, independent per worker)."""
    slow_workers: int = 0
    """Workers that are persistently slower (an older GPU generation, a throttled card)."""
    slow_factor: float = 1.0
    """Compute-time multiplier of the slow workers."""
    straggler_prob: float = 0.0
    """Chance, per worker and step, of a rare spike (OS noise, a page fault storm, a GC pause)."""
    straggler_factor: float = 1.0
    """Compute-time multiplier of a spiking step."""

    def __post_init__(self):
        check(self.jitter_cv >= 0, "jitter_cv", self.jitter_cv, "must be >= 0")
        check(self.slow_workers >= 0, "slow_workers", self.slow_workers, "must be >= 0")
        check(self.slow_factor >= 1, "slow_factor", self.slow_factor, "must be >= 1")
        check(0 <= self.straggler_prob <= 1, "straggler_prob", self.straggler_prob, "must be in [0, 1]")
        check(self.straggler_factor >= 1, "straggler_factor", self.straggler_factor, "must be >= 1")


@dataclass(frozen=True)
class FailureSpec:
    """Worker failures, for mean-time-between-failures what-ifs."""

    mtbf_s: float = 0.0
    """Mean time between failures of one worker, seconds (exponential); 0: workers never fail."""
    restart_s: float = 60.0
    """Time from a failure until the worker computes again (detect, restart, reload)."""
    policy: Literal["wait", "rejoin"] = "wait"
    """``wait``: everyone waits for the failed worker at the next barrier. ``rejoin`` (local methods
    only; DDP always waits): a sync goes on without it and it rejoins from the global model."""

    def __post_init__(self):
        check(self.mtbf_s >= 0, "mtbf_s", self.mtbf_s, "must be >= 0")
        check(self.restart_s >= 0, "restart_s", self.restart_s, "must be >= 0")


@dataclass(frozen=True)
class ClusterSpec:
    name: str = "custom"
    description: str = ""
    source: str = ""
    """Where the numbers come from (datasheets, papers, a calibration run)."""
    nodes: int = 1
    gpus_per_node: int = 1
    """Accelerators per node; one accelerator is one worker is one rank."""
    intra_node: LinkSpec = field(default_factory=lambda: LinkSpec(2400.0, 3.4))
    inter_node: LinkSpec = field(default_factory=lambda: LinkSpec(100.0, 14.0))
    wan: WanSpec = field(default_factory=WanSpec)
    transport: TransportSpec = field(default_factory=TransportSpec)
    allreduce: Literal["auto", "ring", "tree", "hierarchical"] = "auto"
    """All-reduce algorithm; ``auto`` takes the cheapest, as NCCL's tuner does."""
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    variability: VariabilitySpec = field(default_factory=VariabilitySpec)
    failures: FailureSpec = field(default_factory=FailureSpec)
    provenance: dict = field(default_factory=dict)
    """Where each figure comes from, ``{"inter_node.bandwidth_gbps": "measured: nccl-tests FILE ..."}``: each
    value starts with one of ``PROVENANCE_KINDS``. A figure set after the cluster file (experiment file,
    ``--set``, a sweep) is stamped ``given: <where>`` when loaded (``core.config``)."""

    def __post_init__(self):
        for key, value in self.provenance.items():
            check(key in figures(), f"provenance.{key}", key, "must name a cluster figure, e.g. inter_node.latency_us")
            check(isinstance(value, str) and value.split(":")[0] in PROVENANCE_KINDS, f"provenance.{key}", value,
                  f"must start with one of {', '.join(k + ':' for k in PROVENANCE_KINDS)}")
        check(self.nodes >= 1, "nodes", self.nodes, "must be >= 1")
        check(self.gpus_per_node >= 1, "gpus_per_node", self.gpus_per_node, "must be >= 1")
        check(self.nodes % self.wan.groups == 0, "wan.groups", self.wan.groups,
              f"must divide cluster.nodes ({self.nodes})")
        check(self.variability.slow_workers <= self.workers, "variability.slow_workers",
              self.variability.slow_workers, f"must be <= the number of workers ({self.workers})")

    @property
    def workers(self) -> int:
        return self.nodes * self.gpus_per_node


PROVENANCE_KINDS = ("measured", "published", "assumed", "given")
"""measured: fitted to measurements (nccl-tests file, trace, ``palsgd calibrate``); published: a datasheet or a
paper's figure; assumed: our choice, to be replaced by a measurement; given: set by the user, source unstated."""
_PROSE = ("name", "description", "source", "provenance")


@functools.cache
def figures(cls: type = ClusterSpec, prefix: str = "") -> tuple[str, ...]:
    """Dotted names of every number or choice of a cluster (``inter_node.bandwidth_gbps``, ``nodes``, ...)."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in _PROSE:
            continue
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            out += figures(sub, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return tuple(out)


def provenance_lines(provenance: dict[str, str]) -> list[str]:
    """The figures grouped by where they come from, measured first: one line per distinct provenance."""
    groups: dict[str, list[str]] = {}
    for key in figures():
        if key in provenance:
            groups.setdefault(provenance[key], []).append(key)
    order = {k: i for i, k in enumerate(PROVENANCE_KINDS)}
    return [f"{why.split(':')[0]}: {', '.join(keys)} ({why.partition(':')[2].strip()})"
            for why, keys in sorted(groups.items(), key=lambda g: order.get(g[0].split(":")[0], 9))]
