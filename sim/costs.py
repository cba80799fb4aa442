"""Cost of one step, per worker, from the workload and the cluster (``docs/model.md``): c, o, u, m,
data, the all-reduce calls of a sync, the DDP gradient buckets and DDP's broadcast of the buffers (all
laid out by ``core/buckets.py``, exactly as the real harness makes them). With replica groups
(``core/groups.py``) a sync is charged on one group position's ring and a local step's DDP on the
group's tiers.

Every cost is a formula over the specs unless ``palsgd calibrate`` measured it (ComputeSpec ``*_time_s``
fields > 0 override the formulas).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core import buckets, compute, groups, sparse
from ..core.algorithms import FACTS
from ..core.cluster import ClusterSpec
from ..core.config import AlgorithmSpec, Experiment
from ..core.workload import WorkloadSpec
from . import collectives, tcp

QUANTIZE_PASSES = 3.0
"""Memory passes over 4n bytes that a quantized mean of n elements costs (``real/dist._QuantizedMean``):
quantize the payload (read 4n), dequantize and sum the W received copies of one's chunk (W·4n/W
written), dequantize the all-gathered mean (4n written); the re-quantized chunk (4n/W) is left out."""

FORWARD_SHARE = 1 / 3
"""Forward ≈ 1/3 of forward + backward (backward ≈ 2x forward: Kaplan et al. 2020, 6N = 2N + 4N)."""


@dataclass(frozen=True)
class StepCosts:
    """Seconds per worker for one of each kind of step, before variability."""

    compute_s: float  # c: forward + backward of one optimizer step (all micro-batches)
    optimizer_s: float  # o
    outer_s: float  # u
    pseudo_sync_s: float  # m
    data_s: float  # data loading not hidden by prefetching
    payload_bytes: float  # S: what a sync sends
    sync_s: float  # barrier + Σ T_AR of the sync's calls (core/buckets.sync_call_bytes)
    barrier_s: float  # the barrier's own latency, part of sync_s; timed as waiting, as the real side does
    sync_bytes: float  # bytes one worker sends in a sync
    bucket_s: np.ndarray  # DDP: all-reduce time of each bucket, in the order they become ready
    bucket_ready: np.ndarray  # DDP: when each bucket is ready, as a fraction of c from step start
    bucket_bytes_sent: float  # DDP: bytes one worker sends per step
    warmup_extra_s: float  # blocking all-reduce of the optimizer state in a warm-up step
    warmup_extra_bytes: float
    buffer_broadcast_s: float  # DDP: blocking broadcast of the buffers (BatchNorm) before a step's forward
    buffer_broadcast_bytes: float
    group: GroupCosts | None = None  # replica groups of more than one worker: their DDP steps


@dataclass(frozen=True)
class GroupCosts:
    """A replica group's DDP step (``core/groups.py``): DDP's buckets and buffer broadcast, charged on the
    tiers the group spans (``groups.group_cluster``), as ``StepCosts`` charges the warm-up's on all."""

    size: int  # workers per group
    bucket_s: np.ndarray
    bucket_bytes_sent: float
    buffer_broadcast_s: float
    buffer_broadcast_bytes: float


