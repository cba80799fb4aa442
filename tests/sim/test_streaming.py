"""Streaming DiLoCo in the simulator: DiLoCo when P = 1, tau = 0; event logs of overlapped fragment
syncs checked by hand (tiny: c = 1 s, o = 0.1 s, u = 0.2 s, 4 equal tensors of 512 KiB, T_AR(S) = 0.5 s)."""

from __future__ import annotations

import pytest

from palsgd.core.buckets import PAYLOAD_ELEM_BYTES
from palsgd.sim.algorithms import build
from palsgd.sim.costs import step_costs
from palsgd.sim.engine import simulate

from .test_event_log import both, log


def streaming(tiny, fragments, delay, overrides=None, **kw):
    algo = {"sync_every": 4, "streaming_diloco": {"fragments": fragments, "fragment_sync_delay": delay}}
    return tiny({"algorithm": algo, **(overrides or {})}, algorithms=["streaming_diloco"], **kw)


def test_one_fragment_without_delay_is_diloco_row_for_row(tiny):
    jitter = {"cluster": {"variability": {"jitter_cv": 0.2, "straggler_prob": 0.1}}, "repeats": 2}
    for overrides in ({}, jitter):
        exp = tiny({"algorithm": {"sync_every": 4}, **overrides}, algorithms=["diloco", "streaming_diloco"],
                   steps=12)
        res = simulate(exp, record_steps=True)
        rows = {name: res.steps[res.steps["algorithm"] == name].drop(columns="algorithm").reset_index(drop=True)
                for name in ("diloco", "streaming_diloco")}
        assert len(rows["diloco"]) > 0
        assert rows["diloco"].equals(rows["streaming_diloco"])


def test_two_fragments_overlapped_with_one_step(tiny):
    # P = 2, H = 4: a fragment sync every 2 steps (fragment 0 after step 1, fragment 1 after step 3),
    # each fragment 2 of the 4 tensors: T_AR = 0.25 s, u/2 = 0.1 s. tau = 1: the all-reduce starts
    # when step 0 ends (1.1) and ends at 1.35, hidden by step 1 (1.1..2.2); u 2.2..2.3.
    assert log(streaming(tiny, 2, 1), "streaming_diloco") == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1),
        (1, "compute", 1.1, 2.1), (1, "allreduce_hidden", 1.1, 1.35), (1, "optimizer", 2.1, 2.2),
        (1, "outer_step", 2.2, 2.3),
        (2, "compute", 2.3, 3.3), (2, "optimizer", 3.3, 3.4),
        (3, "compute", 3.4, 4.4), (3, "allreduce_hidden", 3.4, 3.65), (3, "optimizer", 4.4, 4.5),
        (3, "outer_step", 4.5, 4.6),
    ])


def test_a_fragment_the_delay_cannot_hide_makes_the_workers_wait(tiny):
    # A 6x slower link: a fragment's T_AR = 1.5 s, started at 1.1, ends at 2.6; step 1 hides 1.1 s of it.
    slow = {"cluster": {"intra_node": {"bandwidth_gbps": 2 * 2 * (1 << 20) * 8 / 1e9 / 6}}}
    rows = [r for r in log(streaming(tiny, 2, 1, slow), "streaming_diloco") if r[1] <= 1]
    assert rows == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1),
        (1, "compute", 1.1, 2.1), (1, "allreduce_hidden", 1.1, 2.2), (1, "optimizer", 2.1, 2.2),
        (1, "allreduce", 2.2, 2.6), (1, "outer_step", 2.6, 2.7),
    ])


def test_fragments_send_the_payload_once_per_h_steps(tiny):
    # Over H = 4 steps DiLoCo sends S once; Streaming DiLoCo sends each half once: the same bytes.
    exp = tiny({"algorithm": {"sync_every": 4, "streaming_diloco": {"fragments": 2}}},
               algorithms=["diloco", "streaming_diloco"], steps=8)
    res = simulate(exp, record_steps=True)
    sent = res.steps.groupby("algorithm")["bytes"].sum()
    assert sent["diloco"] > 0
    assert abs(sent["streaming_diloco"] - sent["diloco"]) < 1e-6 * sent["diloco"]


def test_bytes_on_the_wire_scale_with_the_payload_dtype(tiny):
    def sync(dtype):
        exp = tiny({"algorithm": {"payload_dtype": dtype}}, algorithms=["diloco", "streaming_diloco"])
        return [build(spec, exp).sync(step_costs(exp, spec)) for spec in exp.algorithms]

    fp32 = sync("fp32")
    for dtype in ("bf16", "int8", "fp4"):
        for ours, full in zip(sync(dtype), fp32, strict=True):
            assert ours.bytes == pytest.approx(full.bytes * PAYLOAD_ELEM_BYTES[dtype] / 4)
    # tiny: T_AR(S) = 0.5 s for S = 2 MiB, no latency: int8 sends 1.125/4 of it; quantizing costs
    # 3 passes over 4N bytes at the memory bandwidth on top (none for fp32 and bf16).
    exp = tiny({"algorithm": {"payload_dtype": "int8"}}, algorithms=["diloco"])
    quantize_s = 3 * 2 * (1 << 20) / (exp.cluster.compute.memory_gbytes_per_s * 1e9)
    assert sync("int8")[0].comm_s == pytest.approx(0.5 * 1.125 / 4 + quantize_s)
    assert sync("bf16")[0].comm_s == pytest.approx(0.25)


