"""Differential tests of the algorithms on 2 gloo ranks (scenarios.py), and the pseudo-sync formula."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from palsgd.core.algorithms import PSEUDO_SYNC_STEP
from palsgd.real.algorithms.palsgd import pseudo_sync_, pseudo_sync_alpha

# W = 2, H = 3, 9 steps. Local SGD (PeriodicModelAverager) averages after steps W, W + H, W + 2H;
# DiLoCo and PALSGD take H local steps (2-4, 5-7) before each outer step: after steps 4 and 7.
SYNC_AFTER = {"local_sgd": (2, 5, 8), "diloco": (4, 7), "palsgd": (4, 7)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenarios") / "results.pt"
    script = Path(__file__).with_name("scenarios.py")
    # The bound catches a hang, not a slow machine: under load the scenarios took over 240 s.
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=540)
    return torch.load(out, weights_only=False)


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for ta, tb in zip(a, b, strict=True) for x, y in zip(ta, tb, strict=True))


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adamw"])
def test_local_sgd_equals_pytorch_post_local_sgd(results, optimizer):
    # Same division-then-sum all-reduce as PyTorch's average_parameters: bitwise equal on two ranks.
    assert max_diff(results[f"local_sgd/{optimizer}"], results[f"reference/{optimizer}"]) == 0.0


def test_ddp_equals_single_process_on_the_concatenated_batch(results):
    for step, (ranks, single) in enumerate(zip(results["ddp"], results["single"], strict=True)):
        for flat in ranks:
            torch.testing.assert_close(flat, single, rtol=1e-5, atol=1e-6, msg=f"step {step}")


def test_diloco_with_outer_lr_1_momentum_0_is_local_sgd_on_its_sync_steps(results):
    # PyTorch's Post-local SGD whose averager starts at step W + H - 1 averages after DiLoCo's outer steps.
    assert max_diff(results["diloco_1_0"], results["reference/outer_schedule"]) < 1e-6
    assert max_diff(results["diloco_1_0"], results["local_sgd/adamw"]) > 1e-4  # the first sync differs


def test_palsgd_with_p_0_is_diloco(results):
    assert max_diff(results["palsgd_p0"], results["diloco"]) == 0.0


def ranks_agree(algorithm: str, kinds: np.ndarray | None, steps: int) -> list[bool]:
    """After which steps both ranks hold the same parameters: after DDP warm-up steps and syncs, and
    while every rank takes only pseudo-sync steps after a sync (pulling x = z towards z leaves it at z)."""
    agree, same = [], True
    for step in range(steps):
        if step < 2 or step in SYNC_AFTER[algorithm]:
            same = True
        elif kinds is None or (kinds[:, step] != PSEUDO_SYNC_STEP).any():
            same = False
        agree.append(same)
    return agree


@pytest.mark.parametrize(("key", "algorithm"), [
    ("local_sgd/adamw", "local_sgd"), ("diloco", "diloco"), ("palsgd/shared", "palsgd"),
    ("palsgd/independent", "palsgd"), ("bf16_payload", "local_sgd"), ("per_tensor", "local_sgd")])
def test_ranks_hold_identical_parameters_after_every_sync(results, key, algorithm):
    trajectory, kinds = results[key] if key.startswith("palsgd/") else (results[key], None)
    same = [torch.equal(ranks[0], ranks[1]) for ranks in trajectory]
    assert same == ranks_agree(algorithm, kinds, len(trajectory))


def test_skip_draws_shared_and_independent(results):
    shared = results["palsgd/shared"][1]
    independent = results["palsgd/independent"][1]
    assert (shared[0] == shared[1]).all() and (shared == PSEUDO_SYNC_STEP).any()
    assert (independent[0] != independent[1]).any()


def test_bf16_payload_and_per_tensor_sync(results):
    # per-tensor all-reduces the same numbers; a bf16 payload rounds them (about 3 significant digits).
    assert max_diff(results["per_tensor"], results["local_sgd/adamw"]) == 0.0
    assert 0 < max_diff(results["bf16_payload"], results["local_sgd/adamw"]) < 1e-2


def test_ddp_rows_follow_the_step_schema(results):
    rows = results["ddp_rows"]
    phases = {r[5] for r in rows}
    assert {"data", "compute", "allreduce", "optimizer"} <= phases
    allreduce = [r for r in rows if r[5] == "allreduce"]
    assert len(allreduce) == 9 and all(r[8] > 0 for r in allreduce)  # one blocking collective per step
    assert all(r[7] >= r[6] for r in rows)


def test_pseudo_sync_formula_on_hand_made_tensors():
    x = [torch.tensor([1.0, 2.0, -4.0]), torch.tensor([[0.5]])]
    z = [torch.tensor([0.0, 4.0, -4.0]), torch.tensor([[1.5]])]
    alpha = pseudo_sync_alpha(lr=0.1, eta=0.5, p=0.2)  # γη/p = 0.25
    assert alpha == pytest.approx(0.25)
    pseudo_sync_(x, z, alpha)  # x - 0.25 (x - z)
    np.testing.assert_allclose(x[0].numpy(), [0.75, 2.5, -4.0])
    np.testing.assert_allclose(x[1].numpy(), [[0.75]])
    assert pseudo_sync_alpha(lr=1.0, eta=1.0, p=0.1) == 1.0  # clipped: x jumps to z, never past it
