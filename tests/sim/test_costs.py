"""Step costs checked by hand: DDP bucket ready times under gradient accumulation, the calls of a sync,
DDP's broadcast of the buffers, the flat buffer's order."""

from __future__ import annotations

import pytest

from palsgd.core import buckets
from palsgd.core.config import load
from palsgd.core.model_facts import model_facts
from palsgd.sim import collectives
from palsgd.sim.costs import flat_numels, fragment_syncs, step_costs
from palsgd.sim.engine import simulate

MIB = 1 << 20


def exposed_per_step_s(exp) -> float:
    runs = simulate(exp).runs.set_index("algorithm")
    return float(runs.loc["ddp", "comm_exposed_s"]) / exp.budget.steps


def test_gradient_accumulation_delays_ddp_buckets_to_the_last_micro_batch(tiny):
    # c = 1 s in G = 4 micro-batches of 0.25 s; two 1 MiB buckets of T = 0.25 s. Only the last
    # micro-batch syncs: bucket 0 (half the bytes) is ready at (3 + 1/3 + 2/3 * 1/2) / 4 = 11/12 s and
    # runs until 11/12 + 0.25; bucket 1 is ready at 1 s and starts when bucket 0 ends, at 7/6 s, and
    # ends at 17/12 s: 5/12 s exposed (treating the four micro-batches as one backward gave 0.25 s).
    exp = tiny({"workload": {"grad_accum": 4}}, algorithms=["ddp"], steps=2)
    costs = step_costs(exp, exp.algorithm("ddp"))
    assert list(costs.bucket_s) == pytest.approx([0.25, 0.25])
    assert list(costs.bucket_ready) == pytest.approx([11 / 12, 1.0])
    assert exposed_per_step_s(exp) == pytest.approx(5 / 12)


def test_without_accumulation_the_ready_times_are_unchanged(tiny):
    exp = tiny(algorithms=["ddp"], steps=2)
    assert list(step_costs(exp, exp.algorithm("ddp")).bucket_ready) == pytest.approx([2 / 3, 1.0])


def test_resnet50_with_16_micro_batches_exposes_most_of_its_allreduce():
    # One 10 Gb/s NIC per A100: 102 MB of gradients take ~288 ms; with the buckets ready only during
    # the last of 16 micro-batches (50 ms of a 805 ms step), ~257 ms of it cannot hide (was ~63 ms).
    exp = load(workload="resnet50-imagenet", cluster="a100-8x1-eth10",
               overrides=["budget.steps=3", "budget.epochs=0", "algorithms=['ddp']"])
    costs = step_costs(exp, exp.algorithm("ddp"))
    assert costs.bucket_s.sum() == pytest.approx(0.288, abs=0.002)
    assert exposed_per_step_s(exp) == pytest.approx(0.257, abs=0.003)


def test_a_sync_charges_each_call_of_the_real_code(tiny):
    # A custom model of 4 tensors, no buffers: one flat call of S; per tensor: four calls of S/4, each
    # paying the latency (here the cluster has one: 1 ms per ring step).
    lat = {"cluster": {"intra_node": {"latency_us": 1000.0}}}
    exp = tiny(lat, algorithms=["local_sgd"])
    flat = step_costs(exp, exp.algorithm("local_sgd"))
    per = tiny({**lat, "algorithm": {"per_tensor_allreduce": True}}, algorithms=["local_sgd"])
    per_tensor = step_costs(per, per.algorithm("local_sgd"))
    barrier = collectives.barrier_time(exp.cluster)
    T = lambda s: collectives.allreduce_time(exp.cluster, s)  # noqa: E731
    assert flat.sync_s == pytest.approx(barrier + T(2 * MIB))
    assert per_tensor.sync_s == pytest.approx(barrier + 4 * T(MIB / 2))
    assert per_tensor.sync_bytes == pytest.approx(flat.sync_bytes)


def resnet_tiny(*overrides):
    return load(workload="resnet-tiny", cluster="cpu-2core-gloo",
                overrides=["budget.steps=6", "budget.epochs=0", *overrides])


def test_ddp_broadcasts_the_batchnorm_buffers_before_each_step():
    # resnet-tiny (19 BatchNorms: 1376 fp32 running means and variances, 19 int64 num_batches_tracked)
    # on the build VM: 2 gloo ranks, one binomial-tree round of α = 150 us (its step overhead) plus
    # S / 1.85 GB/s; both broadcasts are in flight at once, so the latency is paid once.
    exp = resnet_tiny("algorithms=['ddp']")
    nbytes = 4 * 1376 + 8 * 19
    costs = step_costs(exp, exp.algorithm("ddp"))
    assert costs.buffer_broadcast_s == pytest.approx(150e-6 + nbytes / 1.85e9)
    assert costs.buffer_broadcast_bytes == pytest.approx(nbytes / 2)
    steps = simulate(exp, record_steps=True).steps
    step = steps[(steps["worker"] == 0) & (steps["step"] == 2)].sort_values("start_s")
    first, compute = step.iloc[0], step[step["phase"] == "compute"].iloc[0]
    assert first["phase"] == "allreduce" and first["end_s"] == pytest.approx(compute["start_s"])
    assert first["end_s"] - first["start_s"] == pytest.approx(costs.buffer_broadcast_s)
    assert first["bytes"] == pytest.approx(costs.buffer_broadcast_bytes)


