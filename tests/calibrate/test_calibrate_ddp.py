"""`palsgd calibrate`'s DDP part: PyTorch's own buckets timed beside a backward, and the efficiency fit."""

import pytest
import tomli_w

from palsgd.core import buckets
from palsgd.core.config import load
from palsgd.harness.machinery import calibrate_ddp

MIB = 1 << 20


@pytest.mark.slow  # two torch processes: 40-50 s on the loaded 2-core VM, mostly start-up
def test_the_benchmark_times_pytorchs_buckets_which_are_ours(tmp_path):
    # Small: 4 Linear(128) layers (66 KB of gradients each) in 0.1 MiB buckets, 3 timed steps.
    bench = {"width": 128, "layers": 4, "bucket_mib": 0.1, "steps": 3}
    measured = calibrate_ddp.run_ddp_buckets(2, None, tmp_path, timeout_s=300, bench=bench)
    # The buckets DDP handed to the hook are the layout core/buckets.py computes (one truth for both sides).
    assert measured["bucket_bytes"] == buckets.ddp_bucket_bytes(measured["param_numels"], bench["bucket_mib"],
                                                                bench["bucket_mib"], 4)
    assert len(measured["comm_s_per_step"]) == bench["steps"] and measured["comm_s"] > 0


def test_efficiency_written_into_the_profile(tmp_path):
    # 2 ranks, no latency, B = 2 MiB/s: two 1 MiB buckets cost 0.5 s each as flat all-reduces (nccl: one after
    # the other). Measured 2 s in all: the buckets got half the bandwidth.
    profile = tmp_path / "p.toml"
    profile.write_text(tomli_w.dumps({"cluster": {
        "name": "hand", "source": "by hand.", "nodes": 1, "gpus_per_node": 2, "allreduce": "ring",
        "intra_node": {"bandwidth_gbps": 2 * MIB * 8 / 1e9, "latency_us": 0.0},
        "transport": {"kind": "nccl", "base_latency_us": 0.0}}}))
    line = calibrate_ddp.add_efficiency(profile, {"bucket_bytes": [MIB, MIB], "comm_s": 2.0})
    cluster = load(cluster=str(profile)).cluster
    assert abs(cluster.transport.ddp_bucket_efficiency - 0.5) < 1e-3
    assert "as flat all-reduces 1000.0 ms" in line and "ddp_bucket_efficiency 0.5" in cluster.source
