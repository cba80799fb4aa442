"""No input exhausts the machine or loops forever: sizes and failure models that cannot end are refused
before anything is built, repeats stream, sweeps build their points when they simulate them."""

from __future__ import annotations

import tracemalloc

import pandas as pd
import pytest

from palsgd.core.config import load
from palsgd.core.errors import ConfigError
from palsgd.harness.commands import simulate as job
from palsgd.harness.machinery import sweep as sweep_mod
from palsgd.sim import bounds
from palsgd.sim.engine import simulate

MB = 1 << 20


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("override", "key"), [
    ({"overrides": ["cluster.nodes=1000000000"]}, "cluster.nodes"),
    ({"overrides": ["cluster.nodes=1000000"]}, "cluster.nodes"),
])
def test_sizes_that_cannot_fit_in_memory_are_refused_naming_the_input(override, key):
    exp = load(workload="gpt-tiny", **override)
    with pytest.raises(ConfigError, match=rf"{key}.*memory.*available"):
        simulate(exp)


def test_steps_that_cannot_end_are_refused_naming_the_steps():
    """The fast path keeps one block of steps at a time, so 10^12 steps fit; they would not end."""
    exp = load(workload="gpt-tiny", steps=10**12)
    with pytest.raises(ConfigError, match=r"budget.steps = 1000000000000: about [\d,]+ h of simulation"):
        simulate(exp)
    with pytest.raises(ConfigError, match=r"budget.steps.*memory.*available"):  # the exact engine's plan
        simulate(exp, engine="exact")


def test_a_job_longer_than_the_work_limit_is_refused_naming_the_repeats(monkeypatch):
    monkeypatch.setattr(bounds, "MAX_WORK_S", 60.0)
    exp = load(workload="gpt-tiny", overrides=["repeats=100000"])  # 32 workers x 60 steps x 4 x 10^5 cells
    with pytest.raises(ConfigError, match=r"repeats = 100000: about [\d,.]+ h of simulation"):
        simulate(exp, keep_totals=False)


@pytest.mark.timeout(60)
def test_failures_that_redo_a_step_forever_are_refused():
    exp = load(workload="gpt-tiny", cluster="cpu-2core-gloo",
               overrides=["cluster.failures.mtbf_s=0.001", "cluster.failures.restart_s=0"])
    with pytest.raises(ConfigError, match=r"cluster\.failures\.mtbf_s = 0\.001: .*almost never ends"):
        simulate(exp)


@pytest.mark.timeout(120)
def test_failures_faster_than_steps_end_stop_the_run_with_a_config_error():
    # each worker's step fits between its own failures, but with 8 workers and 0.5 s restarts some
    # worker is always down: the block is redone without end
    exp = load(workload="gpt-tiny", cluster="cpu-2core-gloo", algorithms=["ddp"], steps=40,
               overrides=["cluster.nodes=4", "cluster.failures.mtbf_s=0.05", "cluster.failures.restart_s=0.5"])
    with pytest.raises(ConfigError, match=r"more than 4,000 failures in a block of 40 steps"):
        simulate(exp)


def test_frequent_but_survivable_failures_still_simulate():
    exp = load(workload="gpt-tiny", cluster="cpu-2core-gloo", overrides=["cluster.failures.mtbf_s=0.1"])
    runs = simulate(exp).runs
    assert (runs["failure_s"] > 0).all()


def test_repeats_stream_their_memory_does_not_grow_with_the_repeat_count():
    def run(repeats):
        exp = load(workload="gpt-tiny", algorithms=["ddp"], steps=20_000,
                   overrides=["cluster.nodes=8", f"repeats={repeats}"])
        return lambda: simulate(exp, keep_totals=False, engine="exact")

    one, eight = _peak_bytes(run(1)), _peak_bytes(run(8))
    assert eight < 1.5 * one, (one / MB, eight / MB)  # 8 plans up front would be ~4x


def test_the_fast_paths_memory_stays_within_its_estimate():
    """Repeats go through in batches, steps and intervals in blocks: the estimate bounds them."""
    exp = load(workload="gpt-tiny", algorithms=["ddp", "local_sgd"], steps=500,
               overrides=["cluster.nodes=8", "repeats=3000", "cluster.variability.jitter_cv=0.05",
                          "algorithm.sync_every=20"])
    est = bounds.estimate(exp, record_steps=False, keep_totals=True)
    assert est.engine == "fast"
    peak = _peak_bytes(lambda: simulate(exp, record_steps=False, keep_totals=True))
    assert peak < est.run_bytes + est.kept_bytes, (peak / MB, est)


