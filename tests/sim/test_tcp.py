"""TCP's slow start after idle (sim/tcp.py), on numbers checked by hand.

The link: 1 Gbit/s = 125e6 B/s, RTT 10 ms, MSS 8948 B (9000 B MTU). Its bandwidth-delay product is
1.25e6 B = 139.7 segments; with a 2.5e6 B queue the window before idle is 3.75e6 B = 419.1 segments.
RTO = 200 ms + 10 ms = 0.21 s.
"""

from __future__ import annotations

import pytest

from palsgd.core.cluster import ClusterSpec, LinkSpec, TransportSpec
from palsgd.sim import costs, tcp
from palsgd.sim.costs import step_costs

B, RTT, MSS, QUEUE = 125e6, 0.010, 8948, 2_500_000
WINDOW = (B * RTT + QUEUE) / MSS
RTO = 0.21


def test_restart_window_halves_once_per_rto_after_the_first():
    assert tcp.rto_s(RTT, TransportSpec()) == pytest.approx(RTO)
    assert tcp.restart_window(0.2, WINDOW, RTO, 10) == WINDOW  # idle shorter than the RTO: no restart
    # 1 s idle: ceil(1 / 0.21) - 1 = 4 halvings, 419.1 / 16 = 26.2 segments (measured on the emulated
    # link with Reno: 29-30, docs/network-emulation.md)
    assert tcp.restart_window(1.0, WINDOW, RTO, 10) == pytest.approx(WINDOW / 16)
    assert tcp.restart_window(10.0, WINDOW, RTO, 10) == 10  # 47 halvings, floored at the initial window


def test_ramp_cost_by_hand():
    start = WINDOW / 16  # 234 375 B
    # W = 139.7 segments: r = ceil(log2(139.7 / 26.2)) = 3 round trips carrying 234 375 x 7 = 1 640 625 B:
    # extra = 3 x 10 ms - 1 640 625 / 125e6 = 30 - 13.125 = 16.875 ms for any flow of more than that
    assert tcp.ramp_extra_s(32e6, B, RTT, start, MSS) == pytest.approx(0.016875)
    assert tcp.ramp_extra_s(1_640_625, B, RTT, start, MSS) == pytest.approx(0.016875)
    # 500 kB: ceil(log2(500 000 / 234 375 + 1)) = 2 round trips; at full rate it takes 4 ms: extra 16 ms
    assert tcp.ramp_extra_s(500_000, B, RTT, start, MSS) == pytest.approx(0.016)
    # from the initial window: 4 round trips carry 10 x 8948 x 15 = 1 342 200 B: 40 - 10.7376 ms
    assert tcp.ramp_extra_s(32e6, B, RTT, 10, MSS) == pytest.approx(0.0292624)
    assert tcp.ramp_extra_s(32e6, B, RTT, WINDOW / 2, MSS) == 0.0  # 209.6 segments still cover the BDP


def two_nodes(**transport) -> ClusterSpec:
    t = TransportSpec(kind="gloo", efficiency=1.0, base_latency_us=0.0, mss_bytes=MSS, queue_bytes=QUEUE,
                      **transport)
    return ClusterSpec(nodes=2, gpus_per_node=1, inter_node=LinkSpec(1.0, 5000.0), transport=t)


def test_a_collective_after_idle_pays_the_ramp_only_when_asked():
    assert tcp.idle_restart_s(two_nodes(slow_start_after_idle=True), 32e6, 1.0) == pytest.approx(0.016875)
    assert tcp.idle_restart_s(two_nodes(slow_start_after_idle=False), 32e6, 1.0) == 0.0
    assert tcp.idle_restart_s(two_nodes(slow_start_after_idle=True), 32e6, 0.2) == 0.0


def test_step_costs_charge_the_sync_and_ddp_first_bucket(tiny):
    """The tiny experiment (c = 1 s, o = 0.1 s, H = 2, payload 2 MiB) on the link above, 2 ranks.

    A sync of Local SGD sends 2 MiB per worker after H (c + o) = 2.2 s idle: 10 halvings reach the
    initial window: 29.2624 ms extra (as above). DDP's first bucket (ready at 2/3 of c) follows
    o + 2/3 c = 0.767 s of idle: 3 halvings, 52.4 segments, r = 2 round trips carrying 1 406 250 B:
    20 - 11.25 = 8.75 ms extra; the step sends 2 MiB in all."""
    link = {"intra_node": {"bandwidth_gbps": 1.0, "latency_us": 5000.0},
            "transport": {"kind": "gloo", "mss_bytes": MSS, "queue_bytes": QUEUE}}
    on = tiny({"cluster": {**link, "transport": {**link["transport"], "slow_start_after_idle": True}}})
    off = tiny({"cluster": link})
    for algo in ("local_sgd", "ddp"):
        a, b = step_costs(on, on.algorithm(algo)), step_costs(off, off.algorithm(algo))
        if algo == "local_sgd":
            assert a.sync_s - b.sync_s == pytest.approx(0.0292624)
        assert a.bucket_s[0] - b.bucket_s[0] == pytest.approx(0.00875)
        assert list(a.bucket_s[1:]) == list(b.bucket_s[1:])
    assert costs.ddp_idle_restart(off.cluster, b.bucket_s, [1.0], 1.0, 0.1, [0.5]) is b.bucket_s
