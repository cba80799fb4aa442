"""Replica groups in the simulator: exact event logs checked by hand, and closed forms.

2 nodes x 2 workers, a group per node (M = 2 replicas of 2 workers). Inside a node the tiny cluster's
ring of 2 (B = 2·S bytes/s, no latency) gives each 1 MiB DDP bucket 0.25 s, as in test_event_log.py.
Between nodes the same line rate, shared by the 2 sync rings (one per group position) that leave each
node: a sync's ring of 2 ranks gets B/2 = S bytes/s, so T_AR(S) = 2(2-1)/2 · S / (S/s) = 1 s.
"""

from __future__ import annotations

import numpy as np

from palsgd.core.typed import merge
from palsgd.sim.costs import step_costs
from palsgd.sim.engine import simulate

MIB = 1 << 20
S = 2 * MIB


def grouped(tiny, overrides=None, **kw):
    """The tiny experiment on 2 nodes of 2 workers, a replica group per node."""
    base = {"cluster": {"nodes": 2, "inter_node": {"bandwidth_gbps": 2 * S * 8 / 1e9, "latency_us": 0.0}},
            "algorithm": {"replica_group": "node"}}
    merge(base, overrides or {}, {}, "test")
    return tiny(base, **kw)


def log(exp, algorithm, workers=None, steps=None):
    res = simulate(exp, record_steps=True)
    s = res.steps[res.steps["algorithm"] == algorithm]
    return [(int(r.worker), int(r.step), r.phase, round(r.start_s, 9), round(r.end_s, 9), round(r.bytes))
            for r in s.itertuples() if (workers is None or r.worker in workers) and (steps is None or r.step in steps)]


def ddp_step(t, start):
    """One in-group DDP step from ``start``: c 1 s; bucket 0 (ready at 2/3) hidden under the backward's
    last 0.25 s, bucket 1 (ready at 1) exposed 0.25 s; o 0.1 s. Half the step's 2 MiB is sent hidden."""
    r = lambda x: round(start + x, 9)  # noqa: E731
    return [(t, "compute", r(0), r(1), 0), (t, "allreduce_hidden", r(0.75), r(1), MIB),
            (t, "allreduce", r(1), r(1.25), MIB), (t, "optimizer", r(1.25), r(1.35), 0)]


def test_diloco_node_groups_event_log(tiny):
    exp = grouped(tiny, algorithms=["diloco"])
    assert exp.group_size(exp.algorithms[0]) == 2
    # Steps 0-1 DDP inside each node; after step 1 the sync across nodes: T_AR 2.7..3.7 (2 MiB sent by
    # each rank: 2(2-1)/2 · S), u 3.7..3.9. Steps 2-3 the same from 3.9.
    rows = [*ddp_step(0, 0.0), *ddp_step(1, 1.35), (1, "allreduce", 2.7, 3.7, S), (1, "outer_step", 3.7, 3.9, 0),
            *ddp_step(2, 3.9), *ddp_step(3, 5.25), (3, "allreduce", 6.6, 7.6, S), (3, "outer_step", 7.6, 7.8, 0)]
    assert log(exp, "diloco") == [(w, *r) for w in range(4) for r in rows]


def test_a_straggler_holds_up_its_group_then_the_other_group_at_the_sync(tiny):
    exp = grouped(tiny, {"cluster": {"variability": {"slow_workers": 1, "slow_factor": 2.0}}},
                  algorithms=["local_sgd"], steps=2)
    # Worker 3 (group 1) computes 2 s: its buckets are ready at 4/3 and 2, bucket 1 runs 2..2.25, so
    # worker 2 waits 1..2 and group 1 ends step 0 at 2.35. Group 0 ends it at 1.35 (as alone) and waits
    # at the sync's barrier until 2.35; the sync (Local SGD averages after step W = 0) runs 2.35..3.35.
    assert log(exp, "local_sgd", workers=(0, 2, 3), steps=(0,)) == [
        (0, 0, "compute", 0.0, 1.0, 0), (0, 0, "allreduce_hidden", 0.75, 1.0, MIB),
        (0, 0, "allreduce", 1.0, 1.25, MIB), (0, 0, "optimizer", 1.25, 1.35, 0), (0, 0, "wait", 1.35, 2.35, 0),
        (0, 0, "allreduce", 2.35, 3.35, S),
        (2, 0, "compute", 0.0, 1.0, 0), (2, 0, "wait", 1.0, 2.0, 0), (2, 0, "allreduce_hidden", 1.75, 2.0, MIB),
        (2, 0, "allreduce", 2.0, 2.25, MIB), (2, 0, "optimizer", 2.25, 2.35, 0), (2, 0, "allreduce", 2.35, 3.35, S),
        (3, 0, "compute", 0.0, 2.0, 0), (3, 0, "allreduce_hidden", 1.75, 2.0, MIB),
        (3, 0, "allreduce", 2.0, 2.25, MIB), (3, 0, "optimizer", 2.25, 2.35, 0), (3, 0, "allreduce", 2.35, 3.35, S),
    ]


