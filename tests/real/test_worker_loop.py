"""The training loop's checks and progress line, on a hand-made plan (no processes, no model)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from palsgd.core.algorithms import GRADIENT_STEP, PSEUDO_SYNC_STEP
from palsgd.real.worker import PROGRESS_EVERY_S, Diverged, Training

KINDS = np.array([GRADIENT_STEP, PSEUDO_SYNC_STEP, GRADIENT_STEP, GRADIENT_STEP], dtype=np.int8)
SYNC_AFTER = np.array([False, False, True, False])


def _training(params: torch.Tensor) -> Training:
    plan = SimpleNamespace(steps=len(KINDS), sync_after=SYNC_AFTER)  # the part of a Plan the loop reads
    setup = SimpleNamespace(kinds=KINDS, timer=SimpleNamespace(last_end_s=1.5))
    return Training(exp=None, name="palsgd", out=None, ctx=SimpleNamespace(rank=0), attempt=0, plan=plan,
                    setup=setup, algo=None, flat_params=params, data=None, eval_data=[], files=None)


def test_a_non_finite_loss_of_a_gradient_step_stops_the_run():
    t = _training(torch.zeros(4))
    t.stop_if_diverged(0, 2.0)
    for loss in (math.nan, math.inf):
        with pytest.raises(Diverged, match=f"loss is {loss}") as info:
            t.stop_if_diverged(2, loss)
        assert info.value.step == 2


def test_a_pseudo_sync_step_has_no_loss_to_check():
    _training(torch.zeros(4)).stop_if_diverged(1, math.nan)


def test_non_finite_parameters_stop_the_run_at_a_sync():
    t = _training(torch.tensor([0.0, math.nan]))
    t.stop_if_diverged(0, 2.0)  # no sync after step 0: parameters are checked at syncs only
    with pytest.raises(Diverged, match="parameters are not finite"):
        t.stop_if_diverged(2, 2.0)


def test_the_progress_line_names_a_pseudo_sync_step(capsys):
    t = _training(torch.zeros(4))
    t.last_print -= PROGRESS_EVERY_S  # a line is due
    t.print_progress(1, math.nan, math.nan)
    t.print_progress(3, 2.25, 2.5)  # the last step always prints
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["[palsgd] step 2/4  pseudo-sync  t 1.5s", "[palsgd] step 4/4  loss 2.2500  t 1.5s  eval 2.5000"]
