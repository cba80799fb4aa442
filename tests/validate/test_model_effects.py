"""The effects validation added to the simulator, checked by hand (docs/validation.md)."""

from __future__ import annotations

import pytest

from palsgd.core.buckets import MIB, ddp_bucket_bytes
from palsgd.core.config import load
from palsgd.harness.commands.validate_cpu import Case, case_experiment
from palsgd.sim import collectives
from palsgd.sim.costs import step_costs, tensor_numels

GLOO_2 = ["cluster.gpus_per_node=2", "cluster.nodes=1", "cluster.intra_node.latency_us=5000",
          "cluster.transport.step_overhead_us=700", "cluster.transport.base_latency_us=0"]


def test_barrier_is_a_chain_of_one_way_hops():
    exp = load(workload="gpt-tiny", cluster="cpu-2core-gloo", overrides=GLOO_2)
    # gloo's one-element all-reduce hops 2(n-1) times, one after another, each hop one way (5 ms) + 0.7 ms
    # of software (sim/collectives.barrier_time).
    assert collectives.barrier_time(exp.cluster) == pytest.approx(2 * (5e-3 + 0.7e-3))
    four = load(workload="gpt-tiny", cluster="cpu-2core-gloo", overrides=[*GLOO_2, "cluster.gpus_per_node=4"])
    assert collectives.barrier_time(four.cluster) == pytest.approx(6 * (5e-3 + 0.7e-3))


def test_a_sync_pays_the_barrier_then_the_allreduce():
    exp = load(workload="gpt-tiny", cluster="cpu-2core-gloo", overrides=GLOO_2)
    costs = step_costs(exp, exp.algorithm("local_sgd"))
    payload = 4 * exp.workload.params
    expected = collectives.barrier_time(exp.cluster) + collectives.allreduce_time(exp.cluster, payload)
    assert costs.sync_s == pytest.approx(expected)


def test_first_bucket_follows_pytorchs_rule():
    assert ddp_bucket_bytes([MIB // 4] * 2, 25.0, 1.0, 4) == [MIB, MIB]
    assert ddp_bucket_bytes([MIB // 4] * 2, 25.0, 25.0, 4) == [2 * MIB]
    assert ddp_bucket_bytes([MIB // 4] * 5, 2.0, 2.0, 4) == [2 * MIB, 2 * MIB, MIB]
    exp = case_experiment(Case("gpt-tiny", 2, "unshaped", 12))
    default = exp.algorithm("ddp")
    assert default.torch_bucket_cap_mb is None and default.first_bucket_mib == 1.0  # PyTorch's default layout
    capped = load(workload="gpt-tiny", overrides=["algorithm.bucket_mib=4"]).algorithm("ddp")
    assert capped.torch_bucket_cap_mb == 4.0 and capped.first_bucket_mib == 4.0  # an explicit cap: all alike
    costs = step_costs(exp, exp.algorithm("ddp"))
    payload = 4 * exp.workload.params
    assert len(costs.bucket_s) == 2 and costs.bucket_ready[0] < costs.bucket_ready[1] == pytest.approx(1.0)
    assert payload > MIB


def test_gloo_runs_ddp_buckets_together_nccl_one_after_another():
    """gloo (2 worker threads) overlaps the two buckets' latencies: the buckets still to go cost one
    all-reduce of their bytes; nccl (one stream) pays each bucket's all-reduce in turn."""
    exp = load(workload="gpt-tiny", cluster="cpu-2core-gloo", overrides=GLOO_2)
    payload = 4 * exp.workload.params
    first, rest = ddp_bucket_bytes(tensor_numels(exp.workload)[0], 25.0, 1.0, 4)
    gloo = step_costs(exp, exp.algorithm("ddp")).bucket_s
    T = lambda cluster, s: collectives.allreduce_time(cluster, s)  # noqa: E731
    assert gloo.sum() == pytest.approx(T(exp.cluster, payload))  # from the first bucket on: one all-reduce
    assert gloo[-1] == pytest.approx(T(exp.cluster, rest))  # the last bucket alone
    # One ring latency saved: 2(n-1) steps of alpha = 2 x (2 x 5 ms + 0.7 ms) on 2 ranks.
    serial = T(exp.cluster, first) + T(exp.cluster, rest)
    assert serial - gloo.sum() == pytest.approx(2 * (2 * 5e-3 + 0.7e-3))
    nccl = load(workload="gpt-tiny", cluster="cpu-2core-gloo", overrides=[*GLOO_2, "cluster.transport.kind=nccl"])
    assert step_costs(nccl, nccl.algorithm("ddp")).bucket_s.sum() == pytest.approx(
        T(nccl.cluster, first) + T(nccl.cluster, rest))
