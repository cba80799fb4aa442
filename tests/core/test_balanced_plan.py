"""``sync_every = "balanced"``: a sync period per replica, scaled by its known speed, in the shared plan."""

import numpy as np
import pytest

from palsgd.core import algorithms as A
from palsgd.core.config import ConfigError, experiment_to_dict, from_dict, with_changes
from palsgd.real.worker import make_plan  # imports torch: the real workers' own function
from palsgd.sim.algorithms import build


def experiment(algorithm, *, slow_workers=1, slow_factor=1.5, sync_every=8, **algo):
    """4 workers, the last ``slow_workers`` of them ``slow_factor`` times slower; 60 steps."""
    return from_dict({
        "workload": {"batch_per_worker": 2},
        "cluster": {"nodes": 1, "gpus_per_node": 4,
                    "variability": {"slow_workers": slow_workers, "slow_factor": slow_factor}},
        "algorithms": [algorithm],
        "algorithm": {"sync_every": sync_every, "warmup_steps": 4, "p": 0.3, "fragments": 2,
                      "fragment_sync_delay": 1, **algo},
        "budget": {"steps": 60}, "seed": 5,
    })


def test_balanced_steps_keep_h_for_the_fastest_and_round_the_slower_down():
    # floor(8 / 1.5) = 5, floor(8 / 2) = 4, floor(8 / 100) = 0 -> at least one step
    np.testing.assert_array_equal(A.balanced_steps(8, np.array([1.0, 1.5, 2.0, 100.0])), [8, 5, 4, 1])
    # Only the ratio to the fastest counts: a cluster of equally slow workers keeps H.
    np.testing.assert_array_equal(A.balanced_steps(7, np.array([1.5, 1.5])), [7, 7])


@pytest.mark.parametrize("slow", [[1.0, 1.3, 1.5, 2.7], [1.0, 1.0, 1.0, 1.2]])
def test_no_replica_s_known_compute_exceeds_the_fastest_s(slow):
    slow = np.array(slow)
    for slots in range(1, 40):
        keep = A.balanced_steps(slots, slow)
        # (but every replica takes one step at least) ...
        assert ((keep == 1) | (keep * slow <= slots * slow.min() + 1e-9)).all()
        # ... and one more step would exceed it: the slow replicas take as many steps as fit.
        assert ((keep == 1) | ((keep + 1) * slow > slots * slow.min())).all()


@pytest.mark.parametrize("algorithm", A.LOCAL_ALGORITHMS)
def test_balanced_on_a_uniform_cluster_is_the_fixed_h(algorithm):
    fixed = experiment(algorithm, slow_workers=0)
    balanced = experiment(algorithm, slow_workers=0, sync_balanced=True)
    assert balanced.algorithms[0].sync_balanced
    a = A.plan_for(fixed, fixed.algorithms[0], 5)
    b = A.plan_for(balanced, balanced.algorithms[0], 5)
    np.testing.assert_array_equal(a.kinds, b.kinds)
    np.testing.assert_array_equal(a.sync_after, b.sync_after)
    np.testing.assert_array_equal(a.fragment, b.fragment)


@pytest.mark.parametrize("algorithm", A.LOCAL_ALGORITHMS)
def test_the_slow_replica_idles_the_tail_of_each_interval_and_the_rest_is_unchanged(algorithm):
    fixed = experiment(algorithm)
    balanced = experiment(algorithm, sync_balanced=True)
    a = A.plan_for(fixed, fixed.algorithms[0], 5)
    b = A.plan_for(balanced, balanced.algorithms[0], 5)
    np.testing.assert_array_equal(a.sync_after, b.sync_after)  # the syncs stay where they were
    np.testing.assert_array_equal(a.kinds[:3], b.kinds[:3])  # the fast workers keep every step
    idle = b.kinds[3] == A.IDLE_STEP
    np.testing.assert_array_equal(b.kinds[3][~idle], a.kinds[3][~idle])  # PALSGD's draws where it steps
    per_sync = b.local_steps_per_sync
    slots = np.diff(np.flatnonzero(b.sync_after), prepend=3)  # the first interval starts after W = 4
    np.testing.assert_array_equal(per_sync[0], slots)
    np.testing.assert_array_equal(per_sync[3], np.maximum(1, np.floor(slots / 1.5 + 1e-9)))
    assert idle.any() and not idle[:4].any()  # never in the warm-up


def test_a_replica_group_takes_its_slowest_worker_s_steps():
    exp = experiment("palsgd", sync_balanced=True, replica_group=2, skip_draws="independent")
    p = A.plan_for(exp, exp.algorithms[0], 5)
    np.testing.assert_array_equal(p.kinds[0], p.kinds[1])
    np.testing.assert_array_equal(p.kinds[2], p.kinds[3])  # worker 2 is fast, its group is not
    assert (p.kinds[2] == A.IDLE_STEP).any() and not (p.kinds[0] == A.IDLE_STEP).any()


@pytest.mark.parametrize("algorithm", A.LOCAL_ALGORITHMS)
def test_simulator_and_real_workers_take_the_same_balanced_plan(algorithm):
    exp = experiment(algorithm, sync_balanced=True, skip_draws="independent")
    spec = exp.algorithms[0]
    real, sim = make_plan(exp, spec), build(spec, exp).plan(exp.seed)
    assert (real.kinds == A.IDLE_STEP).any()
    np.testing.assert_array_equal(sim.kinds, real.kinds)
    np.testing.assert_array_equal(sim.sync_after, real.sync_after)


def test_sync_every_balanced_keeps_the_h_below_and_round_trips():
    base = experiment("diloco", sync_every=12)
    exp = with_changes(base, [("--set", {"algorithm": {"sync_every": "balanced"}})])
    spec = exp.algorithms[0]
    assert (spec.sync_every, spec.sync_balanced) == (12, True)
    assert from_dict(experiment_to_dict(exp)).algorithms == exp.algorithms
    ddp = from_dict({"algorithms": ["ddp", "local_sgd"], "algorithm": {"sync_every": "balanced"}})
    assert [a.sync_balanced for a in ddp.algorithms] == [False, True]  # DDP has no local steps


def test_another_word_for_sync_every_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r'algorithm\.diloco\.sync_every = .fast.: must be an integer >= 1 '
                                          r'\(H\) or "balanced"'):
        from_dict({"algorithms": ["diloco"], "algorithm": {"diloco": {"sync_every": "fast"}}})


def test_the_tail_after_the_last_sync_is_balanced_too():
    # Local SGD (PyTorch's averager): syncs after steps 2, 8, 14; the tail 15..18 holds 4 steps.
    p = A.plan("local_sgd", workers=2, steps=19, seed=0, warmup_steps=2, sync_every=6, slow=np.array([1.0, 2.0]))
    assert list(np.flatnonzero(p.sync_after)) == [2, 8, 14]
    np.testing.assert_array_equal(p.kinds[1], [0, 0, 1, 1, 1, 1, 3, 3, 3, 1, 1, 1, 3, 3, 3, 1, 1, 3, 3])
    assert (p.kinds[0][2:] == A.GRADIENT_STEP).all()


def test_balanced_in_ddp_s_own_table_names_the_key_written():
    with pytest.raises(ConfigError, match=r"algorithm\.ddp\.sync_every = 'balanced': does not apply to ddp"):
        from_dict({"algorithms": ["ddp"], "algorithm": {"ddp": {"sync_every": "balanced"}}})
