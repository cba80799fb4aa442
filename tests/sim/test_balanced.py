"""The simulator with ``sync_every = "balanced"``: the slow replica idles, the fast ones stop waiting."""

from dataclasses import replace

import numpy as np
import pytest

from palsgd.core.algorithms import LOCAL_ALGORITHMS
from palsgd.core.config import from_dict
from palsgd.harness.machinery.sweep import sweep
from palsgd.sim import fast
from palsgd.sim.engine import simulate


def experiment(algorithm, balanced, *, slow_workers=1, replica_group="worker"):
    return from_dict({
        "workload": {"batch_per_worker": 4},
        "cluster": {"nodes": 2, "gpus_per_node": 2,
                    "variability": {"slow_workers": slow_workers, "slow_factor": 1.5, "jitter_cv": 0.05}},
        "algorithms": [algorithm],
        "algorithm": {"sync_every": 20, "warmup_steps": 2, "sync_balanced": balanced, "p": 0.3,
                      "fragments": 2, "replica_group": replica_group},
        "budget": {"steps": 102}, "repeats": 2})


def barrier_waits_s(steps, workers) -> float:
    """Seconds the given workers wait at the syncs' barriers, per run."""
    rows = steps[(steps.phase == "wait") & steps.worker.isin(workers)]
    return float((rows.end_s - rows.start_s).sum()) / steps.run.nunique()


@pytest.mark.parametrize("algorithm", LOCAL_ALGORITHMS)
def test_the_fast_workers_waits_fall_by_80_percent(algorithm):
    fixed = simulate(experiment(algorithm, False), record_steps=True)
    balanced = simulate(experiment(algorithm, True), record_steps=True)
    before, after = barrier_waits_s(fixed.steps, [0, 1, 2]), barrier_waits_s(balanced.steps, [0, 1, 2])
    assert before > 0 and after <= 0.2 * before
    assert balanced.runs.wall_clock_s.mean() < fixed.runs.wall_clock_s.mean()
    computed = balanced.steps[balanced.steps.phase.isin(["compute", "pseudo_sync"])].groupby("worker").size()
    assert computed[3] < computed[0]  # the slow worker took fewer local steps


def test_replica_groups_take_their_slowest_worker_s_pace():
    # Nodes are the replicas; node 1 holds the slow worker 3, so workers 2 and 3 both take fewer steps.
    result = simulate(experiment("diloco", True, replica_group="node"), record_steps=True)
    computed = result.steps[result.steps.phase == "compute"].groupby("worker").size()
    assert computed[0] == computed[1] > computed[2] == computed[3]


def test_balanced_on_a_uniform_cluster_simulates_the_fixed_h():
    a = simulate(experiment("palsgd", False, slow_workers=0)).runs
    b = simulate(experiment("palsgd", True, slow_workers=0)).runs
    np.testing.assert_array_equal(a.wall_clock_s, b.wall_clock_s)


def test_the_fast_path_hands_a_balanced_run_to_the_exact_engine():
    assert "balanced" in fast.why_not(experiment("diloco", True), record_steps=False)
    assert fast.why_not(experiment("diloco", True, slow_workers=0), record_steps=False) is None


def test_a_sweep_takes_balanced_as_a_value_of_sync_every():
    res = sweep(experiment("diloco", False), [("algorithm.sync_every", [10, 20, "balanced"])], jobs=1)
    wall = res.table.groupby("algorithm.sync_every", sort=False)["wall_clock_s"].mean()
    assert list(wall.index) == [10, 20, "balanced"]
    assert wall["balanced"] < wall[20]  # H = 20, the base's, with the slow worker's steps cut
    assert res.crossovers.value.between(10, 20).all()  # crossings along the numbers only


def test_balanced_composes_with_a_whole_round_of_delay_and_eager_outer_steps():
    def streaming(balanced):
        exp = experiment("streaming_diloco", balanced)
        return exp.replace(algorithms=(replace(exp.algorithms[0], fragments=1, fragment_sync_delay=20,
                                               eager_outer=True),))

    fixed = simulate(streaming(False), record_steps=True)
    balanced = simulate(streaming(True), record_steps=True)
    assert barrier_waits_s(balanced.steps, [0, 1, 2]) <= 0.2 * barrier_waits_s(fixed.steps, [0, 1, 2])
