"""After a sync, a real rank checks that the averaged parameters are finite; an emulated accelerator, whose
parameters never change, skips that host-side scan, which would otherwise sit on the step clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from palsgd.real.worker import Diverged, Training


def _after_sync(emulated) -> SimpleNamespace:
    state = SimpleNamespace(emulated=emulated, plan=SimpleNamespace(sync_after=[True]),
                            flat_params=torch.tensor([1.0, float("nan")]))
    state.is_pseudo_sync = lambda step: False
    return state


def test_a_real_rank_checks_the_averaged_parameters():
    with pytest.raises(Diverged):
        Training.stop_if_diverged(_after_sync(None), 0, 1.0)


def test_an_emulated_rank_skips_the_scan(monkeypatch):
    scanned = []
    monkeypatch.setattr(torch, "isfinite", lambda t: scanned.append(t) or torch.ones_like(t, dtype=torch.bool))
    Training.stop_if_diverged(_after_sync(object()), 0, float("nan"))
    assert scanned == []
