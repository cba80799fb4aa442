"""Quantized payloads (``real/quantize.py``): codes and scales, their size as core charges it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from palsgd.core.buckets import PAYLOAD_ELEM_BYTES, QUANT_BLOCK
from palsgd.real.quantize import FP4_MAGNITUDES, dequantize, packed_bytes, quantize


@pytest.mark.parametrize("dtype", ["int8", "fp4"])
def test_buffer_size_is_what_core_charges(dtype):
    x = torch.randn(64 * QUANT_BLOCK)
    assert quantize(x, dtype).numel() == packed_bytes(x.numel(), dtype) == x.numel() * PAYLOAD_ELEM_BYTES[dtype]


def test_int8_error_is_at_most_half_a_step_of_its_block():
    x = torch.randn(8 * QUANT_BLOCK) * torch.logspace(-3, 3, 8).repeat_interleave(QUANT_BLOCK)
    y = dequantize(quantize(x, "int8"), x.numel(), "int8")
    step = x.reshape(-1, QUANT_BLOCK).abs().amax(dim=1, keepdim=True) / 127
    assert ((x - y).reshape(-1, QUANT_BLOCK).abs() <= step / 2 * (1 + 1e-6)).all()


def test_fp4_keeps_e2m1_values_and_rounds_to_the_nearest():
    grid = torch.cat([FP4_MAGNITUDES, -FP4_MAGNITUDES]).repeat(2) * 0.25  # two blocks, absmax 1.5 each
    assert torch.equal(dequantize(quantize(grid, "fp4"), grid.numel(), "fp4"), grid)
    # Block absmax 6 (scale 1): 2.4 -> 2, 2.6 -> 3, -5.2 -> -6, a tie 2.5 -> 2 (the smaller).
    x = torch.zeros(QUANT_BLOCK)
    x[:5] = torch.tensor([6.0, 2.4, 2.6, -5.2, 2.5])
    assert dequantize(quantize(x, "fp4"), QUANT_BLOCK, "fp4")[:5].tolist() == [6.0, 2.0, 3.0, -6.0, 2.0]


@pytest.mark.parametrize("dtype", ["int8", "fp4"])
def test_a_block_of_zeros_decodes_to_zeros(dtype):
    assert torch.equal(dequantize(quantize(torch.zeros(QUANT_BLOCK), dtype), QUANT_BLOCK, dtype),
                       torch.zeros(QUANT_BLOCK))


@pytest.fixture(scope="module")
def quantized_means(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "means.pt"
    subprocess.run([sys.executable, str(Path(__file__).parent / "quantized_mean.py"), "3", str(out)],
                   check=True, timeout=300)
    return torch.load(out)


@pytest.mark.parametrize("dtype", ["int8", "fp4"])
def test_quantized_mean_on_three_ranks_is_the_fp32_mean_of_dequantized_chunks(quantized_means, dtype):
    # Rank j reduces chunk j: the fp32 sum of every rank's dequantized copy of it, divided by W, then
    # quantized once more for the all-gather. Every rank ends with the same values, within the two
    # quantizations' error of the true mean, and counts the quantized bytes core charges.
    ranks = quantized_means
    world = len(ranks)
    inputs = [torch.cat(r[dtype][0]) for r in ranks]
    n = inputs[0].numel()
    chunk = -(-n // (world * QUANT_BLOCK)) * QUANT_BLOCK
    padded = [torch.nn.functional.pad(x, (0, world * chunk - n)).split(chunk) for x in inputs]
    mean = torch.cat([dequantize(quantize(sum(dequantize(quantize(p[j], dtype), chunk, dtype) for p in padded)
                                          / world, dtype), chunk, dtype) for j in range(world)])[:n]
    for _inputs, results, sent in (r[dtype] for r in ranks):
        assert torch.equal(torch.cat(results), mean)
        assert sent == n * PAYLOAD_ELEM_BYTES[dtype]
    true_mean = torch.stack(inputs).mean(0)
    error = (mean - true_mean).abs().max() / true_mean.abs().max()
    assert 0 < error < {"int8": 0.02, "fp4": 0.5}[dtype]


@pytest.mark.parametrize("dtype", ["int8", "fp4"])
def test_a_started_quantized_mean_finishes_in_the_background_on_a_snapshot(quantized_means, dtype):
    """Streaming DiLoCo's fragment sync: the whole exchange (all-to-all and all-gather) overlaps the
    steps that follow its start, as torchft's does; the mean is of the payload as it was at the start,
    and two syncs in flight finish in order (one process group, one job after another)."""
    for r in quantized_means:
        blocking = torch.cat(r[dtype][1])
        finished, sent, first, second = r[f"{dtype} async"]
        assert finished  # 1 s after the start, before wait() was called
        assert torch.equal(torch.cat(first), blocking) and torch.equal(torch.cat(second), blocking)
        assert sent == [r[dtype][2]] * 2
