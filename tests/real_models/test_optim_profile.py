"""Inner optimizer, learning-rate schedule, and the compute profiler's phases."""

from __future__ import annotations

import math

import pytest
import torch

from palsgd.core.config import load
from palsgd.core.workload import TrainSpec
from palsgd.real.optim import build_optimizer, lr_at, set_lr
from palsgd.real.profile_compute import OuterState, measure_compute

KEYS = {"step_time_s", "step_time_cv", "optimizer_time_s", "pseudo_sync_time_s", "outer_step_time_s",
        "data_time_s"}


def test_constant_and_cosine_schedules_by_hand():
    assert lr_at(TrainSpec(lr=0.3), 77, 100) == 0.3
    cos = TrainSpec(lr=1.0, lr_schedule="cosine", lr_warmup_steps=4)
    assert [lr_at(cos, s, 15) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # after the warm-up, progress = (step - 4) / (15 - 1 - 4)
    assert lr_at(cos, 4, 15) == pytest.approx(1.0)          # progress 0
    assert lr_at(cos, 9, 15) == pytest.approx(0.55)         # progress 1/2: 0.1 + 0.9 * 0.5
    assert lr_at(cos, 14, 15) == pytest.approx(0.1)         # last step: 10% of the peak
    assert lr_at(cos, 50, 15) == pytest.approx(0.1)
    assert lr_at(cos, 6, 15) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.2)))


@pytest.mark.parametrize(("name", "cls"), [("sgd", torch.optim.SGD), ("sgd_momentum", torch.optim.SGD),
                                           ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers_and_weight_decay_groups(name, cls):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = build_optimizer(model.parameters(), TrainSpec(optimizer=name, lr=0.5, weight_decay=0.1,
                                                         beta1=0.8, beta2=0.9, momentum=0.7))
    assert type(opt) is cls
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(3, 4)] and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
    if name.startswith("adam"):
        assert decay["betas"] == (0.8, 0.9)
    if name == "sgd_momentum":
        assert decay["momentum"] == 0.7 and not decay["nesterov"]
    set_lr(opt, 0.01)
    assert all(g["lr"] == 0.01 for g in opt.param_groups)


def test_adamw_step_matches_the_decoupled_formula():
    p = torch.nn.Parameter(torch.tensor([[1.0, -2.0]]))
    opt = build_optimizer([p], TrainSpec(optimizer="adamw", lr=0.1, weight_decay=0.5))
    p.grad = torch.tensor([[0.3, 0.3]])
    opt.step()
    # first AdamW step: p <- p (1 - lr wd) - lr * sign(g) (bias-corrected m / sqrt(v) = g / |g|)
    expected = torch.tensor([[1.0 * 0.95 - 0.1, -2.0 * 0.95 - 0.1]])
    torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)


def test_outer_state_is_pytorch_nesterov_sgd_and_pseudo_sync_is_the_axpy():
    torch.manual_seed(0)
    x = [torch.randn(5), torch.randn(2, 3)]
    state = OuterState(x, lr=0.7, momentum=0.9)
    z_ref = [t.clone().requires_grad_() for t in x]
    ref = torch.optim.SGD(z_ref, lr=0.7, momentum=0.9, nesterov=True)
    for round_ in range(3):
        for t in x:  # local steps move x away from z
            t.add_(torch.randn_like(t))
        before = [t.clone() for t in x]
        state.pseudo_sync()  # x <- x - a (x - z)
        for t, b, z in zip(x, before, state.z, strict=True):
            torch.testing.assert_close(t, b - OuterState.PULL * (b - z))
        for zr, t in zip(z_ref, x, strict=True):
            zr.grad = (zr.detach() - t).clone()  # outer gradient delta = z - x
        ref.step()
        state.outer_step()
        for zr, z, t in zip(z_ref, state.z, x, strict=True):
            torch.testing.assert_close(z, zr.detach(), msg=f"round {round_}")
            assert torch.equal(t, z)  # x <- z after the sync


def test_measure_compute_on_the_tiny_gpt():
    exp = load(workload="gpt-tiny", overrides=["cluster.nodes=1", "workload.model.layers=1",
                                               "workload.batch_per_worker=2",
                                               "workload.grad_accum=2"])
    out = measure_compute(exp, steps=3, warmup=1)
    assert set(out) == KEYS
    assert all(v > 0 for k, v in out.items() if k != "step_time_cv")
    # forward + backward of 2 micro-batches is far more work than an axpy over the parameters
    assert out["step_time_s"] > out["pseudo_sync_time_s"]
    with pytest.raises(ValueError):
        measure_compute(exp, steps=1)
