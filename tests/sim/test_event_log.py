"""Exact event logs of 2-worker scenarios (compute 1 s, o 0.1 s, T_AR 0.5 s, H = 2), checked by hand."""

from __future__ import annotations

from palsgd.core.algorithms import PSEUDO_SYNC_STEP, plan
from palsgd.sim.engine import simulate

MIB = 1 << 20


def log(exp, algorithm):
    res = simulate(exp, record_steps=True)
    s = res.steps[res.steps["algorithm"] == algorithm]
    return [(int(r.worker), int(r.step), r.phase, round(r.start_s, 9), round(r.end_s, 9))
            for r in s.itertuples()]


def both(rows):
    """The same rows for worker 0 and worker 1 (no variability: the workers are identical)."""
    return [(w, *r) for w in (0, 1) for r in rows]


def test_ddp_event_log(tiny):
    # Buckets of 1 MiB (0.25 s each). Bucket 0 is ready at 1/3 + 2/3·0.5 = 2/3 of c and runs
    # 2/3..11/12; bucket 1 is ready at c = 1 and runs 1..1.25: 0.25 s hidden, 0.25 s exposed.
    assert log(tiny(algorithms=["ddp"], steps=2), "ddp") == both([
        (0, "compute", 0.0, 1.0), (0, "allreduce_hidden", 0.75, 1.0), (0, "allreduce", 1.0, 1.25),
        (0, "optimizer", 1.25, 1.35),
        (1, "compute", 1.35, 2.35), (1, "allreduce_hidden", 2.1, 2.35), (1, "allreduce", 2.35, 2.6),
        (1, "optimizer", 2.6, 2.7),
    ])


def test_ddp_bucket_efficiency_slows_only_the_buckets(tiny):
    # ddp_bucket_efficiency 0.5 halves the bandwidth the buckets see: each 1 MiB bucket takes
    # 2(n-1)/n · 1 MiB / (B/2) = 0.5 s instead of 0.25 s (no latency in the tiny cluster).
    # Bucket 0 is ready at 2/3 and runs 2/3..7/6; bucket 1 is ready at 1 but waits for it: 7/6..5/3.
    # Hidden 2/3..1 (1/3 s), exposed 1..5/3 (2/3 s); the optimizer 5/3..5/3 + 0.1.
    exp = tiny({"cluster": {"transport": {"ddp_bucket_efficiency": 0.5}}}, algorithms=["ddp"], steps=1)
    assert log(exp, "ddp") == both([
        (0, "compute", 0.0, 1.0), (0, "allreduce_hidden", round(2 / 3, 9), 1.0),
        (0, "allreduce", 1.0, round(5 / 3, 9)), (0, "optimizer", round(5 / 3, 9), round(5 / 3 + 0.1, 9)),
    ])
    # A sync's flat all-reduce is not a bucket: Local SGD's T_AR(2 MiB) stays 0.5 s.
    local = tiny({"cluster": {"transport": {"ddp_bucket_efficiency": 0.5}}}, algorithms=["local_sgd"], steps=2)
    assert log(local, "local_sgd")[:3] == [(0, 0, "compute", 0.0, 1.0), (0, 0, "optimizer", 1.0, 1.1),
                                          (0, 0, "allreduce", 1.1, 1.6)]


def test_ddp_waits_for_a_slow_worker(tiny):
    # Worker 1 computes 2 s: the buckets are ready at 2/3·2 and 2, so bucket 1 runs 2..2.25.
    exp = tiny({"cluster": {"variability": {"slow_workers": 1, "slow_factor": 2.0}}},
               algorithms=["ddp"], steps=1)
    assert log(exp, "ddp") == [
        (0, 0, "compute", 0.0, 1.0), (0, 0, "wait", 1.0, 2.0), (0, 0, "allreduce_hidden", 1.75, 2.0),
        (0, 0, "allreduce", 2.0, 2.25), (0, 0, "optimizer", 2.25, 2.35),
        (1, 0, "compute", 0.0, 2.0), (1, 0, "allreduce_hidden", 1.75, 2.0),
        (1, 0, "allreduce", 2.0, 2.25), (1, 0, "optimizer", 2.25, 2.35),
    ]


def test_local_sgd_event_log(tiny):
    # Syncs follow steps 0 and 2 (PeriodicModelAverager: t >= W and (t - W) % H == 0).
    assert log(tiny(algorithms=["local_sgd"]), "local_sgd") == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1), (0, "allreduce", 1.1, 1.6),
        (1, "compute", 1.6, 2.6), (1, "optimizer", 2.6, 2.7),
        (2, "compute", 2.7, 3.7), (2, "optimizer", 3.7, 3.8), (2, "allreduce", 3.8, 4.3),
        (3, "compute", 4.3, 5.3), (3, "optimizer", 5.3, 5.4),
    ])


def test_diloco_event_log(tiny):
    # H = 2 inner steps before each outer step: syncs follow steps 1 and 3 (t >= W, (t - W + 1) % H == 0).
    # Step 0: c 0..1, o 1..1.1. Step 1: c 1.1..2.1, o 2.1..2.2, T_AR 2.2..2.7, u 2.7..2.9.
    # Step 2: c 2.9..3.9, o 3.9..4.0. Step 3: c 4.0..5.0, o 5.0..5.1, T_AR 5.1..5.6, u 5.6..5.8.
    assert log(tiny(algorithms=["diloco"]), "diloco") == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1),
        (1, "compute", 1.1, 2.1), (1, "optimizer", 2.1, 2.2), (1, "allreduce", 2.2, 2.7),
        (1, "outer_step", 2.7, 2.9),
        (2, "compute", 2.9, 3.9), (2, "optimizer", 3.9, 4.0),
        (3, "compute", 4.0, 5.0), (3, "optimizer", 5.0, 5.1), (3, "allreduce", 5.1, 5.6),
        (3, "outer_step", 5.6, 5.8),
    ])


