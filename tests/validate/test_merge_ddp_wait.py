"""The merged real table carves a DDP rank's wait for the slowest rank out of its exposed all-reduce, as the
simulator records it, so that the cluster suite's wait comparison sees it."""

import pandas as pd
import pytest

from palsgd.core.schema import STEP_COLUMNS, summarize_steps
from palsgd.harness.machinery.rank_files import merge


def _rank_rows(worker: int, compute_end_s: float) -> list[tuple]:
    # One DDP step: compute until compute_end_s, the exposed all-reduce until 3.5 s (it cannot end before
    # the slowest rank's last bucket), the optimizer until 3.6 s.
    return [("real", "ddp", 0, worker, 0, "compute", 0.0, compute_end_s, 0.0),
            ("real", "ddp", 0, worker, 0, "allreduce", compute_end_s, 3.5, 100.0),
            ("real", "ddp", 0, worker, 0, "optimizer", 3.5, 3.6, 0.0)]


def test_merge_times_the_fast_ranks_wait_apart_from_the_transfer(tmp_path):
    folder = tmp_path / "ranks" / "ddp"
    folder.mkdir(parents=True)
    for worker, compute_end_s in ((0, 1.0), (1, 3.0)):  # rank 1 is slow
        pd.DataFrame(_rank_rows(worker, compute_end_s), columns=list(STEP_COLUMNS)).to_parquet(
            folder / f"rank{worker}.steps.parquet")
    steps, _ = merge(tmp_path, ["ddp"])
    waits = steps[steps["phase"] == "wait"]
    assert waits[["worker", "start_s", "end_s"]].values.tolist() == [[0, 1.0, 3.0]]
    run = summarize_steps(steps).iloc[0]
    assert run["wait_s"] == pytest.approx(2.0 / 2)  # per worker, averaged over the two
    assert run["step_time_mean_s"] == pytest.approx(3.6)  # the step itself is unchanged
