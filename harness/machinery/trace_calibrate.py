"""`palsgd calibrate --from-trace`: a cluster profile from PyTorch profiler traces of a DDP job.

What a trace measures (``harness/kineto_trace.py``): per step the GPU's compute and optimizer time, and each
of DDP's bucket all-reduces with its bytes and duration as it ran, beside the backward. What it cannot
measure is a flat all-reduce of the same bytes with nothing else on the GPU. Hence two fits:

* with ``--cluster BASE`` (a profile whose flat all-reduce was measured: ``palsgd calibrate`` on the machines,
  nccl-tests, a preset), BASE's links and transport are kept and ``transport.ddp_bucket_efficiency`` is the
  factor on their bandwidth at which the simulator's bucket times (``sim/costs.bucket_times``) add up to the
  measured ones;
* without, the link is fitted to the bucket all-reduces themselves (``fit_buckets``: a ring of the trace's
  world size with a cost per call and a bandwidth): an effective bandwidth that already holds DDP's
  efficiency, so ``ddp_bucket_efficiency`` stays 1 and the profile's flat all-reduce is DDP's, which the
  source says.

Compute: ``step_time_s`` is the mean compute per step, ``optimizer_time_s`` the optimizer's, and
``data_time_s`` the rest of the step (host gaps, input, communication that is not DDP's), all measured.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import tomli_w

from ...core import io
from ...core.cluster import ClusterSpec, LinkSpec, TransportSpec
from ...core.config import load as load_config
from ...core.errors import ConfigError
from ...sim.collectives import allreduce_time
from ...sim.costs import bucket_times
from .kineto_trace import Trace, load, trace_files


def read_traces(paths: list[Path], key: str = "--from-trace") -> list[Trace]:
    """Every trace of ``paths`` (files or folders), checked to come from one job (one world size)."""
    traces = [load(p) for p in trace_files(paths)]
    sizes = {t.world_size for t in traces}
    if len(sizes) > 1:
        raise ConfigError(f"traces of different world sizes {sorted(sizes)}: give the ranks of one job",
                          key=key, source="command line")
    return traces


def buckets(traces: list[Trace]) -> tuple[np.ndarray, np.ndarray]:
    """Bytes and seconds of every DDP bucket all-reduce of every step; ConfigError when there is none with
    its size."""
    sizes, times = [], []
    for t in traces:
        calls = [c for s in t.steps for c in s.of("allreduce")]
        if not calls:
            raise ConfigError("has no NCCL all-reduce kernels: not a DDP job across GPUs", source=str(t.path))
        if not any(c.nbytes for c in calls):
            raise ConfigError("its all-reduce kernels carry no sizes (no 'In msg nelems' argument, no "
                              "nccl:all_reduce op with Input Dims): profile with record_shapes=True",
                              source=str(t.path))
        sizes += [c.nbytes for c in calls if c.nbytes]
        times += [c.duration_s for c in calls if c.nbytes]
    return np.array(sizes), np.array(times)


def shape(trace: Trace) -> tuple[int, int]:
    """(nodes, GPUs per node): ranks fill nodes of ``deviceProperties`` GPUs each (all of them on one node
    when the trace does not list its GPUs, or when they do not divide the world)."""
    world, g = trace.world_size, trace.gpus_on_node
    if not g or world % min(g, world):
        return 1, world
    g = min(g, world)
    return world // g, g


def fit_network(traces: list[Trace], base: ClusterSpec | None) -> tuple[ClusterSpec, str]:
    """The cluster (links, transport, shape) that prices the traces' buckets, and a line saying how."""
    sizes, times = buckets(traces)
    nodes, g = shape(traces[0])
    if base is not None:
        shaped = dataclasses.replace(base, nodes=nodes, gpus_per_node=g, wan=dataclasses.replace(base.wan, groups=1))
        f = bucket_efficiency(shaped, sizes, times)
        cluster = dataclasses.replace(shaped, transport=dataclasses.replace(shaped.transport, ddp_bucket_efficiency=f))
        return cluster, (f"DDP bucket efficiency {f:.3f} relative to the flat all-reduce of {base.name} "
                         f"({len(sizes)} bucket all-reduces)")
    world = traces[0].world_size
    per_call_s, bandwidth_Bps = fit_buckets(sizes, times, world)
    link = LinkSpec(bandwidth_gbps=bandwidth_Bps * 8 / 1e9, latency_us=0.0)
    cluster = ClusterSpec(nodes=nodes, gpus_per_node=g, intra_node=link, inter_node=link, allreduce="ring",
                          transport=TransportSpec(kind="nccl", base_latency_us=per_call_s * 1e6))
    predicted = np.array([allreduce_time(cluster, b) for b in sizes])
    rms = float(np.sqrt(np.mean(np.log(predicted / times) ** 2)))
    return cluster, (f"link fitted to {len(sizes)} bucket all-reduces: {link.bandwidth_gbps:.2f} Gbit/s "
                     f"effective and {per_call_s * 1e3:.3f} ms per call, rms log error {rms:.3f}; no flat "
                     "all-reduce measured, so the efficiency is folded into the bandwidth (ddp_bucket_efficiency 1)")


