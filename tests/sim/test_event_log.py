"""Exact event logs of 2-worker scenarios (compute 1 s, o 0.1 s, T_AR 0.5 s, H = 2), checked by hand."""

from __future__ import annotations

import numpy as np

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
    assert log(tiny(algorithms=["diloco"]), "diloco") == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1), (0, "allreduce", 1.1, 1.6),
        (0, "outer_step", 1.6, 1.8),
        (1, "compute", 1.8, 2.8), (1, "optimizer", 2.8, 2.9),
        (2, "compute", 2.9, 3.9), (2, "optimizer", 3.9, 4.0), (2, "allreduce", 4.0, 4.5),
        (2, "outer_step", 4.5, 4.7),
        (3, "compute", 4.7, 5.7), (3, "optimizer", 5.7, 5.8),
    ])


def test_palsgd_event_log(tiny):
    exp = tiny(algorithms=["palsgd"])
    kinds = plan("palsgd", workers=2, steps=4, seed=0, p=0.5, sync_every=2).kinds[0]
    # Seed 0, p = 0.5, shared draws: only step 1 is a pseudo-sync step.
    assert list(kinds == PSEUDO_SYNC_STEP) == [False, True, False, False]
    assert log(exp, "palsgd") == both([
        (0, "compute", 0.0, 1.0), (0, "optimizer", 1.0, 1.1), (0, "allreduce", 1.1, 1.6),
        (0, "outer_step", 1.6, 1.8),
        (1, "pseudo_sync", 1.8, 1.85),
        (2, "compute", 1.85, 2.85), (2, "optimizer", 2.85, 2.95), (2, "allreduce", 2.95, 3.45),
        (2, "outer_step", 3.45, 3.65),
        (3, "compute", 3.65, 4.65), (3, "optimizer", 4.65, 4.75),
    ])


def test_palsgd_consumed_batches_pay_data_loading(tiny):
    exp = tiny({"cluster": {"compute": {"data_time_s": 0.3}}}, algorithms=["palsgd"])
    rows = [r for r in log(exp, "palsgd") if r[0] == 0 and r[1] == 1]
    # Step 0: data 0..0.3, compute ..1.3, optimizer ..1.4, sync ..1.9, outer step ..2.1.
    assert rows == [(0, 1, "data", 2.1, 2.4), (0, 1, "pseudo_sync", 2.4, 2.45)]
    kept = tiny({"cluster": {"compute": {"data_time_s": 0.3}}, "algorithm": {"skipped_batches": "kept"}},
                algorithms=["palsgd"])
    rows = [r for r in log(kept, "palsgd") if r[0] == 0 and r[1] == 1]
    assert rows == [(0, 1, "pseudo_sync", 2.1, 2.15)]  # kept: the batch waits for step 2
    # Seed 0 draws [g p g g p g ...]: 4 gradient steps, as DDP's 4 steps, take 6 steps.
    assert simulate(kept).runs["steps"].iloc[0] == 6


def test_palsgd_independent_draws_wait_for_the_busiest_worker(tiny):
    exp = tiny({"algorithm": {"skip_draws": "independent"}}, algorithms=["palsgd"], steps=3)
    kinds = plan("palsgd", workers=2, steps=3, seed=0, p=0.5, sync_every=2, skip_draws="independent").kinds
    res = simulate(exp, record_steps=True).steps
    assert kinds.tolist() == [[1, 2, 1], [2, 1, 2]]  # worker 1 starts with a pseudo-sync step
    first = res[(res["step"] == 0) & (res["phase"] == "wait")]
    assert [(w, s, e) for w, s, e in first[["worker", "start_s", "end_s"]].itertuples(index=False)] == [
        (1, 0.05, 1.1)]
    grad_steps = (kinds[:, 1:3] != PSEUDO_SYNC_STEP).sum(axis=1)  # the segment after the first sync
    # Each worker arrives at the second sync after 1.1 s per gradient step and 0.05 s per pseudo-sync.
    arrive = 1.8 + grad_steps * 1.1 + (2 - grad_steps) * 0.05
    sync = res[(res["phase"] == "allreduce") & (res["step"] == 2)]
    assert np.allclose(sync["start_s"], arrive.max())
    waits = res[(res["phase"] == "wait") & (res["step"] == 2)]
    assert np.isclose(waits["end_s"] - waits["start_s"], arrive.max() - arrive.min()).all()
    assert len(waits) == int(arrive.max() > arrive.min())
