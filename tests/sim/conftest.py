"""Tiny experiments whose every timestamp can be checked by hand."""

from __future__ import annotations

import copy

import pytest

from palsgd.core.config import from_dict
from palsgd.core.typed import merge

MIB = 1 << 20


def tiny_dict(algorithms=("ddp", "local_sgd", "diloco", "palsgd"), steps=4) -> dict:
    """2 workers on one node; compute c = 1 s, optimizer o = 0.1 s, outer step u = 0.2 s,
    pseudo-sync m = 0.05 s; payload S = 2 MiB (N = 512 Ki fp32 parameters) on a ring of 2 ranks
    with no latency and B = 2·S bytes/s, so T_AR(S) = 2(n-1)/n · S/B = 0.5 s and each of DDP's two
    1 MiB buckets takes 0.25 s."""
    s = 2 * MIB
    return {
        "workload": {"params": s // 4, "tensors": 4, "optimizer_passes": 0.0, "outer_passes": 0.0,
                     "pseudo_sync_passes": 0.0, "batch_per_worker": 1, "flops_per_sample": 1.0,
                     "model": {"family": "custom"}},
        "cluster": {
            "nodes": 1, "gpus_per_node": 2, "allreduce": "ring",
            "intra_node": {"bandwidth_gbps": 2 * s * 8 / 1e9, "latency_us": 0.0},
            "transport": {"kind": "nccl", "efficiency": 1.0, "base_latency_us": 0.0},
            "compute": {"step_time_s": 1.0, "optimizer_time_s": 0.1, "outer_step_time_s": 0.2,
                        "pseudo_sync_time_s": 0.05},
        },
        "algorithms": list(algorithms),
        "algorithm": {"sync_every": 2, "warmup_steps": 0, "p": 0.5, "bucket_mib": 1.0},
        "budget": {"steps": steps},
    }


def make(overrides: dict | None = None, **kw):
    data = tiny_dict(**kw)
    merge(data, copy.deepcopy(overrides or {}), {}, "test")
    return from_dict(data)


@pytest.fixture
def tiny():
    return make
