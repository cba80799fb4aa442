"""All-reduce costs against their closed forms."""

from __future__ import annotations

import math

import pytest

from palsgd.core.cluster import ClusterSpec, LinkSpec, TransportSpec, WanSpec
from palsgd.sim import collectives as co

GB = 1e9


def cluster(nodes=1, gpus=8, intra=(800.0, 0.0), inter=(100.0, 0.0), wan=None, **transport):
    t = {"efficiency": 1.0, "base_latency_us": 0.0, **transport}
    return ClusterSpec(nodes=nodes, gpus_per_node=gpus, intra_node=LinkSpec(*intra),
                       inter_node=LinkSpec(*inter), wan=wan or WanSpec(), transport=TransportSpec(**t),
                       allreduce="ring")


@pytest.mark.parametrize("n", [2, 3, 8, 64])
def test_ring_of_large_messages_is_2_n_minus_1_over_n_s_over_b(n):
    c = cluster(gpus=n, intra=(100.0, 0.0))
    s, b = 1e9, 100e9 / 8
    assert co.allreduce_time(c, s) == pytest.approx(2 * (n - 1) / n * s / b, rel=1e-12)
    # With latency and launch cost the bandwidth term still dominates a 10 GB message.
    c = cluster(gpus=n, intra=(100.0, 10.0), base_latency_us=8.4)
    assert co.allreduce_time(c, 1e10) / (2 * (n - 1) / n * 1e10 / b) == pytest.approx(1, rel=1e-3)
    assert co.bytes_sent(c, s) == pytest.approx(2 * (n - 1) / n * s)


def test_ring_latency_terms():
    # 4 ranks, 10 us one way, NCCL: 6 steps of (10 us + S/4/B) + 8.4 us.
    c = cluster(gpus=4, intra=(80.0, 10.0), base_latency_us=8.4)
    assert co.allreduce_time(c, 1e6) == pytest.approx(8.4e-6 + 6 * (10e-6 + 0.25e6 / 10e9))
    # gloo over TCP: a step waits a round trip plus software overhead.
    g = cluster(gpus=4, intra=(80.0, 10.0), kind="gloo", step_latency="rtt", step_overhead_us=300.0)
    assert co.allreduce_time(g, 1e6) == pytest.approx(6 * (20e-6 + 300e-6 + 0.25e6 / 10e9))


def test_pipelining_hides_latency_of_middle_messages():
    plain = cluster(gpus=2, intra=(8.0, 1000.0))  # 1 GB/s, 1 ms one way
    piped = cluster(gpus=2, intra=(8.0, 1000.0), segment_bytes=1 << 20)
    s = 8 << 20  # 4 MiB per ring step = 4 segments
    assert co.allreduce_time(plain, s) == pytest.approx(2 * (1e-3 + s / 2 / 1e9))
    assert co.allreduce_time(piped, s) == pytest.approx(2 * max(s / 2 / 1e9 + 1e-3 / 4, 1e-3 + (1 << 20) / 1e9))
    assert co.allreduce_time(piped, 1 << 19) == co.allreduce_time(plain, 1 << 19)  # one segment


def test_window_caps_a_long_link():
    c = cluster(gpus=2, intra=(100.0, 5000.0), window_bytes=1 << 20)  # 10 ms RTT
    assert co.levels(c)[0][1].bandwidth_Bps == pytest.approx((1 << 20) / 0.01)


def test_hierarchical_shares_the_node_nic_among_g_rings():
    # 2 nodes x 4 GPUs, no latency: intra RS + AG of S at B_intra, inter all-reduce of S/4 on 4
    # concurrent rings that share B_inter: 2(g-1)/g·S/B_intra + 2(k-1)/k·(S/g)/(B_inter/g).
    c = cluster(nodes=2, gpus=4, intra=(800.0, 0.0), inter=(100.0, 0.0))
    s, bi, bn = 1e9, 100e9, 12.5e9
    expected = 2 * 3 / 4 * s / bi + 2 * 1 / 2 * (s / 4) / (bn / 4)
    assert co.allreduce_costs(c, s)["hierarchical"] == pytest.approx(expected)
    # The flat ring crosses the NIC with S/8 per step over 14 steps: slower here.
    assert co.allreduce_costs(c, s)["ring"] == pytest.approx(2 * 7 / 8 * s / bn)
    assert co.choose(c.__class__(**{**c.__dict__, "allreduce": "auto"}), s) == "hierarchical"


