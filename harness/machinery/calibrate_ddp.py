"""`palsgd calibrate`, DDP's part: time DDP's bucketed all-reduces beside the backward on the machines at
hand (``real/bench_ddp_buckets.py``), next to the flat all-reduce the calibration fitted, and write the
factor between them into the profile as ``transport.ddp_bucket_efficiency`` (``docs/model.md``).

The factor is the one ``palsgd calibrate --from-trace --cluster BASE`` fits from a GPU trace
(``trace_calibrate.bucket_efficiency``): the efficiency at which the simulator's bucket times on the
profile's links add up to the measured communication time of a step (the union of the buckets' all-reduce
intervals, median over the timed steps).
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from pathlib import Path

import numpy as np
import tomli_w

from ...core import io
from ...core.cluster import ClusterSpec
from ...core.config import load
from ...sim.costs import bucket_times
from .calibrate import _free_port, _rank_env, run_ranks
from .netem import EmulatedNetwork, NetemSpec
from .trace_calibrate import bucket_efficiency

BENCH = {"width": 512, "layers": 8, "bucket_mib": 1.0, "steps": 12}
"""8 Linear(512, 512) layers: 8.4 MB of fp32 gradients in 8 buckets of 1 MiB (one per layer)."""


def run_ddp_buckets(n: int, network: NetemSpec | None, folder: Path, timeout_s: float,
                    bench: dict | None = None) -> dict:
    """``bench_ddp_buckets`` on n ranks, placed as the calibration's collectives were (loopback, one rank per
    emulated host, or ranks filling emulated nodes); returns what rank 0 wrote to ``ddp_buckets.json``."""
    out = folder / "ddp_buckets.json"
    argv = [sys.executable, "-m", "palsgd.real.bench_ddp_buckets", "--out", str(out),
            *[x for k, v in (bench or BENCH).items() for x in (f"--{k.replace('_', '-')}", str(v))]]
    if network is None:
        envs = [_rank_env(r, n, "127.0.0.1", _free_port(), "lo") for r in range(n)]
        envs = [dict(e, MASTER_PORT=envs[0]["MASTER_PORT"]) for e in envs]
        run_ranks([argv] * n, envs, timeout_s, "DDP bucket benchmark")
        return io.read_json(out)
    with EmulatedNetwork(n, network) as net:
        per_node = net.ranks_per_node if network.nodes else 1
        argvs = [net.command(r // per_node, argv) for r in range(n)]
        envs = [_rank_env(r, n, net.addresses[0], 29520, net.ifname) for r in range(n)]
        run_ranks(argvs, envs, timeout_s, "DDP bucket benchmark")
    return io.read_json(out)


def add_efficiency(profile: Path, measured: dict) -> str:
    """Fit ``ddp_bucket_efficiency`` against the profile's own links, write it into the profile, and return
    the line to print."""
    cluster = load(cluster=str(profile)).cluster
    sizes = np.array(measured["bucket_bytes"], float)
    f = bucket_efficiency(cluster, sizes, np.array([measured["comm_s"]]))
    flat_s = float(sum(_flat_times(cluster, sizes)))
    data = tomllib.loads(Path(profile).read_text())
    data["cluster"]["transport"]["ddp_bucket_efficiency"] = f
    data["cluster"]["source"] += (f" DDP's buckets ({len(sizes)} of {sizes.sum() / 2**20:.1f} MiB in all, beside "
                                  f"the backward of {BENCH['layers']} Linear({BENCH['width']}) layers) took "
                                  f"{measured['comm_s'] * 1e3:.1f} ms per step (median), the same buckets "
                                  f"as flat all-reduces {flat_s * 1e3:.1f} ms: ddp_bucket_efficiency {f}.")
    io.write_text(Path(profile), tomli_w.dumps(data))
    load(cluster=str(profile))
    return (f"DDP buckets: {len(sizes)} of {sizes.sum() / 2**20:.1f} MiB in {measured['comm_s'] * 1e3:.1f} ms per "
            f"step beside the backward; as flat all-reduces {flat_s * 1e3:.1f} ms: "
            f"ddp_bucket_efficiency {f}")


def _flat_times(cluster: ClusterSpec, sizes: np.ndarray) -> np.ndarray:
    """The simulator's bucket times at efficiency 1: as if each bucket were a flat all-reduce."""
    flat = dataclasses.replace(cluster.transport, ddp_bucket_efficiency=1.0)
    return bucket_times(dataclasses.replace(cluster, transport=flat), sizes)