def step_costs(exp: Experiment, algo: AlgorithmSpec) -> StepCosts:
    wl, comp, cluster = exp.workload, exp.cluster.compute, exp.cluster
    size = exp.group_size(algo)
    sync_cluster = groups.sync_cluster(cluster, size)  # the cluster itself without groups
    # c from FLOPs, o, u and m memory-bound passes over 4N bytes, or what calibration measured: the same
    # functions the real harness's emulated accelerators sleep by (core/compute.py).
    c, o = compute.step_compute_s(wl, comp), compute.optimizer_step_s(wl, comp)
    u, m = compute.outer_step_s(wl, comp), compute.pseudo_sync_s(wl, comp)
    data = comp.data_time_s or wl.data_time_s
    elem = algo.payload_bytes_per_param
    params, buffers = tensor_numels(wl)
    # What a dense all-reduce of the parameters' size sends; SparseLoCo's sync sends its sparse message.
    dense = float(buckets.PAYLOAD_ELEM_BYTES[algo.dense_payload_dtype] * sum(params))
    payload = dense
    if FACTS[algo.name].sparse:
        payload = float(sparse.sync_bytes(flat_numels(wl), algo.topk_density, algo.payload_dtype))
        sync_s, sync_bytes = sparse_sync(sync_cluster, payload, buffers)
    else:
        calls = buckets.sync_call_bytes(flat_numels(wl), buffers, elem, per_tensor=algo.per_tensor_allreduce)
        sync_s, sync_bytes = _sync(sync_cluster, calls)
        sync_s += quantize_time(exp, algo, sum(params) + sum(buffers))
    if algo.is_local:  # the link was silent for the H steps (and outer step) since the last sync
        idle_s = algo.sync_every * (c + o + data) + (u if FACTS[algo.name].outer_step else 0.0)
        sync_s += tcp.idle_restart_s(sync_cluster, sync_bytes, idle_s)
    ddp_elem = buckets.ddp_elem_bytes(algo.dense_payload_dtype)
    sizes = np.array(buckets.ddp_bucket_bytes(params, algo.bucket_mib, algo.first_bucket_mib, ddp_elem))
    ready = bucket_ready(sizes, wl.grad_accum)
    bucket_s = ddp_idle_restart(cluster, bucket_times(cluster, sizes), sizes, c, o + data, ready)
    # The real warm-up all-reduces the inner optimizer state in one flat call (real/algorithms/base.py).
    extra = exp.train.optimizer_state_tensors * dense if algo.warmup_syncs_optimizer_state and algo.is_local else 0
    broadcast_s, broadcast_bytes = buffer_broadcast(cluster, buffer_broadcast_calls(wl))
    return StepCosts(
        compute_s=c, optimizer_s=o, outer_s=u, pseudo_sync_s=m, data_s=data, payload_bytes=payload,
        sync_s=sync_s, sync_bytes=sync_bytes, barrier_s=collectives.barrier_time(sync_cluster), bucket_s=bucket_s,
        bucket_ready=ready,
        bucket_bytes_sent=sum(collectives.bytes_sent(cluster, b) for b in sizes),
        warmup_extra_s=collectives.allreduce_time(cluster, extra) if extra else 0.0,
        warmup_extra_bytes=collectives.bytes_sent(cluster, extra) if extra else 0.0,
        buffer_broadcast_s=broadcast_s, buffer_broadcast_bytes=broadcast_bytes,
        group=group_costs(exp, size, sizes) if size > 1 else None,
    )


def ddp_idle_restart(cluster: ClusterSpec, bucket_s: np.ndarray, sizes: np.ndarray, c: float, between_s: float,
                     ready: np.ndarray) -> np.ndarray:
    """DDP's bucket times with TCP's restart after idle (``sim/tcp.py``) charged to a step's first bucket:
    its links were silent from the last bucket of the step before (roughly at the backward's end) through
    the optimizer step, the data and the forward until that bucket was ready; the ramp goes on over the
    step's other buckets, sent back to back."""
    if not len(bucket_s) or not cluster.transport.slow_start_after_idle:
        return bucket_s
    idle_s = between_s + float(ready[0]) * c
    sent = sum(collectives.bytes_sent(cluster, b) for b in sizes)
    return np.concatenate([[bucket_s[0] + tcp.idle_restart_s(cluster, sent, idle_s)], bucket_s[1:]])


def group_costs(exp: Experiment, size: int, sizes: np.ndarray) -> GroupCosts:
    """DDP inside a group of ``size`` workers: the same buckets, on the group's own tiers."""
    cluster = groups.group_cluster(exp.cluster, size)
    broadcast_s, broadcast_bytes = buffer_broadcast(cluster, buffer_broadcast_calls(exp.workload))
    return GroupCosts(size, bucket_times(cluster, sizes),
                      sum(collectives.bytes_sent(cluster, b) for b in sizes), broadcast_s, broadcast_bytes)


def fragment_syncs(exp: Experiment, algo: AlgorithmSpec) -> list[tuple[float, float, float]]:
    """Streaming DiLoCo, per fragment (``core.buckets.fragment_bounds``): (seconds of its sync's calls,
    bytes one worker sends, its share of the parameters, which scales u). The floating-point buffers
    are averaged with the last fragment. With tau = 0 the sync is blocking and enters through a barrier
    as every other sync (``_sync``); with tau > 0 the all-reduce is started asynchronously, without one:
    Σ T_AR of its calls."""
    params, buffers = flat_numels(exp.workload), tensor_numels(exp.workload)[1]
    bounds = buckets.fragment_bounds(params, algo.fragments)
    elem = algo.payload_bytes_per_param
    cluster = groups.sync_cluster(exp.cluster, exp.group_size(algo))
    out = []
    for i, (first, end) in enumerate(bounds):
        own = params[first:end]
        calls = buckets.sync_call_bytes(own, buffers if i == len(bounds) - 1 else [], elem,
                                        per_tensor=algo.per_tensor_allreduce)
        if algo.fragment_sync_delay == 0:
            sync_s, sync_bytes = _sync(cluster, calls)
        else:
            sync_s = sum(collectives.allreduce_time(cluster, b) for b in calls)
            sync_bytes = sum(collectives.bytes_sent(cluster, b) for b in calls)
        sync_s += quantize_time(exp, algo, sum(own) + (sum(buffers) if i == len(bounds) - 1 else 0))
        out.append((sync_s, sync_bytes, sum(own) / sum(params)))
    return out