def test_hierarchical_with_a_wan_tier_has_three_levels():
    wan = WanSpec(groups=2, bandwidth_gbps=10.0, latency_us=0.0)
    c = cluster(nodes=4, gpus=2, intra=(800.0, 0.0), inter=(100.0, 0.0), wan=wan)
    s, bi, bn, bw = 1e9, 100e9, 12.5e9, 1.25e9
    # intra RS/AG (g=2), inter RS/AG within a group (2 nodes, S/2, 2 flows per NIC), WAN all-reduce
    # of S/4 by the 4 flows of a group sharing the group's WAN link.
    expected = (2 * 1 / 2 * s / bi + 2 * 1 / 2 * (s / 2) / (bn / 2) + 2 * 1 / 2 * (s / 4) / (bw / 4))
    assert co.allreduce_costs(c, s)["hierarchical"] == pytest.approx(expected)
    assert [r for r, _ in co.levels(c)] == [2, 2, 2]


def test_tree_wins_small_messages_ring_wins_large_ones():
    c = cluster(nodes=64, gpus=1, inter=(100.0, 14.0), base_latency_us=8.4)
    small, large = co.allreduce_costs(c, 1e3), co.allreduce_costs(c, 1e9)
    assert small["tree"] < small["ring"]
    assert large["ring"] < large["tree"]
    assert small["tree"] == pytest.approx(8.4e-6 + 2 * math.ceil(math.log2(64)) * 14e-6 + 2e3 / 12.5e9)
    auto = c.__class__(**{**c.__dict__, "allreduce": "auto"})
    assert co.allreduce_time(auto, 1e3) == small["tree"]
    assert co.allreduce_time(auto, 1e9) == min(large.values())


def test_gloo_rings_only_and_one_rank_costs_nothing():
    g = cluster(gpus=4, kind="gloo")
    assert set(co.allreduce_costs(g, 1e6)) == {"ring"}
    assert co.allreduce_time(cluster(gpus=1), 1e9) == 0.0


def test_a_gloo_barrier_is_a_chain_of_one_way_hops_each_on_its_own_link():
    # One element fills one of gloo's 2n segments: it hops n-1, ..., 0, n-1, ..., 1, each hop one way on
    # its own link. 2 nodes x 2 ranks: the chain 3-2-1-0-3-2-1 crosses nodes 3 times (2-1, 0-3, 2-1).
    two_by_two = cluster(nodes=2, gpus=2, intra=(800.0, 10.0), inter=(1.0, 5000.0), kind="gloo",
                         step_overhead_us=100.0)
    assert co.barrier_time(two_by_two) == pytest.approx(3 * 5e-3 + 3 * 10e-6 + 6 * 100e-6)
    # One rank per node: every hop crosses, 2(n-1) of them.
    four_nodes = cluster(nodes=4, gpus=1, inter=(1.0, 5000.0), kind="gloo", step_overhead_us=100.0)
    assert co.barrier_time(four_nodes) == pytest.approx(6 * (5e-3 + 100e-6))
    # A WAN hop between groups of nodes costs the WAN's latency (2 groups of 1 node x 1 rank).
    wan = cluster(nodes=2, gpus=1, inter=(1.0, 5000.0), kind="gloo",
                  wan=WanSpec(groups=2, bandwidth_gbps=0.1, latency_us=20000.0))
    assert co.barrier_time(wan) == pytest.approx(2 * 20e-3)


def test_an_nccl_barrier_pays_the_latency_part_of_a_ring():
    c = cluster(nodes=2, gpus=2, intra=(800.0, 10.0), inter=(1.0, 5000.0), kind="nccl", step_latency="one_way")
    assert co.barrier_time(c) == pytest.approx(6 * 5e-3)