def fit_buckets(sizes: np.ndarray, times: np.ndarray, world: int) -> tuple[float, float]:
    """(seconds per call, bytes/s) of T = a + 2(n-1)/n · S/B fitted to bucket all-reduce kernels by least
    squares in seconds, so the fitted buckets add up to the measured ones, as a step adds them.

    The constant is charged per call (``base_latency_us``), not per ring step: NCCL's hops cost
    microseconds (``tuning.cc``), so the milliseconds a bucket kernel spends beyond its transfer are per call
    (launch, waiting for the other ranks to reach the bucket). A fit per ring step was tried first
    (``fit_transport.fit_tiers``, relative error): from a 2-rank trace it multiplied that constant by 14 on 8
    ranks (``docs/validation.md``)."""
    x = 2 * (world - 1) / world * sizes
    a, b = np.linalg.lstsq(np.c_[np.ones_like(x), x], times, rcond=None)[0]
    if b <= 0:  # durations that do not grow with size: all per call, the transfer negligible
        return float(times.mean()), float(1e3 * (x / times).max())
    if a < 0:  # no constant: the bandwidth that gives the measured total
        return 0.0, float(x.sum() / times.sum())
    return float(a), float(1 / b)


def bucket_efficiency(cluster: ClusterSpec, sizes: np.ndarray, times: np.ndarray) -> float:
    """The ``ddp_bucket_efficiency`` at which the simulator's bucket times sum to the measured ones: the sum
    falls as the efficiency rises, so bisect on its logarithm within the field's range (0, 10]."""
    def total(f: float) -> float:
        t = dataclasses.replace(cluster.transport, ddp_bucket_efficiency=f)
        return float(bucket_times(dataclasses.replace(cluster, transport=t), sizes).sum())

    target = float(times.sum())
    lo, hi = math.log(1e-3), math.log(10.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(math.exp(mid)) > target else (lo, mid)
    return round(math.exp((lo + hi) / 2), 4)


def compute_fields(traces: list[Trace]) -> dict[str, float]:
    steps = [s for t in traces for s in t.steps]
    return {"step_time_s": float(np.mean([s.compute_s for s in steps])),
            "optimizer_time_s": float(np.mean([s.optimizer_s for s in steps])),
            "data_time_s": max(float(np.mean([s.rest_s for s in steps])), 0.0)}


def describe(traces: list[Trace]) -> str:
    """What was found, per trace: steps, buckets and their sizes, compute and exposed communication."""
    lines = []
    for t in traces:
        steps = t.steps
        lines.append(f"{t.path}: rank {t.rank} of {t.world_size} ({t.backend or 'backend not recorded'}), "
                     f"{t.gpu or 'GPU not recorded'}, {len(steps)} steps")
        for s in steps:
            mb = ", ".join(f"{c.nbytes / 2**20:.1f}" if c.nbytes else "?" for c in s.of("allreduce"))
            lines.append(
                f"  {s.name}: step {s.step_s * 1e3:.2f} ms, compute {s.compute_s * 1e3:.2f} ms, optimizer "
                f"{s.optimizer_s * 1e3:.2f} ms, {len(s.of('allreduce'))} bucket all-reduces [{mb}] MiB in "
                f"{s.allreduce_s * 1e3:.2f} ms ({s.allreduce_exposed_s * 1e3:.2f} ms exposed), "
                f"{len(s.of('broadcast'))} broadcasts ({s.broadcast_exposed_s * 1e3:.2f} ms exposed), "
                f"{len(s.of('other'))} other NCCL kernels ({s.other_comm_exposed_s * 1e3:.2f} ms exposed)")
    return "\n".join(lines)


def calibrate_from_traces(paths: list[Path], out: Path, *, base: ClusterSpec | None = None,
                          command: str = "") -> str:
    """Read, fit, write the profile ``out``; return the text to print. Nothing is written on bad input."""
    traces = read_traces(paths)
    cluster, how = fit_network(traces, base)
    cluster = dataclasses.replace(cluster, compute=dataclasses.replace(base.compute if base else cluster.compute,
                                                                       **compute_fields(traces)))
    text = profile_toml(cluster, traces, how, command or " ".join(sys.argv))
    io.write_text(Path(out), text)
    load_config(cluster=str(out))  # the profile must load as a cluster preset
    return f"{describe(traces)}\nnetwork: {how}\nwrote {out}"


def profile_toml(cluster: ClusterSpec, traces: list[Trace], how: str, command: str) -> str:
    names = ", ".join(t.path.name for t in traces)
    first = traces[0]
    source = (f"Measured by `{command}` from the PyTorch profiler traces {names} ({first.gpu or 'GPUs'}, world "
              f"size {first.world_size}): compute, optimizer and the rest of the step are the traces' mean "
              f"device times per step; {how}.")
    data = dataclasses.asdict(cluster)
    data.update(name=f"trace-{first.name}", description=f"{cluster.nodes} x {cluster.gpus_per_node} "
                f"{first.gpu or 'GPUs'} from a profiler trace", source=source)
    data["transport"] = {k: v for k, v in data["transport"].items()
                         if v != getattr(TransportSpec(), k) or k in ("kind", "ddp_bucket_efficiency")}
    return tomli_w.dumps({"cluster": data})