def sparse_sync(cluster: ClusterSpec, message_bytes: float, buffer_numels: Sequence[float]) -> tuple[float, float]:
    """A SparseLoCo sync: the barrier, one all-gather of every worker's sparse message
    (``core.sparse.sync_bytes``), then the floating-point buffers all-reduced in fp32 as by the other
    local algorithms (none for a model without BatchNorm). Seconds and bytes one worker sends."""
    buffer_calls = buckets.sync_call_bytes([], buffer_numels, buckets.PARAM_BYTES, per_tensor=False)
    seconds = (collectives.barrier_time(cluster) + collectives.allgather_time(cluster, message_bytes)
               + sum(collectives.allreduce_time(cluster, b) for b in buffer_calls))
    sent = (collectives.allgather_bytes_sent(cluster, message_bytes)
            + sum(collectives.bytes_sent(cluster, b) for b in buffer_calls))
    return seconds, sent


def quantize_time(exp: Experiment, algo: AlgorithmSpec, numel: float) -> float:
    """Quantizing and dequantizing a sync of ``numel`` elements with an int8 or fp4 payload (0 for the
    others): q = QUANTIZE_PASSES · 4·numel / memory bandwidth, memory-bound elementwise passes like u
    and m, as fused GPU kernels (torchft's triton ones) run. ``benchmarks/bench_quantize.py`` measures
    the real harness's torch emulation next to this formula: on a CPU the emulation is compute-bound
    and much slower, so a CPU run's quantize time is not what this predicts."""
    if algo.payload_dtype not in buckets.QUANTIZED:
        return 0.0
    comp = exp.cluster.compute
    return QUANTIZE_PASSES * 4.0 * numel / (comp.memory_gbytes_per_s * 1e9)


def tensor_numels(wl: WorkloadSpec) -> tuple[Sequence[float], Sequence[float]]:
    """Elements of each parameter tensor and each floating-point buffer, in registration order: the
    built model's (``core/model_facts.py``), or for a custom model ``tensors`` equal tensors and no
    buffers."""
    facts = wl.facts
    if facts is not None:
        return facts.param_numels, facts.buffer_numels
    return [wl.params / wl.tensors] * wl.tensors, []


def flat_numels(wl: WorkloadSpec) -> Sequence[float]:
    """Elements of each parameter tensor in the flat buffer's order (``core.buckets.flat_order``): what a
    sync sends, and what Streaming DiLoCo cuts into fragments. A custom model's tensors are all equal."""
    facts = wl.facts
    params = tensor_numels(wl)[0]
    return params if facts is None else [params[i] for i in buckets.flat_order(facts.param_ndims)]


def buffer_broadcast_calls(wl: WorkloadSpec) -> list[float]:
    """Bytes of each broadcast DDP makes of the model's buffers before a step's forward
    (``core.buckets.ddp_buffer_broadcast_bytes``); none for a custom model, which has no buffers."""
    facts = wl.facts
    return [] if facts is None else buckets.ddp_buffer_broadcast_bytes(facts.buffer_numels, facts.int_buffer_numels)


def buffer_broadcast(cluster: ClusterSpec, calls: list[float]) -> tuple[float, float]:
    """Seconds and bytes one worker sends of DDP's buffer broadcasts, blocking, before the forward.

    torch's ``broadcast_coalesced`` keeps two broadcasts in flight (torch 2.13 ``c10d/comm.cpp``):
    gloo's two threads run them at once, charged as one broadcast of their bytes (as ``bucket_times``
    charges concurrent buckets); nccl runs them one after the other on its stream."""
    if cluster.transport.kind == "gloo" and calls:
        seconds = collectives.broadcast_time(cluster, sum(calls))
    else:
        seconds = sum(collectives.broadcast_time(cluster, b) for b in calls)
    return seconds, sum(collectives.broadcast_bytes_sent(cluster, b) for b in calls)


def bucket_ready(sizes: np.ndarray, grad_accum: int) -> np.ndarray:
    """When each DDP bucket is ready, as a fraction of c from the start of compute.

    The G = ``grad_accum`` micro-batches cost c/G each, and all but the last run under ``no_sync``
    (real/algorithms/base.py), so no bucket is ready before the last micro-batch's backward. Within it,
    gradients fill the buckets in reverse layer order at a constant rate of bytes, so bucket b is ready
    after that micro-batch's forward plus the share of its backward that produced the bytes up to b's end:
    ((G - 1) + F + (1 - F)·done_b) / G, with F the forward's share of a forward + backward."""
    total = sizes.sum()
    if not total:
        return np.zeros(len(sizes))
    done = np.cumsum(sizes) / total
    return ((grad_accum - 1) + FORWARD_SHARE + (1 - FORWARD_SHARE) * done) / grad_accum