def test_a_model_without_buffers_broadcasts_nothing(tiny):
    exp = tiny(algorithms=["ddp"], steps=2)
    costs = step_costs(exp, exp.algorithm("ddp"))
    assert costs.buffer_broadcast_s == costs.buffer_broadcast_bytes == 0.0


def test_broadcast_rounds_of_gloo_and_nccl(tiny):
    # No latency, B = 4 MiB/s: gloo's binomial tree sends all of S in each of ceil(log2 n) rounds,
    # NCCL's pipelined ring streams S once.
    for workers, rounds in [(2, 1), (3, 2), (4, 2), (5, 3)]:
        gloo = tiny({"cluster": {"gpus_per_node": workers, "transport": {"kind": "gloo"}}}).cluster
        nccl = tiny({"cluster": {"gpus_per_node": workers}}).cluster
        assert collectives.broadcast_time(gloo, 2 * MIB) == pytest.approx(rounds * 0.5)
        assert collectives.broadcast_time(nccl, 2 * MIB) == pytest.approx(0.5)
        assert collectives.broadcast_bytes_sent(nccl, 2 * MIB) == pytest.approx((workers - 1) / workers * 2 * MIB)


def test_syncs_and_fragments_follow_the_flat_buffer():
    # The flat buffer holds the conv kernels and the fc matrix first, then BatchNorm gains and biases
    # and the fc bias (the optimizer's groups): Streaming DiLoCo's fragments are runs of that order.
    exp = resnet_tiny("algorithms=['streaming_diloco']", "algorithm.fragments=2", "budget.steps=16")
    facts = model_facts(exp.workload.model)
    flat = flat_numels(exp.workload)
    assert flat == [facts.param_numels[i] for i in buckets.flat_order(facts.param_ndims)]
    matrices = [n for n, ndim in zip(facts.param_numels, facts.param_ndims, strict=True) if ndim >= 2]
    assert flat[:len(matrices)] == matrices
    shares = [share for _s, _b, share in fragment_syncs(exp, exp.algorithm("streaming_diloco"))]
    (_, cut), _ = buckets.fragment_bounds(flat, 2)
    assert shares[0] == pytest.approx(sum(flat[:cut]) / sum(flat))


def test_sparseloco_all_gather_overtakes_dilocos_all_reduce_at_many_workers():
    """gpt-neo-125m over 10 Gbit/s Ethernet, one GPU a node: SparseLoCo's sparse message (~2 % of 4N bytes)
    is received from every other worker, so its sync grows with the workers and passes DiLoCo's dense
    all-reduce between 64 and 128 workers."""
    def sync(nodes, name):
        exp = load(workload="gpt-neo-125m", cluster="a100-8x1-eth10", algorithms=[name],
                   overrides=[f"cluster.nodes={nodes}"])
        return step_costs(exp, exp.algorithm(name))

    s8, s64, s128 = (sync(n, "sparseloco") for n in (8, 64, 128))
    assert s8.payload_bytes == s64.payload_bytes < 0.03 * sync(8, "diloco").payload_bytes
    assert s64.sync_bytes == pytest.approx(63 / 7 * s8.sync_bytes)
    assert s8.sync_s < 0.1 * sync(8, "diloco").sync_s
    assert s64.sync_s < sync(64, "diloco").sync_s < s128.sync_s


def test_sparseloco_step_table_at_64_workers():
    exp = load(workload="gpt-neo-125m", cluster="a100-8x1-eth10", algorithms=["sparseloco"], steps=24,
               overrides=["cluster.nodes=64", "algorithm.sync_every=8", "algorithm.warmup_steps=0"])
    steps = simulate(exp, record_steps=True).steps
    sync = steps[steps["step"] == 7]
    assert set(sync["phase"]) >= {"compute", "optimizer", "wait", "allreduce", "outer_step"}
    comm = sync[sync["phase"] == "allreduce"]
    costs = step_costs(exp, exp.algorithm("sparseloco"))
    assert len(comm) == 64 and (comm["bytes"] == costs.sync_bytes).all()
    assert (comm["end_s"] - comm["start_s"]).to_numpy() == pytest.approx(costs.sync_s - costs.barrier_s)
    assert set(steps[steps["phase"] == "allreduce"]["step"]) == {7, 15, 23}
