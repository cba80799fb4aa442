"""Replica groups: which ranks train together as DDP and which ranks sync together across groups.

``algorithm.replica_group`` splits the K workers into M = K/s groups of s consecutive ranks (ranks are
placed node by node, so a group of ``gpus_per_node`` ranks is one node). Inside a group every local
gradient step is a DDP step (bucketed all-reduce of the gradients over the group); across groups the
local method syncs every H steps. The sync is made per group position, as torchft's replica groups do
(torchft ``manager.py``: each rank of a replica group all-reduces with the same rank of the other
replica groups): rank r of group j syncs with ranks r, s + r, 2s + r, ... So s rings of M ranks run at
once, and the rings that pass through one node share its NIC.

One layout for both sides: the simulator charges collectives on the tiers these views describe
(``group_cluster``, ``sync_cluster``) and the real harness makes its process groups from ``members`` and
``peers`` (``real/dist.py``). ``s = 1`` (``"worker"``) is the setting without groups: every worker is a
replica, as in the PALSGD paper.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .cluster import ClusterSpec, FailureSpec, LinkSpec, VariabilitySpec, WanSpec
from .errors import ConfigError

REPLICA_GROUP_NAMES = ("worker", "node")


def group_size(replica_group: str | int, cluster: ClusterSpec) -> int:
    """Workers per replica group: 1 for ``"worker"``, ``gpus_per_node`` for ``"node"``, else the number."""
    if replica_group == "worker":
        return 1
    if replica_group == "node":
        return cluster.gpus_per_node
    return int(replica_group)


def check_replica_group(replica_group: str | int, cluster: ClusterSpec, key: str) -> None:
    """ConfigError unless the groups tile the cluster regularly: s divides the workers, and a group is
    either inside one node (s divides gpus_per_node) or whole nodes (gpus_per_node divides s), and
    likewise for the WAN's groups of nodes, so that every group and every sync ring has the same shape."""
    s = group_size(replica_group, cluster)
    k, g = cluster.workers, cluster.gpus_per_node
    per_wan = k // cluster.wan.groups
    rule = None
    if s < 1:
        rule = "must be >= 1"
    elif k % s:
        rule = f"must divide the number of workers ({k})"
    elif g % s and s % g:
        rule = f"must divide gpus_per_node ({g}) or be a multiple of it (a group is part of a node or whole nodes)"
    elif per_wan % s and s % per_wan:
        rule = f"must divide the workers of one WAN group ({per_wan}) or be a multiple of them"
    if rule:
        raise ConfigError(f"{rule}; replica_group is \"worker\", \"node\" or a number of workers",
                          key=key, value=replica_group)


@dataclass(frozen=True)
class ReplicaGroups:
    """M = workers / size groups of ``size`` consecutive ranks."""

    workers: int
    size: int

    def __post_init__(self):
        if self.size < 1 or self.workers % self.size:
            raise ValueError(f"a group of {self.size} does not divide {self.workers} workers")

    @property
    def count(self) -> int:
        """M: the replicas that run the local method."""
        return self.workers // self.size

    def group(self, rank: int) -> int:
        return rank // self.size

    def position(self, rank: int) -> int:
        return rank % self.size

    def members(self, group: int) -> tuple[int, ...]:
        """The ranks that train ``group`` as DDP."""
        return tuple(range(group * self.size, (group + 1) * self.size))

    def peers(self, position: int) -> tuple[int, ...]:
        """The ranks that sync together: the rank at ``position`` of every group."""
        return tuple(range(position, self.workers, self.size))

    def all_members(self) -> list[tuple[int, ...]]:
        return [self.members(j) for j in range(self.count)]

    def all_peers(self) -> list[tuple[int, ...]]:
        return [self.peers(r) for r in range(self.size)]


def ddp_spans(exp) -> dict[str, tuple[int, int]]:
    """{algorithm: (workers per group, W)} of the algorithms of ``exp`` that train in groups: from step W
    on their DDP steps span a group (``core.schema.split_ddp_wait``)."""
    return {a.name: (exp.group_size(a), a.warmup_steps) for a in exp.algorithms if exp.group_size(a) > 1}


def layout(replica_group: str | int, cluster: ClusterSpec) -> ReplicaGroups:
    return ReplicaGroups(cluster.workers, group_size(replica_group, cluster))


def _view(cluster: ClusterSpec, **changes) -> ClusterSpec:
    """The cluster as one collective sees it; variability and failures belong to the whole run."""
    return dataclasses.replace(cluster, variability=VariabilitySpec(), failures=FailureSpec(), **changes)


def group_cluster(cluster: ClusterSpec, size: int) -> ClusterSpec:
    """The tiers one group's DDP all-reduces cross: part of a node (its NVLink), or whole nodes (their
    NICs, and the WAN when a group spans WAN groups). Groups use disjoint GPUs and nodes, so their
    concurrent all-reduces share no link."""
    g = cluster.gpus_per_node
    if size <= g:
        return _view(cluster, nodes=1, gpus_per_node=size, wan=WanSpec())
    nodes = size // g
    per_wan = cluster.nodes // cluster.wan.groups
    wan = dataclasses.replace(cluster.wan, groups=max(1, nodes // per_wan))
    return _view(cluster, nodes=nodes, wan=wan)


def sync_cluster(cluster: ClusterSpec, size: int) -> ClusterSpec:
    """The tiers one sync ring (the ranks at one group position) crosses, with the bandwidth each of the
    ``size`` concurrent rings gets: min(size, gpus_per_node) rings leave each node through its NICs and
    min(size, workers of a WAN group) through each WAN link, sharing them evenly, as the inter-node rings
    of a hierarchical all-reduce do (``sim/collectives.levels``)."""
    if size == 1:
        return cluster
    g, m = cluster.gpus_per_node, cluster.workers // size
    nodes = min(cluster.nodes, m)
    per_wan = cluster.workers // cluster.wan.groups
    inter = LinkSpec(cluster.inter_node.bandwidth_gbps / min(size, g), cluster.inter_node.latency_us)
    wan = WanSpec(min(cluster.wan.groups, m), cluster.wan.bandwidth_gbps / min(size, per_wan),
                  cluster.wan.latency_us)
    return _view(cluster, nodes=nodes, gpus_per_node=m // nodes, inter_node=inter, wan=wan)