def test_gloo_barrier_chain_in_closed_form_equals_the_hop_by_hop_chain():
    """The barrier's chain n-1, ..., 0, n-1, ..., 1 summed hop by hop on small clusters (two tiers and a
    WAN) equals the closed form the simulator uses, which a cluster of 60 M workers needs."""
    import itertools

    from palsgd.core.config import load
    from palsgd.sim import collectives

    for nodes, per_node, groups in [(1, 2, 1), (2, 1, 1), (2, 4, 1), (4, 2, 2), (8, 1, 4), (6, 5, 3)]:
        cluster = load(cluster="cpu-2core-gloo", overrides=[
            f"cluster.nodes={nodes}", f"cluster.gpus_per_node={per_node}", f"cluster.wan.groups={groups}",
            "cluster.intra_node.latency_us=7", "cluster.inter_node.latency_us=100",
            "cluster.wan.latency_us=5000"]).cluster
        n = cluster.workers
        chain = [(n - 1 - i) % n for i in range(2 * n - 1)]
        hops = sum(collectives._hop_latency_s(cluster, a, b) for a, b in itertools.pairwise(chain))
        overhead = collectives._base(cluster.transport, True) + 2 * (n - 1) * cluster.transport.step_overhead_us * 1e-6
        assert collectives.barrier_time(cluster) == pytest.approx(hops + overhead, rel=1e-12)
    huge = load(workload="gpt-tiny", cluster="cpu-2core-gloo", overrides=["cluster.nodes=30000000"]).cluster
    assert collectives.barrier_time(huge) > 0  # instant: no per-rank loop


@pytest.mark.parametrize("n", [8, 64, 256])
def test_an_allgather_grows_with_the_workers_unlike_an_allreduce(n):
    m = 1e6  # each rank's message; everyone receives the other n - 1
    c = cluster(gpus=n, intra=(100.0, 0.0))
    b = 100e9 / 8
    assert co.allgather_time(c, m) == pytest.approx((n - 1) * m / b, rel=1e-12)
    assert co.allgather_bytes_sent(c, m) == (n - 1) * m
    # The all-reduce of everyone's messages summed densely stays under 2·(n·m)/B whatever n.
    assert co.allreduce_time(c, n * m) < 2 * n * m / b
    assert co.allgather_time(cluster(gpus=64, intra=(100.0, 0.0)), m) == pytest.approx(
        9 * co.allgather_time(cluster(gpus=8, intra=(100.0, 0.0)), m))


def test_an_allgather_step_waits_for_its_slowest_tier():
    m = 4e6
    # 8 nodes x 8: NVLink at 800 Gbit/s, 1 us; InfiniBand at 100 Gbit/s, 5 us. NCCL (one-way latency).
    c = cluster(nodes=8, gpus=8, intra=(800.0, 1.0), inter=(100.0, 5.0))
    assert co.allgather_time(c, m) == pytest.approx(63 * (5e-6 + m / (100e9 / 8)))
    # A WAN tier at 10 Gbit/s, 20 ms: its hop sets the pace of every step.
    w = cluster(nodes=8, gpus=8, intra=(800.0, 1.0), inter=(100.0, 5.0), wan=WanSpec(groups=2, bandwidth_gbps=10.0,
                                                                                      latency_us=20_000.0))
    assert co.allgather_time(w, m) == pytest.approx(63 * (20e-3 + m / (10e9 / 8)))


def test_gloo_pipelines_an_allgather_in_two_halves_nccl_in_its_segment():
    # 2 x 4 over 100 Mbit/s with a 20 ms round trip, as the cluster suite's slow link: a 620 KB message
    # per rank, 7 ring steps. gloo's allgather keeps two halves of each block in flight (gloo/allgather.cc),
    # whatever segment its all-reduce was fitted with; NCCL chunks it in the transport's segment.
    m, b, rtt = 620e3, 100e6 / 8, 20e-3
    gloo = cluster(nodes=2, gpus=4, inter=(0.1, rtt / 2 * 1e6), kind="gloo", step_latency="rtt",
                   segment_bytes=65536)
    half_in_flight = max(m / b + rtt / 2, rtt + m / 2 / b)
    assert co.allgather_time(gloo, m) == pytest.approx(7 * half_in_flight, rel=1e-12)
    nccl = cluster(nodes=2, gpus=4, inter=(0.1, rtt * 1e6), segment_bytes=65536)
    assert co.allgather_time(nccl, m) == pytest.approx(7 * (m / b + rtt / math.ceil(m / 65536)), rel=1e-12)