def test_no_step_table_is_recorded_when_nothing_writes_it():
    exp = load(workload="gpt-tiny", algorithms=["ddp"], overrides=["cluster.nodes=500"])  # 240k worker-steps
    peak = _peak_bytes(lambda: job.simulate_to_folder(exp))
    assert peak < 60 * MB, peak / MB  # the step table alone would be ~300 MB


def test_estimate_grows_with_what_is_kept():
    exp = load(workload="gpt-tiny", overrides=["repeats=50", "cluster.nodes=1000"])
    lean = bounds.estimate(exp, record_steps=False, keep_totals=False, engine="exact")
    kept = bounds.estimate(exp, record_steps=False, keep_totals=True, engine="exact")
    recorded = bounds.estimate(exp, record_steps=True, keep_totals=True)
    assert lean.peak_bytes < kept.peak_bytes < recorded.peak_bytes
    assert lean.run_bytes == recorded.run_bytes
    fast_lean, fast_kept = (bounds.estimate(exp, record_steps=False, keep_totals=k, engine="fast")
                            for k in (False, True))
    assert fast_lean.peak_bytes < fast_kept.peak_bytes and fast_lean.work_s < lean.work_s


def test_available_memory_is_read():
    available = bounds.available_memory_bytes()
    assert available is not None and available > 0


# -- sweeps ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_huge_range_is_refused_before_its_list_is_built():
    with pytest.raises(ConfigError, match=r"seed = '0\.\.99999999999999': 100,000,000,000,000 sweep points"):
        sweep_mod.parse_vary("seed=0..99999999999999")


def test_a_grid_over_the_point_limit_is_refused():
    base = load(workload="gpt-tiny")
    vary = [("seed", list(range(1000))), ("algorithm.sync_every", list(range(1, 1001)))]
    with pytest.raises(ConfigError, match="1,000,000 sweep points"):
        sweep_mod.points(base, vary)


def test_sweep_points_are_built_when_read(monkeypatch):
    built = []
    real = sweep_mod.with_changes
    monkeypatch.setattr(sweep_mod, "with_changes", lambda *a: built.append(1) or real(*a))
    grid = sweep_mod.points(load(workload="gpt-tiny"), [("seed", list(range(100_000)))])
    assert len(grid) == 100_000 and len(built) == 2  # only the ends of the range are checked up front
    assert grid[99_999][1].seed == 99_999 and len(built) == 3


def test_sweep_points_keep_product_order():
    base = load(workload="gpt-tiny")
    grid = sweep_mod.points(base, [("seed", [3, 4]), ("algorithm.sync_every", [2, 5, 8])])
    assert [p for p, _ in grid] == [{"seed": s, "algorithm.sync_every": h} for s in (3, 4) for h in (2, 5, 8)]


def test_a_sweep_point_that_cannot_fit_is_refused():
    base = load(workload="gpt-tiny")
    with pytest.raises(ConfigError, match=r"cluster\.nodes.*memory"):
        sweep_mod.sweep(base, [("cluster.nodes", [1, 10**9])], jobs=1)


@pytest.mark.parametrize("jobs", [0, -3])
def test_sweep_jobs_below_one_are_refused(jobs):
    with pytest.raises(ConfigError, match=r"--jobs = -?\d: must be >= 1"):
        sweep_mod.sweep(load(workload="gpt-tiny"), [("seed", [0, 1])], jobs=jobs)


# -- the explanation lines ---------------------------------------------------------------------


def test_drivers_say_more_when_a_local_method_waits_longer_than_ddp():
    row = {"source": "sim", "run": 0, "compute_s": 1.0, "pseudo_sync_s": 0.0, "pseudo_sync_steps": 0,
           "outer_step_s": 0.0, "bytes_sent_per_worker": 10.0}
    runs = pd.DataFrame([
        {**row, "algorithm": "ddp", "comm_exposed_s": 2.0, "wait_s": 0.0, "failure_s": 600.0,
         "speedup_vs_ddp": 1.0},
        {**row, "algorithm": "local_sgd", "comm_exposed_s": 0.5, "wait_s": 151.5, "failure_s": 60.0,
         "speedup_vs_ddp": 2.0},
    ])
    (line,) = job.drivers(runs)
    assert "2.5 min more exposed communication and waiting" in line
    assert "-" not in line.split(":", 1)[1].split("(")[0]


@pytest.mark.parametrize(("seconds", "text"), [(-150.0, "-2.5 min"), (-0.0125, "-12.5 ms"), (150.0, "2.5 min")])
def test_human_s_keeps_the_unit_of_the_magnitude(seconds, text):
    assert job.human_s(seconds) == text
