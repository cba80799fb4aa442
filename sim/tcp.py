"""TCP's slow start after idle: what a sync pays when its link was silent for longer than the RTO.

A Linux sender with ``net.ipv4.tcp_slow_start_after_idle = 1`` and a loss-based congestion control (CUBIC,
Reno) restarts after an idle period (``tcp_cwnd_restart``, net/ipv4/tcp_output.c; RFC 2861 and RFC 5681
section 4.1): its window is halved once for every whole RTO the link was idle beyond the first, down to
no less than the initial window, and then grows by slow start, doubling once per round trip, until it
covers the bandwidth-delay product again. BBR sets its own pacing and is not restarted
(``tcp_slow_start_after_idle_check`` returns early for a congestion control with ``cong_control``).

The cost, for one flow of ``B`` bytes/s and round trip ``RTT`` that sends ``V`` bytes from a window of
``w0`` segments of ``MSS`` bytes, against the same flow at full rate from its first byte:

* the window must reach ``W = B·RTT / MSS`` segments: ``r = ceil(log2(W / w0))`` round trips of
  ``w0·MSS, 2·w0·MSS, ...`` bytes, ``R = w0·MSS·(2^r − 1)`` bytes in all;
* ``V ≥ R``: the ramp's r round trips carry R bytes that would have taken R/B: extra ``r·RTT − R/B``;
* ``V < R``: it is sent in ``q = ceil(log2(V / (w0·MSS) + 1))`` round trips: extra ``q·RTT − V/B``
  (the full-rate flow still needs ``V/B``), at least 0.

The window before the idle period is the one a loss-based sender reaches: the bandwidth-delay product
plus the bottleneck's queue (``transport.queue_bytes``). The RTO is ``rto_min + RTT``: Linux's RTO is
srtt + rttvar with rttvar floored at ``tcp_rto_min`` (200 ms), and a steady link's variance is far below
that. A ring all-reduce runs 2(n−1) steps back to back, each shorter than the RTO, so only its first
bytes start from the restarted window and the ramp goes on over the following steps: the flow's V is
everything one worker sends in the collective.
"""

from __future__ import annotations

import math

from ..core.cluster import ClusterSpec, TransportSpec
from .collectives import ring_tiers


def rto_s(rtt_s: float, transport: TransportSpec) -> float:
    """Linux's retransmission timeout on a steady link: the minimum RTO plus one round trip."""
    return transport.rto_min_ms * 1e-3 + rtt_s


def restart_window(idle_s: float, window_segments: float, rto: float, initial_segments: int) -> float:
    """Segments the window restarts from after ``idle_s`` of silence (``tcp_cwnd_restart``): halved once for
    each RTO elapsed after the first, never below the initial window (nor above the old window)."""
    if idle_s <= rto:
        return window_segments
    halvings = math.ceil(idle_s / rto) - 1
    return max(min(initial_segments, window_segments), window_segments / 2 ** halvings)


def ramp_extra_s(nbytes: float, bandwidth_Bps: float, rtt_s: float, window_segments: float, mss_bytes: int) -> float:
    """Seconds a flow sending ``nbytes`` from a window of ``window_segments`` takes beyond the same flow
    at full rate (module docstring)."""
    if nbytes <= 0 or rtt_s <= 0:
        return 0.0
    full = bandwidth_Bps * rtt_s / mss_bytes  # segments covering the bandwidth-delay product
    if window_segments >= full:
        return 0.0
    first = window_segments * mss_bytes
    rounds = math.ceil(math.log2(full / window_segments))
    ramp_bytes = first * (2 ** rounds - 1)
    if nbytes >= ramp_bytes:
        return rounds * rtt_s - ramp_bytes / bandwidth_Bps
    rounds = math.ceil(math.log2(nbytes / first + 1))
    return max(0.0, rounds * rtt_s - nbytes / bandwidth_Bps)


def idle_restart_s(cluster: ClusterSpec, nbytes: float, idle_s: float) -> float:
    """What a collective in which one worker sends ``nbytes`` pays after ``idle_s`` of silence on its
    links, when ``transport.slow_start_after_idle`` is set: the slowest of the ring's tiers (the tiers'
    flows ramp at the same time). 0 when it is not set or no tier was idle longer than its RTO."""
    t = cluster.transport
    if not t.slow_start_after_idle or nbytes <= 0 or cluster.workers <= 1:
        return 0.0
    worst = 0.0
    for tier in ring_tiers(cluster):
        rtt = 2 * tier.latency_s
        window = (tier.bandwidth_Bps * rtt + t.queue_bytes) / t.mss_bytes
        start = restart_window(idle_s, window, rto_s(rtt, t), t.initial_window_segments)
        worst = max(worst, ramp_extra_s(nbytes, tier.bandwidth_Bps, rtt, start, t.mss_bytes))
    return worst
