"""Sweeps on Ray give the local executor's table; an interrupted sweep resumes without recomputing."""

from __future__ import annotations

import pandas as pd
import pytest

from palsgd.core.config import load
from palsgd.harness.machinery import sweep

VARY = [("cluster.inter_node.bandwidth_gbps", [5, 50]), ("algorithm.sync_every", [4, 8, 16])]


def _base():
    return load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=80, algorithms=["ddp", "local_sgd", "palsgd"],
                overrides=["repeats=2", "cluster.nodes=2", "algorithm.warmup_steps=10", "algorithm.sync_every=8"])


@pytest.mark.slow
def test_ray_executor_gives_the_local_table():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'palsgd[ray]')")
    local = sweep.sweep(_base(), VARY, jobs=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = sweep.sweep(_base(), VARY, executor="ray")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(remote.table, local.table)
    pd.testing.assert_frame_equal(remote.crossovers, local.crossovers)


class _StopAfter:
    """A progress sink that interrupts the sweep (as Ctrl-C would) once ``n`` points have finished."""

    def __init__(self, n: int):
        self.n, self.done = n, 0

    def update(self, n: int) -> None:
        self.done += n
        if self.done >= self.n:
            raise KeyboardInterrupt


def test_an_interrupted_sweep_resumes_without_recomputing_finished_points(tmp_path, monkeypatch):
    grid = sweep.points(_base(), VARY)
    simulated: list[dict] = []
    real_chunk = sweep._simulate_chunk

    def counting_chunk(items):
        simulated.extend(point for point, _ in items)
        return real_chunk(items)

    monkeypatch.setattr(sweep, "_simulate_chunk", counting_chunk)
    done = tmp_path / "points"
    with pytest.raises(KeyboardInterrupt):
        sweep.run_points(grid, jobs=1, done=done, progress=_StopAfter(1))
    first = list(simulated)
    assert 0 < len(first) < len(grid)
    assert list(done.glob("points-*.parquet"))  # what finished is on disk

    simulated.clear()
    resumed = sweep.run_points(grid, jobs=1, done=done)
    assert sorted(map(str, simulated)) == sorted(str(p) for p, _ in grid if p not in first)
    fresh = sweep.run_points(grid, jobs=1)
    pd.testing.assert_frame_equal(resumed, fresh)
