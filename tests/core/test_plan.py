"""The shared step plan: sync rule of PeriodicModelAverager, seeded pseudo-sync draws."""

import numpy as np

from palsgd.core import algorithms as A


def test_sync_rule_matches_periodic_model_averager():
    # average when step >= W and (step - W) % H == 0, steps from 0: W=3, H=2 -> 3, 5, 7
    assert list(np.flatnonzero(A.is_sync_step(np.arange(9), 3, 2))) == [3, 5, 7]
    assert list(np.flatnonzero(A.is_sync_step(np.arange(5), 0, 2))) == [0, 2, 4]


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


def test_gradient_budget():
    mask = np.array([[False, True, False, True, False], [True, True, False, False, False]])
    assert A.steps_for_gradient_budget(mask, 3) == 5
    assert A.steps_for_gradient_budget(mask, 2) == 4
