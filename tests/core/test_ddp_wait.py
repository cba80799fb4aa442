"""A slow rank under DDP shows as compute on that rank and as wait on the others (as in the simulator)."""

import pandas as pd
import pytest

from palsgd.core.schema import STEP_COLUMNS, split_ddp_wait


def _row(worker, step, phase, start, end, nbytes=0.0, algorithm="ddp"):
    return ("real", algorithm, 0, worker, step, phase, start, end, nbytes)


def test_fast_worker_waits_for_the_slow_ones_compute_then_communicates():
    # Step 0: worker 0 computes 0-1 s, worker 1 (slow) 0-3 s; both all-reduce until 3.5 s.
    rows = [_row(0, 0, "compute", 0, 1), _row(0, 0, "allreduce", 1, 3.5, 100.0),
            _row(1, 0, "compute", 0, 3), _row(1, 0, "allreduce", 3, 3.5, 100.0),
            _row(0, 0, "optimizer", 3.5, 3.6), _row(1, 0, "optimizer", 3.5, 3.6)]
    out = split_ddp_wait(pd.DataFrame(rows, columns=list(STEP_COLUMNS)))
    by = {(r.worker, r.phase): (r.start_s, r.end_s, r.bytes) for r in out.itertuples()}
    assert by[(0, "wait")] == (1, 3, 0.0)
    assert by[(0, "allreduce")] == (3, 3.5, 100.0)
    assert by[(1, "allreduce")] == (3, 3.5, 100.0)
    assert (1, "wait") not in by
    # The step's wall-clock is unchanged: phases still tile [0, 3.6] on each worker.
    assert out.groupby("worker").apply(lambda g: (g["end_s"] - g["start_s"]).sum()).tolist() == \
        pytest.approx([3.6, 3.6])


def test_a_sync_after_a_barrier_is_left_alone():
    # Local SGD: compute, optimizer, wait (barrier), then the blocking all-reduce: no DDP pattern.
    rows = [_row(0, 3, "compute", 0, 1, algorithm="local_sgd"), _row(0, 3, "optimizer", 1, 1.1, algorithm="local_sgd"),
            _row(0, 3, "wait", 1.1, 2, algorithm="local_sgd"), _row(0, 3, "allreduce", 2, 2.5, 9.0, "local_sgd"),
            _row(1, 3, "compute", 0, 1.9, algorithm="local_sgd"),
            _row(1, 3, "optimizer", 1.9, 2, algorithm="local_sgd"), _row(1, 3, "allreduce", 2, 2.5, 9.0, "local_sgd")]
    steps = pd.DataFrame(rows, columns=list(STEP_COLUMNS))
    pd.testing.assert_frame_equal(split_ddp_wait(steps), steps)


def test_in_replica_groups_a_worker_waits_for_its_own_group_only():
    # DiLoCo in 2 groups of 2, W = 1. Step 0 (warm-up DDP over all 4): worker 3 is slowest (2 s), so
    # every other worker waits for it. Step 1 (DDP inside each group): group 0 computes 1 and 1.2 s,
    # group 1 computes 1.5 and 2 s: worker 0 waits 0.2 s for worker 1, worker 2 0.5 s for worker 3, and
    # group 0 does not wait for group 1.
    def step(t, ends):
        rows = []
        for w, end in enumerate(ends):
            rows += [_row(w, t, "compute", 10 * t, 10 * t + end, algorithm="diloco"),
                     _row(w, t, "allreduce", 10 * t + end, 10 * t + 3, 8.0, algorithm="diloco")]
        return rows

    steps = pd.DataFrame(step(0, [1, 1, 1, 2]) + step(1, [1, 1.2, 1.5, 2]), columns=list(STEP_COLUMNS))
    waits = split_ddp_wait(steps, {"diloco": (2, 1)})
    waits = {(r.worker, r.step): round(r.end_s - r.start_s, 9) for r in waits.itertuples() if r.phase == "wait"}
    assert waits == {(0, 0): 1, (1, 0): 1, (2, 0): 1, (0, 1): 0.2, (2, 1): 0.5}
    flat = split_ddp_wait(steps)  # without the layout, group 0 would wait for group 1's straggler
    assert round(float(flat[(flat["phase"] == "wait") & (flat["step"] == 1) & (flat["worker"] == 0)].eval(
        "end_s - start_s").iloc[0]), 9) == 1.0
