"""What one all-reduce of S bytes costs on a ClusterSpec: ring, tree, hierarchical, and ``auto``.

Alpha-beta model (Hockney 1994; Thakur, Rabenseifner & Gropp, "Optimization of Collective
Communication Operations in MPICH", IJHPCA 2005): a message of c bytes over a link costs
α + c/B. The transport shapes α and B (docs/model.md):

* α (one ring step) = one-way latency (NCCL) or one round trip (gloo over TCP: measured ~RTT)
  + ``step_overhead_us`` (gloo: 0.2-0.4 ms of software per step, measured here);
* B = line rate x ``efficiency``, capped per flow at ``window_bytes`` / RTT (a TCP window on a long
  link: throughput = window / RTT);
* ``base_latency_us`` is paid once per collective call (NCCL ``tuning.cc``: 8.4 us ring/simple).

Concurrent collectives that share a link share its bandwidth. A hierarchical all-reduce runs g
inter-node rings at once (one per local rank), all through the same node NICs: each gets B_inter/g.
With a WAN tier, the g·k_group flows of a group all leave through the group's WAN link: each gets
B_wan/(g·k_group). The division is done explicitly in ``_hierarchical``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core import sparse
from ..core.cluster import ClusterSpec, TransportSpec

_US = 1e-6


@dataclass(frozen=True)
class Tier:
    """One level of the network: bytes/s a flow gets, one-way latency, and ranks per instance."""

    bandwidth_Bps: float
    latency_s: float


def _tier(bandwidth_gbps: float, latency_us: float, transport: TransportSpec, flows: int = 1) -> Tier:
    """Line rate x efficiency, shared by ``flows`` concurrent flows, each capped at window / RTT."""
    bw = bandwidth_gbps * 1e9 / 8 * transport.efficiency / flows
    rtt = 2 * latency_us * _US
    if transport.window_bytes and rtt > 0:
        bw = min(bw, transport.window_bytes / rtt)  # TCP: at most one window in flight per round trip
    return Tier(bw, latency_us * _US)


def _alpha(tier_latency_s: float, transport: TransportSpec) -> float:
    """Latency of one ring step: one-way (NCCL) or a round trip (gloo over TCP, measured: within 2-16%)."""
    hops = 2.0 if transport.step_latency == "rtt" else 1.0
    return hops * tier_latency_s + transport.step_overhead_us * _US


def _step(chunk: float, tier: Tier, alpha: float, segment: int) -> float:
    """One ring step moving ``chunk`` bytes: α + c/B, or pipelined in segments of s bytes.

    Pipelined (gloo, NCCL's chunking): k = ceil(c/s) segments stream back to back, so the latency
    hides behind the transfer: max(c/B + α/k, α + s/B). k = 1 gives α + c/B again; for large c it
    tends to c/B. Our approximation, chosen to fit the measured fact that α+β over-predicts
    256 KiB-4 MiB messages by up to 70% under gloo.
    """
    transfer = chunk / tier.bandwidth_Bps
    if segment <= 0 or chunk <= segment:
        return alpha + transfer
    k = math.ceil(chunk / segment)
    return max(transfer + alpha / k, alpha + segment / tier.bandwidth_Bps)


def ring_allreduce(nbytes: float, ranks: int, tier: Tier, transport: TransportSpec,
                   base: bool = True) -> float:
    """Ring all-reduce (Patarasuk & Yuan 2009; Thakur et al. 2005, eq. for reduce-scatter + allgather):
    2(n-1) steps of S/n bytes: T = 2(n-1)·(α + S/(n·B)) = 2(n-1)·α + 2(n-1)/n · S/B."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    alpha = _alpha(tier.latency_s, transport)
    steps = 2 * (ranks - 1)
    return _base(transport, base) + steps * _step(nbytes / ranks, tier, alpha, transport.segment_bytes)


def ring_half(nbytes: float, ranks: int, tier: Tier, transport: TransportSpec) -> float:
    """Reduce-scatter (or all-gather) on a ring: (n-1) steps of S/n bytes: (n-1)·α + (n-1)/n·S/B."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    alpha = _alpha(tier.latency_s, transport)
    return _base(transport, True) + (ranks - 1) * _step(nbytes / ranks, tier, alpha, transport.segment_bytes)


def tree_allreduce(nbytes: float, ranks: int, tier: Tier, transport: TransportSpec) -> float:
    """Pipelined double binary tree (Sanders, Speck & Träff 2009; NCCL >= 2.4): a reduce up and a
    broadcast down, 2·ceil(log2 n) latency steps; each rank sends S/2 up one tree, S/2 up the other
    and S down the tree where it is interior: 2S in all. T = 2·ceil(log2 n)·α + 2·S/B."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    alpha = _alpha(tier.latency_s, transport)
    return _base(transport, True) + 2 * math.ceil(math.log2(ranks)) * alpha + 2 * nbytes / tier.bandwidth_Bps


def _base(transport: TransportSpec, charge: bool) -> float:
    return transport.base_latency_us * _US if charge else 0.0


# ---------------------------------------------------------------------------------------------
# The cluster's tiers


def levels(cluster: ClusterSpec) -> list[tuple[int, Tier]]:
    """(ranks, tier) of each level of a hierarchical all-reduce, innermost first, with the bandwidth
    each concurrent flow gets: intra-node (one flow per GPU link), inter-node within a group (g rings
    share the node NICs), WAN between groups (g·k_group flows share the group's WAN link)."""
    t = cluster.transport
    g, groups = cluster.gpus_per_node, cluster.wan.groups
    per_group = cluster.nodes // groups
    out = [(g, _tier(cluster.intra_node.bandwidth_gbps, cluster.intra_node.latency_us, t))]
    out.append((per_group, _tier(cluster.inter_node.bandwidth_gbps, cluster.inter_node.latency_us, t, g)))
    out.append((groups, _tier(cluster.wan.bandwidth_gbps, cluster.wan.latency_us, t, g * per_group)))
    return [(r, tier) for r, tier in out if r > 1]


def flat_tier(cluster: ClusterSpec) -> Tier:
    """The tier a flat ring or tree over all ranks sees: ranks are placed node by node, every step
    waits for its slowest hop, so bandwidth is the minimum and latency the maximum over the tiers it
    crosses. A node's NICs together carry its ring edges (NCCL spreads channels over all NICs)."""
    tiers = ring_tiers(cluster)
    return Tier(min(x.bandwidth_Bps for x in tiers), max(x.latency_s for x in tiers))


def ring_tiers(cluster: ClusterSpec) -> list[Tier]:
    """The tiers a flat ring over all ranks (placed node by node) has hops on: intra-node, inter-node,
    WAN, each as one flow sees it."""
    t = cluster.transport
    tiers = [_tier(cluster.intra_node.bandwidth_gbps, cluster.intra_node.latency_us, t)]
    if cluster.nodes > 1:
        tiers.append(_tier(cluster.inter_node.bandwidth_gbps, cluster.inter_node.latency_us, t))
    if cluster.wan.groups > 1:
        tiers.append(_tier(cluster.wan.bandwidth_gbps, cluster.wan.latency_us, t))
    if cluster.gpus_per_node == 1 and cluster.nodes > 1:
        tiers = tiers[1:]  # one GPU per node: no intra-node hop on the ring
    return tiers


def _hierarchical(nbytes: float, cluster: ClusterSpec) -> float:
    """Reduce-scatter inward level by level, all-reduce the 1/(g·k...) shard at the outermost level,
    all-gather outward (Thakur et al. 2005; NCCL's tree/CollNet and Horovod's hierarchical mode):
    T = Σ_inner 2·[(r-1)·α + (r-1)/r · S_i/B_i] + T_ring(S_last, r_last), S_{i+1} = S_i / r_i.
    Each level is its own collective call, so each pays the base latency."""
    lv = levels(cluster)
    if not lv:
        return 0.0
    t, total, size = cluster.transport, 0.0, float(nbytes)
    for ranks, tier in lv[:-1]:
        total += 2 * ring_half(size, ranks, tier, t)
        size /= ranks
    ranks, tier = lv[-1]
    return total + ring_allreduce(size, ranks, tier, t)


def allreduce_costs(cluster: ClusterSpec, nbytes: float) -> dict[str, float]:
    """Seconds for each all-reduce algorithm this cluster and transport can run."""
    n = cluster.workers
    flat = flat_tier(cluster)
    t = cluster.transport
    out = {"ring": ring_allreduce(nbytes, n, flat, t)}
    if t.kind == "nccl" or cluster.allreduce == "tree":
        out["tree"] = tree_allreduce(nbytes, n, flat, t)
    if len(levels(cluster)) > 1:
        out["hierarchical"] = _hierarchical(nbytes, cluster)
    return out


def choose(cluster: ClusterSpec, nbytes: float) -> str:
    """The algorithm used for a message: the configured one, or under ``auto`` the cheapest, as
    NCCL's tuner picks by predicted time (``tuning.cc``). gloo only rings (its default
    ``allreduce`` on CPU tensors); hierarchical exists only with more than one level."""
    costs = allreduce_costs(cluster, nbytes)
    if cluster.allreduce != "auto":
        return cluster.allreduce if cluster.allreduce in costs else "ring"
    return min(costs, key=costs.get)


def allreduce_time(cluster: ClusterSpec, nbytes: float) -> float:
    """T_AR(S): seconds for one all-reduce of ``nbytes`` with the chosen algorithm."""
    return allreduce_costs(cluster, nbytes)[choose(cluster, nbytes)]


def barrier_time(cluster: ClusterSpec) -> float:
    """A barrier: an all-reduce of one element (what ``real/dist.py`` ``TorchComm.barrier`` runs before
    every sync, so that the wait is measured apart from the transfer).

    gloo's ring (``gloo/allreduce.cc``) cuts the buffer into 2n segments, and of a 4-byte buffer only the
    first holds data: it is not a ring step but a chain of 2(n-1) hops, one message each, one after another
    (reduce-scatter from rank n-1 down to rank 0, then all-gather from rank 0 to rank n-1 and down to rank 1).
    Each hop costs its own link's one-way latency + ``step_overhead_us``, not the slowest tier's round trip.
    Measured on emulated nodes at 1 Gbit/s, 5 ms (one-way 5.4 ms), 4 bytes: 2 ranks on 2 nodes 11.4 ms, 4 on
    4 nodes 34.4 ms (chain: 11.9 and 35.8), 2 nodes x 2 ranks 23.3 ms, 2 x 4 35.3 ms (chain: 18.4 and 19.5:
    there a hop inside a node cost 1.6-2 ms, not its 20 us ping, on 2 cores under load 6); the ring's
    2(n-1) round trips said 24-165 ms (``docs/validation.md``). NCCL: the latency part of a ring,
    base + 2(n-1)·α."""
    n = cluster.workers
    if n <= 1:
        return 0.0
    t = cluster.transport
    if t.kind != "gloo":
        return _base(t, True) + 2 * (n - 1) * _alpha(flat_tier(cluster).latency_s, t)
    # The chain n-1, ..., 1, 0, n-1, ..., 1 is the downward run (i+1 -> i for i = 0..n-2) twice, less the
    # hop 1 -> 0 the second time, plus the wrap 0 -> n-1. Counted in closed form (a cluster may have
    # millions of workers): of the n-1 downward hops, nodes-1 cross a node and groups-1 of those a group.
    down = ((n - cluster.nodes) * cluster.intra_node.latency_us + (cluster.nodes - cluster.wan.groups)
            * cluster.inter_node.latency_us + (cluster.wan.groups - 1) * cluster.wan.latency_us) * _US
    hops = 2 * down - _hop_latency_s(cluster, 1, 0) + _hop_latency_s(cluster, 0, n - 1)
    return _base(t, True) + hops + 2 * (n - 1) * t.step_overhead_us * _US


def _hop_latency_s(cluster: ClusterSpec, a: int, b: int) -> float:
    """One-way latency between ranks ``a`` and ``b``, placed node by node and groups of nodes in order."""
    g = cluster.gpus_per_node
    if a // g == b // g:
        return cluster.intra_node.latency_us * _US
    per_group = g * (cluster.nodes // cluster.wan.groups)
    link = cluster.inter_node if a // per_group == b // per_group else cluster.wan
    return link.latency_us * _US


def bytes_sent(cluster: ClusterSpec, nbytes: float) -> float:
    """Bytes one worker sends in that all-reduce: ring 2(n-1)/n·S (the nccl-tests busbw factor),
    tree 2S, hierarchical Σ 2(r-1)/r·S_i over its levels."""
    n = cluster.workers
    if n <= 1 or nbytes <= 0:
        return 0.0
    algo = choose(cluster, nbytes)
    if algo == "ring":
        return 2 * (n - 1) / n * nbytes
    if algo == "tree":
        return 2.0 * nbytes
    total, size = 0.0, float(nbytes)
    for ranks, _ in levels(cluster):
        total += 2 * (ranks - 1) / ranks * size
        size /= ranks
    return total


def allgather_time(cluster: ClusterSpec, message_bytes: float) -> float:
    """A ring all-gather where every one of the n ranks contributes ``message_bytes`` (SparseLoCo's sparse
    message; gloo's ``allgather`` and NCCL's are rings): n-1 steps, each forwarding one whole message over
    every hop of the ring at once, so a step lasts as long as its slowest tier takes for it:
    T = base + (n-1)·max_tier(α_tier + m/B_tier) (``ring_tiers``; pipelined as ``_step``).

    Unlike a ring all-reduce of S bytes, whose transfer 2(n-1)/n·S/B hardly grows with n, every rank
    here receives all n-1 other messages: the time grows linearly with the workers."""
    n = cluster.workers
    if n <= 1 or message_bytes <= 0:
        return 0.0
    t = cluster.transport
    segment = allgather_segment(t, message_bytes)
    step = max(_step(message_bytes, tier, _alpha(tier.latency_s, t), segment) for tier in ring_tiers(cluster))
    return _base(t, True) + (n - 1) * step


def allgather_segment(transport: TransportSpec, message_bytes: float) -> int:
    """The pieces an all-gather's ring step is pipelined in. gloo's ``allgather`` sends every block as two
    halves with both in flight (``gloo/allgather.cc``), whatever the all-reduce's segment is; NCCL chunks
    an all-gather as it chunks an all-reduce (the transport's segment)."""
    if transport.kind == "gloo":
        return math.ceil(message_bytes / 2)
    return transport.segment_bytes


def allgather_bytes_sent(cluster: ClusterSpec, message_bytes: float) -> float:
    """Bytes one rank sends in that all-gather (``core.sparse.allgather_bytes_sent``: (n-1)·m)."""
    return sparse.allgather_bytes_sent(message_bytes, cluster.workers)


def broadcast_time(cluster: ClusterSpec, nbytes: float) -> float:
    """One broadcast of ``nbytes`` from one rank to all (DDP's buffers before a step's forward). gloo: a
    binomial tree (gloo ``broadcast.cc``), ceil(log2 n) rounds each sending the whole buffer:
    ceil(log2 n)·(α + S/B). NCCL: a ring pipelined in chunks from the root (nccl-tests: broadcast
    busbw = algbw): (n-1)·α + S/B."""
    n = cluster.workers
    if n <= 1 or nbytes <= 0:
        return 0.0
    t, tier = cluster.transport, flat_tier(cluster)
    alpha, transfer = _alpha(tier.latency_s, t), nbytes / tier.bandwidth_Bps
    if t.kind == "gloo":
        return _base(t, True) + math.ceil(math.log2(n)) * (alpha + transfer)
    return _base(t, True) + (n - 1) * alpha + transfer


def broadcast_bytes_sent(cluster: ClusterSpec, nbytes: float) -> float:
    """Bytes one worker sends in that broadcast, on average: n-1 copies of S cross the links in either
    algorithm, (n-1)/n·S per worker."""
    n = cluster.workers
    return (n - 1) / n * nbytes if n > 1 else 0.0