def test_palsgd_groups_take_their_pseudo_sync_steps_together(tiny):
    exp = grouped(tiny, {"algorithm": {"skip_draws": "independent"}}, algorithms=["palsgd"], steps=4)
    # Independent draws, one per group: group 0 draws as worker 0 did without groups, [g p g g], group 1
    # as worker 1 did, [p g p g] (test_event_log.py). Steps 0-1: group 0 takes 1.35 + 0.05, group 1
    # 0.05 + 1.35: both reach the sync at 1.4, no wait; T_AR 1.4..2.4, u ..2.6.
    rows = log(exp, "palsgd")
    kinds = {(w, t): p for w, t, p, *_ in rows if p in ("compute", "pseudo_sync")}
    assert [kinds[(w, t)] == "pseudo_sync" for w in range(4) for t in range(4)] == (
        [False, True, False, False] * 2 + [True, False, True, False] * 2)
    assert sorted({(t, s, e) for _, t, p, s, e, _ in rows if p == "allreduce" and e - s == 1.0}) == [
        (1, 1.4, 2.4), (3, 5.3, 6.3)]
    # Steps 2-3: group 0 two DDP steps (2.7 s) and group 1 m + one DDP step (1.4 s): group 1 waits 1.3 s.
    assert {(w, s, e) for w, _, p, s, e, _ in rows if p == "wait"} == {(2, 4.0, 5.3), (3, 4.0, 5.3)}


def test_closed_form_node_groups_on_the_default_cluster():
    """Per step on 4 nodes x 8 GPUs, groups = nodes, rings only: DDP inside a node on NVLink (rings of
    8), and the sync's 8 rings of 4 ranks (one per node), each with 1/8 of a node's NIC."""
    from palsgd.core import config

    exp = config.load(algorithms=["diloco"], steps=200, overrides=[
        'algorithm.replica_group="node"', "algorithm.warmup_steps=0", 'cluster.allreduce="ring"'])
    cl, c = exp.cluster, step_costs(exp, exp.algorithms[0])
    payload, t = c.payload_bytes, cl.transport
    # Bytes per rank: the sync's ring of 4 sends 2·3/4·S, the group's buckets 2·7/8 of the fp32 gradients.
    assert c.sync_bytes == 2 * 3 / 4 * payload
    assert np.isclose(c.group.bucket_bytes_sent, 2 * 7 / 8 * 4 * exp.workload.params)
    # The sync: a barrier, then 2·3 ring steps of S/4 over the slow tier at 100/8 Gbit/s per ring.
    bw = cl.inter_node.bandwidth_gbps * 1e9 / 8 / 8 * t.efficiency
    alpha = (cl.inter_node.latency_us + t.step_overhead_us) * 1e-6
    ring_s = t.base_latency_us * 1e-6 + 2 * 3 * (alpha + payload / 4 / bw)
    assert np.isclose(c.sync_s - c.barrier_s, ring_s, rtol=1e-12, atol=0)
    # A bucket of b bytes inside the node: 2·7 ring steps of b/8 on NVLink.
    nv = cl.intra_node.bandwidth_gbps * 1e9 / 8 * t.efficiency
    nv_alpha = (cl.intra_node.latency_us + t.step_overhead_us) * 1e-6
    sizes = c.group.bucket_bytes_sent / (2 * 7 / 8)
    expected = len(c.group.bucket_s) * (t.base_latency_us * 1e-6 + 14 * nv_alpha) + 14 * sizes / 8 / nv
    assert np.isclose(c.group.bucket_s.sum(), expected, rtol=1e-9, atol=0)


def test_replica_groups_run_on_the_exact_engine():
    """The fast path (sim/fast.py) has no model of groups: auto picks the exact engine, fast refuses."""
    import pytest

    from palsgd.core import config
    from palsgd.core.errors import ConfigError
    from palsgd.sim import bounds

    exp = config.load(algorithms=["ddp", "diloco"], overrides=['algorithm.replica_group="node"'])
    assert bounds.engine_for(exp.replace(repeats=100_000), record_steps=False) == "exact"
    with pytest.raises(ConfigError, match="replica groups"):
        bounds.engine_for(exp, record_steps=False, engine="fast")