def test_ddp_sends_fp32_gradients_when_the_syncs_are_quantized(tiny):
    runs = {d: tiny({"algorithm": {"payload_dtype": d}}, algorithms=["ddp"]) for d in ("fp32", "int8", "fp4")}
    sent = {d: step_costs(exp, exp.algorithms[0]).bucket_bytes_sent for d, exp in runs.items()}
    assert sent["int8"] == sent["fp4"] == sent["fp32"] > 0


def test_a_whole_round_of_delay_overlaps_the_all_reduce_with_the_next_round(tiny):
    # P = 1, H = 2, tau = H (DiLoCoX's one-step delay). The first sync has nothing in flight: u only,
    # 2.2..2.4. Round 2's all-reduce of round 1's outer gradient starts when that outer step ends
    # (2.4), runs 2.4..2.9 under steps 2 and 3 (2.4..4.6) and is applied after step 3: u 4.6..4.8.
    # Round 3 likewise: 4.8..5.3 hidden, u 7.0..7.2. DiLoCo (tau = 0) pays T_AR at every sync instead.
    algo = {"sync_every": 2, "streaming_diloco": {"fragment_sync_delay": 2}}
    exp = tiny({"algorithm": algo}, algorithms=["streaming_diloco"], steps=6)
    # (The log lists a worker's rows by start time; compared here step by step.)
    assert sorted(log(exp, "streaming_diloco")) == sorted(both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1),
        (1, "compute", 1.1, 2.1), (1, "optimizer", 2.1, 2.2), (1, "outer_step", 2.2, 2.4),
        (2, "compute", 2.4, 3.4), (2, "optimizer", 3.4, 3.5),
        (3, "compute", 3.5, 4.5), (3, "allreduce_hidden", 2.4, 2.9), (3, "optimizer", 4.5, 4.6),
        (3, "outer_step", 4.6, 4.8),
        (4, "compute", 4.8, 5.8), (4, "optimizer", 5.8, 5.9),
        (5, "compute", 5.9, 6.9), (5, "allreduce_hidden", 4.8, 5.3), (5, "optimizer", 6.9, 7.0),
        (5, "outer_step", 7.0, 7.2),
    ]))
    # Bytes: the first sync sends nothing, so 2 all-reduces of S where DiLoCo (tau = 0) makes 3.
    res = simulate(tiny({"algorithm": algo}, algorithms=["diloco", "streaming_diloco"], steps=6), record_steps=True)
    sent = res.steps.groupby("algorithm")["bytes"].sum()
    assert sent["diloco"] > 0 and abs(3 * sent["streaming_diloco"] - 2 * sent["diloco"]) < 1e-6 * sent["diloco"]
    # Eager updates change what the outer step computes, not its cost here (docs/algorithms.md).
    eager = tiny({"algorithm": {**algo, "streaming_diloco": {**algo["streaming_diloco"], "eager_outer": True}}},
                 algorithms=["streaming_diloco"], steps=6)
    assert log(eager, "streaming_diloco") == log(exp, "streaming_diloco")


def test_a_whole_round_of_delay_exposes_only_what_a_round_cannot_hide_under_a_straggler(tiny):
    # A 6x slower link (T_AR = 3 s) and worker 1 twice as slow (c = 2 s): round 2 starts at 4.4 (after
    # the first sync's barrier at worker 1's 4.2 and u), its all-reduce runs 4.4..7.4; worker 1 arrives
    # at 4.4 + 2 * 2.1 = 8.6, worker 0 at 6.6 and waits 6.6..8.6; the all-reduce is all hidden.
    # Worker 0's own steps (4.4..6.6) hide 2.2 s of it; the barrier hides the rest.
    slow = {"cluster": {"intra_node": {"bandwidth_gbps": 2 * 2 * (1 << 20) * 8 / 1e9 / 6},
                        "variability": {"slow_workers": 1, "slow_factor": 2.0}},
            "algorithm": {"sync_every": 2, "streaming_diloco": {"fragment_sync_delay": 2}}}
    rows = [r for r in log(tiny(slow, algorithms=["streaming_diloco"], steps=4), "streaming_diloco")
            if r[1] == 3]
    assert sorted(rows) == sorted([
        (0, 3, "compute", 5.5, 6.5), (0, 3, "allreduce_hidden", 4.4, 7.4), (0, 3, "optimizer", 6.5, 6.6),
        (0, 3, "wait", 6.6, 8.6), (0, 3, "outer_step", 8.6, 8.8),
        (1, 3, "compute", 6.5, 8.5), (1, 3, "allreduce_hidden", 4.4, 7.4), (1, 3, "optimizer", 8.5, 8.6),
        (1, 3, "outer_step", 8.6, 8.8),
    ])
