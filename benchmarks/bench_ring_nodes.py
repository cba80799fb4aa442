"""Where a ring's time goes on 4 emulated nodes against 2 (issue 23, item 4).

The cluster suite's 4 x 2 layout was under-predicted by 11-32 % where 2 x 4 was not. The simulator prices
both alike: a flat ring of 8 ranks placed node by node, each step as slow as its slowest hop, every node
NIC carrying one flow each way (``sim/collectives.flat_tier``). This benchmark times gloo all-reduces of
all ranks at once (``real/bench_collectives.py``) on ``nodes=2`` and ``nodes=4`` layouts of the same
ranks and per-link rate, with and without the link delay (which the user-space delay program adds per
packet: with ``delay=0`` no packet leaves the kernel), and the CPU seconds the delay programs used, and
prints the simulator's ring time for the same spec beside each.

    sudo .venv/bin/python benchmarks/bench_ring_nodes.py [--rate 1gbit] [--sizes-mb 8,32] [--reps 3] \\
        [--time-dilation K] [--csv rows.csv]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from palsgd.core.cluster import ClusterSpec, LinkSpec, TransportSpec
from palsgd.harness.machinery.calibrate import _rank_env, run_ranks
from palsgd.harness.machinery.netem import EmulatedNetwork, NetemSpec
from palsgd.sim.collectives import allreduce_time

LAYOUTS = ((8, 2), (8, 4), (2, 2), (4, 4))
"""(ranks, nodes): the suite's 2 x 4 and 4 x 2, and one rank per node on 2 and 4 nodes."""


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (/proc/<pid>/stat fields 14 and 15)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def measure(ranks: int, nodes: int, spec: NetemSpec, sizes_mb: list[float], reps: int, dilation: float
            ) -> pd.DataFrame:
    """All ranks' all-reduce on ``spec`` slowed down ``dilation`` times, its times divided by it."""
    per_node = ranks // nodes
    sizes = [int(s * 2**20) for s in sizes_mb]
    network = EmulatedNetwork(ranks, spec.dilated(dilation))
    with tempfile.TemporaryDirectory(prefix="palsgd-ring-") as tmp, network as net:
        out = Path(tmp) / "collectives.csv"
        tables = []
        for size in sizes:
            argv = [sys.executable, "-m", "palsgd.real.bench_collectives", "--out", str(out), "--min-bytes",
                    str(size), "--max-bytes", str(size), "--reps", str(reps), "--pings", "3"]
            argvs = [net.command(r // per_node, argv) for r in range(ranks)]
            envs = [_rank_env(r, ranks, net.addresses[0], 29510, net.ifname) for r in range(ranks)]
            pids = [p.pid for p in net._procs]
            cpu0, t0 = cpu_s(pids), time.monotonic()
            run_ranks(argvs, envs, 600 * dilation, f"all-reduce on {nodes} nodes")
            wall = time.monotonic() - t0
            table = pd.read_csv(out).assign(delay_cpu_s_per_s=(cpu_s(pids) - cpu0) / wall, delay_programs=len(pids))
            tables.append(table.assign(**{c: table[c] / dilation for c in ("time_s", "p10_s", "p90_s")}))
    return pd.concat(tables, ignore_index=True)


def model_s(ranks: int, nodes: int, spec: NetemSpec, nbytes: float) -> float:
    """The simulator's ring on the spec's links alone (gloo: a round trip per step, no software overhead)."""
    inter = LinkSpec(spec.rate_mbit / 1e3, spec.delay_ms * 1e3)
    cluster = ClusterSpec(nodes=nodes, gpus_per_node=ranks // nodes, allreduce="ring",
                          intra_node=LinkSpec(100.0, 10.0), inter_node=inter,
                          transport=TransportSpec(kind="gloo", efficiency=1.0, base_latency_us=0.0, step_latency="rtt"))
    return allreduce_time(cluster, nbytes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", default="1gbit")
    p.add_argument("--delays", default="5ms,0ms")
    p.add_argument("--sizes-mb", default="8,32")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--time-dilation", type=float, default=1.0, help="links rate/K, K x delay; times / K")
    p.add_argument("--csv", type=Path, default=None)
    args = p.parse_args()
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    rows = []
    for delay in args.delays.split(","):
        for ranks, nodes in LAYOUTS:
            spec = NetemSpec.parse(f"nodes={nodes},rate={args.rate},delay={delay}")
            load = float(Path("/proc/loadavg").read_text().split()[0])
            table = measure(ranks, nodes, spec, sizes, args.reps, args.time_dilation)
            for r in table.itertuples():
                rows.append({"time_dilation": args.time_dilation, "ranks": ranks, "nodes": nodes, "delay": delay,
                             "size_bytes": r.size_bytes,
                             "measured_s": r.time_s, "p10_s": r.p10_s, "p90_s": r.p90_s,
                             "model_s": model_s(ranks, nodes, spec, r.size_bytes),
                             "delay_programs": r.delay_programs, "delay_cpu_s_per_s": r.delay_cpu_s_per_s,
                             "load_1min": load})
            print(pd.DataFrame(rows).tail(len(table)).to_string(index=False, float_format=lambda v: f"{v:.4g}"),
                  flush=True)
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, mode="a", header=not args.csv.exists(), index=False)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