def test_palsgd_event_log(tiny):
    exp = tiny(algorithms=["palsgd"])
    kinds = plan("palsgd", workers=2, steps=4, seed=0, p=0.5, sync_every=2).kinds[0]
    # Seed 0, p = 0.5, shared draws: only step 1 is a pseudo-sync step. It counts among the H = 2
    # local steps, so the outer steps still follow steps 1 and 3.
    assert list(kinds == PSEUDO_SYNC_STEP) == [False, True, False, False]
    # Step 0: c 0..1, o 1..1.1. Step 1: m 1.1..1.15, T_AR 1.15..1.65, u 1.65..1.85.
    # Step 2: c 1.85..2.85, o 2.85..2.95. Step 3: c 2.95..3.95, o 3.95..4.05, T_AR 4.05..4.55, u 4.55..4.75.
    assert log(exp, "palsgd") == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1),
        (1, "pseudo_sync", 1.1, 1.15), (1, "allreduce", 1.15, 1.65), (1, "outer_step", 1.65, 1.85),
        (2, "compute", 1.85, 2.85), (2, "optimizer", 2.85, 2.95),
        (3, "compute", 2.95, 3.95), (3, "optimizer", 3.95, 4.05), (3, "allreduce", 4.05, 4.55),
        (3, "outer_step", 4.55, 4.75),
    ])


def test_palsgd_consumed_batches_pay_data_loading(tiny):
    exp = tiny({"cluster": {"compute": {"data_time_s": 0.3}}}, algorithms=["palsgd"])
    rows = [r for r in log(exp, "palsgd") if r[0] == 0 and r[1] == 1]
    # Step 0: data 0..0.3, compute ..1.3, optimizer ..1.4. Step 1 (pseudo-sync, then the first outer
    # step): data 1.4..1.7, m ..1.75, T_AR ..2.25, u ..2.45.
    assert rows == [(0, 1, "data", 1.4, 1.7), (0, 1, "pseudo_sync", 1.7, 1.75), (0, 1, "allreduce", 1.75, 2.25),
                    (0, 1, "outer_step", 2.25, 2.45)]
    kept = tiny({"cluster": {"compute": {"data_time_s": 0.3}}, "algorithm": {"skipped_batches": "kept"}},
                algorithms=["palsgd"])
    rows = [r for r in log(kept, "palsgd") if r[0] == 0 and r[1] == 1]
    # kept: the batch waits for step 2, so step 1 loads nothing: m 1.4..1.45, T_AR ..1.95, u ..2.15.
    assert rows == [(0, 1, "pseudo_sync", 1.4, 1.45), (0, 1, "allreduce", 1.45, 1.95),
                    (0, 1, "outer_step", 1.95, 2.15)]
    # Seed 0 draws [g p g g p g ...]: the budget's 4 - W = 4 gradient steps take 6 steps.
    assert simulate(kept).runs["steps"].iloc[0] == 6


def test_palsgd_independent_draws_wait_for_the_busiest_worker(tiny):
    exp = tiny({"algorithm": {"skip_draws": "independent"}}, algorithms=["palsgd"], steps=4)
    kinds = plan("palsgd", workers=2, steps=4, seed=0, p=0.5, sync_every=2, skip_draws="independent").kinds
    assert kinds.tolist() == [[1, 2, 1, 1], [2, 1, 2, 1]]  # 1: gradient step (c + o = 1.1 s), 2: m = 0.05 s
    rows = log(exp, "palsgd")
    # Steps 0-1: each worker takes one gradient and one pseudo-sync step, both arrive at 1.15: no wait;
    # T_AR 1.15..1.65, u ..1.85. Steps 2-3: worker 0 takes two gradient steps and arrives at
    # 1.85 + 2.2 = 4.05; worker 1 one of each and arrives at 1.85 + 0.05 + 1.1 = 3.0, then waits 3.0..4.05.
    assert [r for r in rows if r[2] == "wait"] == [(1, 3, "wait", 3.0, 4.05)]
    assert sorted({(r[1], r[3]) for r in rows if r[2] == "allreduce"}) == [(1, 1.15), (3, 4.05)]


def test_a_sync_barrier_is_timed_as_waiting_as_the_real_side_times_it(tiny):
    # Intra-node latency 10 ms one way (nccl: a ring step waits one hop), so T_AR(S) = 0.5 s + 2 steps x
    # 10 ms = 0.52 s. The barrier costs its own latency b (collectives.barrier_time) and sits in `wait` on
    # every worker: after step 0, wait 1.1..1.1+b, then the all-reduce 1.1+b..1.62+b.
    from palsgd.sim import collectives

    exp = tiny({"cluster": {"intra_node": {"latency_us": 10_000.0}}}, algorithms=["local_sgd"], steps=2)
    b = collectives.barrier_time(exp.cluster)
    assert b > 0 and abs(collectives.allreduce_time(exp.cluster, 2 * MIB) - 0.52) < 1e-9
    t = round(1.62 + b, 9)
    assert log(exp, "local_sgd") == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1), (0, "wait", 1.1, round(1.1 + b, 9)),
        (0, "allreduce", round(1.1 + b, 9), t),
        (1, "compute", t, round(t + 1, 9)), (1, "optimizer", round(t + 1, 9), round(t + 1.1, 9)),
    ])
