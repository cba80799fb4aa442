"""`palsgd validate --trace`: replay a profiled DDP job through the simulator's cost model.

For every step of a trace (``harness/kineto_trace.py``) the prediction keeps what the trace measured of the
GPU's own work, compute c and optimizer o, and of the rest of the step (host gaps, input, communication that
is not DDP's), and predicts DDP's communication from a network profile as the simulator charges it
(``sim/costs.py``): the buffer broadcasts before the forward, and the buckets of the sizes the trace
all-reduced, each ready at ``bucket_ready`` (the backward fills them at a constant rate of bytes) and costing
``bucket_times`` on the profile's links, one after another; the step ends when the last bucket is done
(``ddp_comm_end``) and the optimizer has run:

    predicted step = rest + broadcasts + max(c, ddp_comm_end) + o

against the trace's step (its ``ProfilerStep`` range). Rows compare the mean step time, the bucket
all-reduces' total time and their exposed part (time not overlapped by compute or optimizer kernels).

The network comes from ``--cluster`` (a profile: calibration, nccl-tests, a preset), or is fitted from other
traces (``--network-trace``, ``harness/trace_calibrate.fit_network``), or, if neither is given, from the
trace itself: a check of consistency only, which the ``network`` column says.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ...core import io
from ...core.cluster import ClusterSpec
from ...core.errors import ConfigError
from ...sim import collectives, costs
from ..machinery.compare import COMPARISON_COLUMNS, error_pct
from ..machinery.kineto_trace import Step, Trace, load, trace_files
from ..machinery.trace_calibrate import fit_network, read_traces, shape

METRICS = ("step_time_mean_s", "allreduce_s", "allreduce_exposed_s")
TARGET_MEDIAN_PCT, TARGET_MAX_PCT = 5.0, 10.0
"""DDP step time, when the network comes from other evidence than the trace predicted."""


@dataclasses.dataclass(frozen=True)
class Network:
    cluster: ClusterSpec
    label: str  # what the network was fitted from, for the ``network`` column
    independent: bool  # from other evidence than the trace it predicts


def predict_step(step: Step, cluster: ClusterSpec) -> dict[str, float]:
    """Predicted and measured times of one step (seconds), with ``cluster`` shaped to the trace's world."""
    calls = step.of("allreduce")
    sizes = np.array([c.nbytes for c in calls])
    bucket_s = costs.bucket_times(cluster, sizes)
    ready = costs.bucket_ready(sizes, 1)
    c = step.compute_s
    comm_end = float(costs.ddp_comm_end(np.array([c]), ready, bucket_s)[0]) if len(sizes) else c
    broadcast = sum(collectives.broadcast_time(cluster, b.nbytes) for b in step.of("broadcast"))
    return {
        "step_time_mean_s": (step.rest_s + broadcast + max(comm_end, c) + step.optimizer_s, step.step_s),
        "allreduce_s": (float(bucket_s.sum()), step.allreduce_s),
        "allreduce_exposed_s": (max(comm_end - c, 0.0), step.allreduce_exposed_s),
    }


def replay(trace: Trace, network: Network) -> pd.DataFrame:
    """Comparison rows (``harness/compare.py`` schema) of one trace's mean step under one network."""
    for step in trace.steps:
        if not step.of("allreduce"):
            raise ConfigError(f"{step.name} has no NCCL all-reduce kernels: not a DDP step", source=str(trace.path))
        if not all(c.nbytes for c in step.of("allreduce")):
            raise ConfigError(f"{step.name}: its all-reduce kernels carry no sizes (no 'In msg nelems', no "
                              "nccl:all_reduce Input Dims): profile with record_shapes=True", source=str(trace.path))
    nodes, g = shape(trace)
    cluster = dataclasses.replace(network.cluster, nodes=nodes, gpus_per_node=g,
                                  wan=dataclasses.replace(network.cluster.wan, groups=1))
    per_step = [predict_step(s, cluster) for s in trace.steps]
    rows = []
    for metric in METRICS:
        p = float(np.mean([r[metric][0] for r in per_step]))
        m = float(np.mean([r[metric][1] for r in per_step]))
        rows.append((trace.name, trace.gpu, network.label, trace.world_size, "ddp", metric, p, m,
                     error_pct(metric, p, m)))
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def networks(traces: list[Trace], cluster: ClusterSpec | None, others: list[Trace]) -> list[tuple[Trace, Network]]:
    """The (trace, network) pairs to replay: each trace under the given profile, under the fit of the other
    traces, or under its own fit when neither is given."""
    pairs = []
    for t in traces:
        if cluster is not None:
            pairs.append((t, Network(cluster, f"profile {cluster.name}", True)))
        if others:
            fitted, _ = fit_network(others, None)
            names = "+".join(o.name for o in others)
            pairs.append((t, Network(fitted, f"fitted from trace {names}", all(o.path != t.path for o in others))))
        if cluster is None and not others:
            fitted, _ = fit_network([t], None)
            pairs.append((t, Network(fitted, "fitted from this trace", False)))
    return pairs


def validate_traces(paths: list[Path], out: Path, *, cluster: ClusterSpec | None = None,
                    network_paths: list[Path] = ()) -> str:
    """Replay, write ``out/comparison.csv``, and return the table to print."""
    traces = [load(p) for p in trace_files(paths)]  # each replayed on its own: several jobs may be given
    others = read_traces(list(network_paths), "--network-trace") if network_paths else []
    pairs = networks(traces, cluster, others)
    table = pd.concat([replay(t, n) for t, n in pairs], ignore_index=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    io.write_csv(out / "comparison.csv", table)
    independent = {(t.name, n.label) for t, n in pairs if n.independent}
    return format_table(table, independent) + f"\nwrote {out / 'comparison.csv'}"


def format_table(table: pd.DataFrame, independent: set[tuple[str, str]]) -> str:
    lines = [f"{'trace':<24} {'network':<40} {'metric':<20} {'predicted_ms':>12} {'measured_ms':>12} {'error':>9}"]
    for r in table.itertuples():
        lines.append(f"{r.case:<24} {r.network[:40]:<40} {r.metric:<20} {r.predicted * 1e3:>12.3f} "
                     f"{r.measured * 1e3:>12.3f} {r.error_pct:>+8.1f}%")
    mine = np.array([(c, n) in independent for c, n in zip(table["case"], table["network"], strict=True)], bool)
    steps = table[(table["metric"] == "step_time_mean_s").to_numpy() & mine]
    if len(steps):
        err = steps["error_pct"].abs()
        ok = err.median() <= TARGET_MEDIAN_PCT and err.max() <= TARGET_MAX_PCT
        lines.append(f"DDP step time, network from other evidence: median |error| {err.median():.1f} %, max "
                     f"{err.max():.1f} % over {len(err)} rows (target {TARGET_MEDIAN_PCT:g} % / {TARGET_MAX_PCT:g} %: "
                     f"{'met' if ok else 'missed'})")
    return "\n".join(lines)
