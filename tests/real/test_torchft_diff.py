"""Our DiLoCo and Streaming DiLoCo follow torchft's ``local_sgd.DiLoCo`` parameter for parameter, step
for step (``torchft_diff.py``: P = 1, 2, 4; tau = 0, 1, 3; alpha = 0, 0.25, 0.5), and our Local SGD with
``averager = "torchft"`` follows torchft's ``local_sgd.LocalSGD`` (an average after every H local steps).

On 2 ranks the trajectories are equal bit for bit. On 3 they agree within 1e-6 but not bitwise: we
average as PyTorch's ``average_parameters`` does (divide by 3, then sum), torchft's Manager sums, then
divides, and x/3 is not exact in binary floating point (measured: at most 6e-8 apart).

Quantized cases (int8, fp4): torchft's own quantized all-reduce (``should_quantize``, fp8 triton kernels)
runs only on a GPU, and on CPU torchft silently sends full precision; the stand-in Manager then runs our
quantized mean on what torchft hands it. Those cases check that both quantize the same tensors at the
same steps and use the result alike, not torchft's kernels.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from torchft_diff import CASES


def trajectories(tmp_path, world):
    out = tmp_path / f"diff{world}.pt"
    subprocess.run([sys.executable, str(Path(__file__).parent / "torchft_diff.py"), str(world), str(out)],
                   check=True, timeout=300)
    return torch.load(out)


def test_two_ranks_follow_torchft_bitwise(tmp_path):
    ranks = trajectories(tmp_path, 2)
    for case in CASES:
        for rank, results in enumerate(ranks):
            ours, reference = results[case]
            assert len(ours) == len(reference) > 0
            for step, (a, b) in enumerate(zip(ours, reference, strict=True)):
                assert torch.equal(a, b), (case, rank, step, float((a - b).abs().max()))
    # The cases differ from one another, so the comparison sees P, tau and alpha.
    last = {case: ranks[0][case][0][-1] for case in CASES}
    assert len({tuple(t.tolist()) for t in last.values()}) == len(CASES) - 1  # DiLoCo == P1, tau 0, alpha 0
    assert torch.equal(last["diloco"], last["p1_tau0_alpha0"])


@pytest.mark.slow
def test_three_ranks_follow_torchft_within_1e_6(tmp_path):
    for results in trajectories(tmp_path, 3):
        for case in CASES:
            ours, reference = results[case]
            for a, b in zip(ours, reference, strict=True):
                assert torch.allclose(a, b, rtol=0, atol=1e-6), case


@pytest.mark.slow
def test_replica_groups_follow_torchft_bitwise(tmp_path):
    """4 ranks as 2 replica groups of 2 (``torchft_groups.py``): DDP inside each group, DiLoCo and
    Streaming DiLoCo (P = 2, tau = 1, alpha = 0.5) across the groups through the same rank of each, as
    torchft's Manager syncs replica groups; every sum is of two terms, so the bits are the same. The int8
    case runs our quantized mean over the peers on both sides (see the module docstring), ours on a
    background thread through the peers' own process group."""
    from torchft_diff import STEPS, H
    from torchft_groups import CASES as GROUP_CASES

    out = tmp_path / "groups.pt"
    subprocess.run([sys.executable, str(Path(__file__).parent / "torchft_groups.py"), str(out)],
                   check=True, timeout=400)
    ranks = torch.load(out)
    for case in GROUP_CASES:
        for rank, results in enumerate(ranks):
            ours, reference = results[case]
            assert len(ours) == len(reference) == STEPS
            for step, (a, b) in enumerate(zip(ours, reference, strict=True)):
                assert torch.equal(a, b), (case, rank, step, float((a - b).abs().max()))
    diloco = [results["diloco"][0] for results in ranks]
    for step in range(STEPS):  # a group agrees always, the groups only after an outer step
        assert torch.equal(diloco[0][step], diloco[1][step]) and torch.equal(diloco[2][step], diloco[3][step])
        assert torch.equal(diloco[0][step], diloco[2][step]) == ((step + 1) % H == 0), step