def _sync(cluster: ClusterSpec, calls: list[float]) -> tuple[float, float]:
    """One sync: a barrier, then its all-reduce calls one after another, each paying the full latency
    (one flat buffer of parameters and one of buffers, or one call per tensor as the released GPT code).
    The real harness enters every sync through a barrier (a one-element all-reduce) so that it can time
    the wait for the slowest worker apart from the transfer; the barrier's latency is paid too."""
    return (collectives.barrier_time(cluster) + sum(collectives.allreduce_time(cluster, b) for b in calls),
            sum(collectives.bytes_sent(cluster, b) for b in calls))


def bucket_times(cluster: ClusterSpec, sizes: np.ndarray) -> np.ndarray:
    """Each DDP bucket's share of the communication time, for ``ddp_comm_end``'s tail sums.

    nccl runs DDP's all-reduces one after another on one stream: T_b = T_AR(S_b), and the buckets still
    to go after b take Σ_{j>=b} T_AR(S_j), paying the latency once per bucket.
    gloo runs them at the same time: ProcessGroupGloo works its queue with 2 threads by default
    (``ProcessGroupGloo._Options()._threads``), so a bucket does not wait for the previous one and
    the latencies overlap while the link is shared. We charge the buckets still to go as one all-reduce
    of their bytes, T_AR(Σ_{j>=b} S_j), by giving bucket b the marginal time
    T_AR(Σ_{j>=b} S_j) - T_AR(Σ_{j>b} S_j). Measured (docs/validation.md): gpt-tiny, 1.75 MB of gradients
    in a 1.06 MB and a 0.69 MB bucket, 4 ranks at 100 Mbit/s, 10 ms: DDP's communication from the first
    launch took 262 ms; the calibration's all-reduce of 1.75 MB takes 264 ms, the two buckets one after
    the other would take about 377 ms.
    (With more than two buckets in flight gloo's two threads would serialise some latencies; the
    models here have at most two.)"""
    cluster = ddp_bucket_cluster(cluster)
    if cluster.transport.kind != "gloo" or len(sizes) < 2:
        return np.array([collectives.allreduce_time(cluster, b) for b in sizes])
    tails = np.cumsum(sizes[::-1])[::-1]  # Σ_{j>=b} S_j
    t = np.array([collectives.allreduce_time(cluster, s) for s in tails] + [0.0])
    return t[:-1] - t[1:]


def ddp_bucket_cluster(cluster: ClusterSpec) -> ClusterSpec:
    """The cluster as DDP's bucket all-reduces see it: every link's bandwidth times the transport's
    ``ddp_bucket_efficiency`` (latencies, window and per-call costs unchanged). A bucket's all-reduce runs
    while the backward's kernels hold the GPU and memory, and is launched bucket by bucket as the
    gradients come; on the traces in ``docs/validation.md`` it ran slower than the flat all-reduce of the
    same bytes. Efficiency 1 returns the cluster itself."""
    f = cluster.transport.ddp_bucket_efficiency
    if f == 1.0:
        return cluster
    def scaled(link):
        return dataclasses.replace(link, bandwidth_gbps=link.bandwidth_gbps * f)
    return dataclasses.replace(cluster, intra_node=scaled(cluster.intra_node), inter_node=scaled(cluster.inter_node),
                               wan=scaled(cluster.wan))


def ddp_comm_end(cmax: np.ndarray, ready: np.ndarray, bucket_s: np.ndarray) -> np.ndarray:
    """When the last bucket's all-reduce ends, per step, measured from the start of compute.

    Buckets are issued in order (one stream on nccl; gloo's concurrency is folded into T_b by
    ``bucket_times``), and a bucket's collective starts only when every worker has it ready, i.e. at
    ready_b · c_max. With start_b = max(ready_b·c_max, end_{b-1}) and end_b = start_b + T_b, the max-plus
    recurrence unrolls to end_B = max_b (ready_b·c_max + Σ_{j>=b} T_j). ``cmax``: [steps].
    """
    if len(bucket_s) == 0:
        return cmax.copy()
    tail = np.cumsum(bucket_s[::-1])[::-1]  # Σ_{j>=b} T_j
    return (cmax[:, None] * ready[None, :] + tail[None, :]).max(axis=1)


def ddp_comm_end_one(offset: np.ndarray, c: np.ndarray, ready: np.ndarray, bucket_s: np.ndarray) -> float:
    """``ddp_comm_end`` for one step where workers start compute at different ``offset``s (a worker
    restarting after a failure): bucket b is ready everywhere at max_k(offset_k + ready_b·c_k)."""
    if len(bucket_s) == 0:
        return float((offset + c).max())
    tail = np.cumsum(bucket_s[::-1])[::-1]
    return float(((offset[:, None] + c[:, None] * ready[None, :]).max(axis=0) + tail).max())
