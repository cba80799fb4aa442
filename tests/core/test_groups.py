"""Replica groups (``core/groups.py``): the config key, the layout and the tiers each collective crosses."""

from __future__ import annotations

import numpy as np
import pytest

from palsgd.core import config
from palsgd.core.algorithms import PSEUDO_SYNC_STEP, plan, plan_for
from palsgd.core.cluster import ClusterSpec, WanSpec
from palsgd.core.errors import ConfigError
from palsgd.core.groups import ReplicaGroups, group_cluster, layout, sync_cluster


def load(*sets, algorithms=("ddp", "diloco")):
    return config.load(algorithms=list(algorithms), steps=200,
                       overrides=["algorithm.warmup_steps=0", "algorithm.sync_every=10", *sets])


def test_default_is_worker_and_node_is_a_node():
    exp = load()
    assert exp.algorithm("diloco").replica_group == "worker" and exp.group_size(exp.algorithm("diloco")) == 1
    exp = load('algorithm.replica_group="node"')
    assert exp.group_size(exp.algorithm("diloco")) == exp.cluster.gpus_per_node == 8
    assert exp.group_size(exp.algorithm("ddp")) == 1  # DDP has no groups: every step spans all workers
    assert exp.group_size(load("algorithm.replica_group=16").algorithm("diloco")) == 16


@pytest.mark.parametrize("value, rule", [
    ("3", "must divide the number of workers (32)"),
    ("12", "must divide the number of workers (32)"),
    ("0", "must be \"worker\", \"node\" or a number of workers >= 1"),
    ('"rack"', "must be one of: worker, node or an integer"),
])
def test_bad_values_are_one_clear_error(value, rule):
    with pytest.raises(ConfigError, match="replica_group") as err:
        load(f"algorithm.replica_group={value}")
    assert rule in str(err.value) and str(err.value).startswith("--set: ")


def test_a_group_is_part_of_a_node_or_whole_nodes():
    with pytest.raises(ConfigError, match=r"must divide gpus_per_node \(4\)"):
        load("cluster.nodes=6", "cluster.gpus_per_node=4", "algorithm.replica_group=6")
    with pytest.raises(ConfigError, match=r"cluster.failures.policy = 'rejoin'"):
        load("algorithm.replica_group=2", "cluster.failures.mtbf_s=100", 'cluster.failures.policy="rejoin"')


def test_layout_members_and_peers():
    g = ReplicaGroups(workers=8, size=4)
    assert g.count == 2 and g.all_members() == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert g.all_peers() == [(0, 4), (1, 5), (2, 6), (3, 7)]
    assert [g.group(r) for r in range(8)] == [0] * 4 + [1] * 4 and g.position(6) == 2
    # Every rank is in exactly one group and in exactly one sync ring, which holds one rank per group.
    for ring in g.all_peers():
        assert sorted(g.group(r) for r in ring) == list(range(g.count))
    assert layout("worker", ClusterSpec(nodes=2, gpus_per_node=2)).all_peers() == [(0, 1, 2, 3)]


def test_tiers_of_a_node_group():
    cl = ClusterSpec(nodes=4, gpus_per_node=8)
    inside = group_cluster(cl, 8)  # one node: NVLink only
    assert (inside.nodes, inside.gpus_per_node) == (1, 8)
    ring = sync_cluster(cl, 8)  # 4 ranks, one per node, 8 rings share each node's NIC
    assert (ring.nodes, ring.gpus_per_node, ring.workers) == (4, 1, 4)
    assert ring.inter_node.bandwidth_gbps == cl.inter_node.bandwidth_gbps / 8
    half = sync_cluster(cl, 4)  # two groups per node: 4 rings of 8 ranks, 2 on each node
    assert (half.nodes, half.gpus_per_node, half.inter_node.bandwidth_gbps) == (4, 2, 25.0)
    two = group_cluster(cl, 16)  # a group of two nodes crosses their NICs
    assert (two.nodes, two.gpus_per_node) == (2, 8)
    assert (sync_cluster(cl, 16).nodes, sync_cluster(cl, 16).inter_node.bandwidth_gbps) == (2, 12.5)


def test_tiers_across_a_wan():
    cl = ClusterSpec(nodes=4, gpus_per_node=2, wan=WanSpec(groups=2, bandwidth_gbps=10.0))
    ring = sync_cluster(cl, 2)  # node groups: 4 ranks on 4 nodes in 2 WAN groups; 2 rings per WAN link
    assert (ring.nodes, ring.wan.groups, ring.wan.bandwidth_gbps) == (4, 2, 5.0)
    dc = sync_cluster(cl, 4)  # a datacenter per group: 2 ranks, one per WAN group
    assert (dc.workers, dc.wan.groups, dc.wan.bandwidth_gbps) == (2, 2, 2.5)
    assert group_cluster(cl, 4).wan.groups == 1 and group_cluster(cl, 8).wan.groups == 2


def test_independent_draws_are_one_per_group():
    kw = dict(workers=4, steps=300, seed=3, sync_every=5, p=0.3, skip_draws="independent")
    grouped = plan("palsgd", group_size=2, **kw).kinds == PSEUDO_SYNC_STEP
    alone = plan("palsgd", **kw).kinds == PSEUDO_SYNC_STEP
    assert (grouped[0] == grouped[1]).all() and (grouped[2] == grouped[3]).all()
    assert not (grouped[0] == grouped[2]).all()
    # Group j draws stream j + 1, as worker j does without groups.
    assert (grouped[0] == alone[0]).all() and (grouped[2] == alone[1]).all()


def test_plan_for_carries_the_group_and_keeps_the_steps():
    exp = load('algorithm.replica_group="node"', algorithms=("diloco",))
    grouped = plan_for(exp, exp.algorithms[0], 0)
    flat = plan_for(load(algorithms=("diloco",)), load(algorithms=("diloco",)).algorithms[0], 0)
    assert grouped.group_size == 8 and flat.group_size == 1
    assert np.array_equal(grouped.kinds, flat.kinds) and np.array_equal(grouped.sync_after, flat.sync_after)


def test_round_trip_keeps_the_group():
    exp = load("algorithm.replica_group=4")
    again = config.from_dict(exp.to_dict())
    assert again.algorithm("diloco").replica_group == 4 and again.algorithm("ddp").replica_group == "worker"


def test_the_prior_counts_replica_groups_as_its_replicas():
    from palsgd.core import prior, to_target

    exp = load('algorithm.replica_group="node"', "algorithm.sync_every=30", algorithms=("ddp", "diloco"))
    assert prior.replicas(exp, exp.algorithm("diloco")) == 4 and prior.replicas(exp, exp.algorithm("ddp")) == 32
    found = to_target.answers(exp)["diloco"]
    assert found.source == prior.NAME and "M = 4" in found.note
    alone = to_target.answers(load("algorithm.sync_every=30", algorithms=("ddp", "diloco")))["diloco"]
    assert alone.steps_vs_ddp is None and "M = 32" in alone.note  # outside the paper's M = 1..8
