"""The shared step plan: each algorithm's sync rule, seeded pseudo-sync draws, the budget rule, and one
plan for the simulator and the real workers."""

import itertools

import numpy as np
import pytest

from palsgd.core import algorithms as A
from palsgd.core.config import from_dict
from palsgd.real.worker import make_plan  # imports torch: the real workers' own function
from palsgd.sim.algorithms import build
from palsgd.sim.engine import simulate


def syncs(algorithm, steps, warmup_steps, sync_every):
    return list(np.flatnonzero(A.is_sync_step(algorithm, np.arange(steps), warmup_steps, sync_every)))


def test_local_sgd_syncs_like_periodic_model_averager():
    # average when step >= W and (step - W) % H == 0, steps from 0: right after step W, then every H.
    assert syncs("local_sgd", 30, 4, 8) == [4, 12, 20, 28]
    assert syncs("local_sgd", 5, 0, 2) == [0, 2, 4]


def test_local_sgd_as_torchft_takes_h_local_steps_before_each_average():
    # torchft's LocalSGD counts H optimizer steps, then averages: after steps 11, 19, 27 for W = 4, H = 8,
    # one average fewer than PyTorch's schedule in the same 30 steps.
    steps = np.arange(30)
    assert list(np.flatnonzero(A.is_sync_step("local_sgd", steps, 4, 8, "torchft"))) == [11, 19, 27]
    exp = from_dict({"budget": {"steps": 30}, "algorithms": ["local_sgd"],
                     "algorithm": {"local_sgd": {"warmup_steps": 4, "sync_every": 8, "averager": "torchft"}}})
    assert list(np.flatnonzero(A.plan_for(exp, exp.algorithms[0], seed=0).sync_after)) == [11, 19, 27]


@pytest.mark.parametrize("algorithm", ["diloco", "palsgd"])
def test_outer_steps_follow_h_local_steps(algorithm):
    # W = 4, H = 8: local steps 4..11 are the first round, so outer steps follow steps 11, 19, 27.
    assert syncs(algorithm, 30, 4, 8) == [11, 19, 27]
    assert syncs(algorithm, 5, 0, 2) == [1, 3]
    assert syncs(algorithm, 4, 1, 1) == [1, 2, 3]


def test_ddp_never_syncs():
    assert syncs("ddp", 10, 0, 1) == []


def test_pseudo_sync_steps_count_among_the_h_local_steps():
    # The released code advances its step counter on pseudo-sync steps too: the outer steps do not
    # move when steps are drawn as pseudo-sync steps, whatever the draws.
    palsgd = A.plan("palsgd", workers=3, steps=60, seed=2, warmup_steps=5, sync_every=4, p=0.5,
                    skip_draws="independent")
    diloco = A.plan("diloco", workers=3, steps=60, seed=2, warmup_steps=5, sync_every=4)
    assert (palsgd.kinds == A.PSEUDO_SYNC_STEP).any()
    assert (palsgd.sync_after == diloco.sync_after).all()


def test_plan_kinds():
    p = A.plan("palsgd", workers=3, steps=400, seed=1, warmup_steps=10, sync_every=5, p=0.25)
    assert (p.kinds[:, :10] == A.DDP_STEP).all()
    assert (p.kinds == p.kinds[0]).all()  # shared draws: every worker alike
    share = (p.kinds[0, 10:] == A.PSEUDO_SYNC_STEP).mean()
    assert 0.18 < share < 0.32
    ind = A.plan("palsgd", workers=3, steps=400, seed=1, warmup_steps=10, sync_every=5, p=0.25,
                 skip_draws="independent")
    assert not (ind.kinds == ind.kinds[0]).all()
    again = A.plan("palsgd", workers=3, steps=400, seed=1, warmup_steps=10, sync_every=5, p=0.25)
    assert (again.kinds == p.kinds).all()
    assert not A.plan("diloco", workers=2, steps=50, seed=1, p=0.5).kinds.__eq__(A.PSEUDO_SYNC_STEP).any()
    assert not A.plan("ddp", workers=2, steps=5, seed=0).sync_after.any()


def experiment(algorithm, *, budget, skipped_batches="consumed", skip_draws="shared", seed=3):
    """3 workers of 2 samples a step; 40 steps, or 2.5 epochs of 96 samples (16 steps each): 40 steps."""
    return from_dict({
        "workload": {"batch_per_worker": 2, "dataset_samples": 96},
        "cluster": {"nodes": 1, "gpus_per_node": 3},
        "algorithms": [algorithm],
        "algorithm": {"sync_every": 5, "warmup_steps": 6, "p": 0.3, "skipped_batches": skipped_batches,
                      "skip_draws": skip_draws},
        "budget": {"steps": 40} if budget == "steps" else {"epochs": 2.5},
        "seed": seed,
    })


@pytest.mark.parametrize("budget", ["steps", "epochs"])
@pytest.mark.parametrize("skip_draws", A.SKIP_DRAWS)
def test_kept_batches_budget_counts_gradient_steps_after_the_warm_up(budget, skip_draws):
    exp = experiment("palsgd", budget=budget, skipped_batches="kept", skip_draws=skip_draws)
    assert exp.nominal_steps == 40
    p = A.plan_for(exp, exp.algorithms[0], exp.seed)
    local = p.kinds[:, 6:]
    assert (p.kinds[:, :6] == A.DDP_STEP).all()
    # Every worker takes at least 40 - W = 34 gradient steps after the warm-up (with independent draws
    # the others take a few more while the last one catches up), and one step fewer would leave a
    # worker short.
    assert ((local == A.GRADIENT_STEP).sum(axis=1) >= 34).all()
    assert ((local[:, :-1] == A.GRADIENT_STEP).sum(axis=1) < 34).any()
    assert p.steps > 40  # p = 0.3 draws some pseudo-sync steps


@pytest.mark.parametrize("budget", ["steps", "epochs"])
def test_consumed_batches_budget_counts_every_step(budget):
    exp = experiment("palsgd", budget=budget)
    p = A.plan_for(exp, exp.algorithms[0], exp.seed)
    assert p.steps == 40 and (p.kinds == A.PSEUDO_SYNC_STEP).any()


CASES = [(algorithm, budget, batches, draws)
         for algorithm, budget, batches, draws in itertools.product(
             A.ALGORITHMS, ("steps", "epochs"), A.SKIPPED_BATCHES, A.SKIP_DRAWS)]


@pytest.mark.parametrize(("algorithm", "budget", "skipped_batches", "skip_draws"), CASES)
def test_simulator_and_real_workers_take_the_same_plan(algorithm, budget, skipped_batches, skip_draws):
    exp = experiment(algorithm, budget=budget, skipped_batches=skipped_batches, skip_draws=skip_draws)
    spec = exp.algorithms[0]
    real = make_plan(exp, spec)
    sim = build(spec, exp).plan(exp.seed)  # the simulator's first repeat; later repeats use seed + r
    assert real.kinds.shape == (exp.workers, real.steps)
    np.testing.assert_array_equal(sim.kinds, real.kinds)
    np.testing.assert_array_equal(sim.sync_after, real.sync_after)


def test_simulated_run_has_the_real_run_length():
    exp = experiment("palsgd", budget="epochs", skipped_batches="kept", skip_draws="independent")
    assert simulate(exp).runs["steps"].iloc[0] == make_plan(exp, exp.algorithms[0]).steps > 40
