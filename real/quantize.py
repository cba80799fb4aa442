"""Quantized payloads, emulated in torch: int8 and fp4 (e2m1) codes with one fp32 scale per block of
``core.buckets.QUANT_BLOCK`` elements, packed with their scales into one uint8 buffer per chunk.

int8: scale = absmax/127, code = round(x/scale) in [-127, 127] (INTELLECT-1's int8 syncs).
fp4: e2m1 (sign, 2 exponent bits, 1 mantissa bit: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6, the OCP MX
FP4 element), scale = absmax/6, code = the nearest magnitude (ties to the smaller) and the sign,
two codes per byte (Streaming DiLoCo's 4-bit exchanges).
A block of zeros gets scale 1, so every code decodes to a finite value.
"""

from __future__ import annotations

import torch

from ..core.buckets import PAYLOAD_ELEM_BYTES, QUANT_BLOCK

FP4_MAGNITUDES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
_FP4_MIDPOINTS = (FP4_MAGNITUDES[1:] + FP4_MAGNITUDES[:-1]) / 2
_MAX = {"int8": 127.0, "fp4": 6.0}


def packed_bytes(numel: int, dtype: str) -> int:
    """Bytes of ``quantize``'s buffer for ``numel`` elements (a multiple of the block)."""
    return int(numel * PAYLOAD_ELEM_BYTES[dtype])


def quantize(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """uint8 buffer: the codes of the fp32 tensor ``x`` (numel a multiple of the block), then the scales."""
    blocks = x.detach().float().reshape(-1, QUANT_BLOCK)
    scale = blocks.abs().amax(dim=1, keepdim=True) / _MAX[dtype]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    y = blocks / scale
    if dtype == "int8":
        codes = y.round().clamp(-127, 127).to(torch.int8).view(torch.uint8).reshape(-1)
    else:
        magnitude = torch.bucketize(y.abs(), _FP4_MIDPOINTS.to(x.device))  # a tie goes to the smaller
        nibbles = (magnitude | ((y < 0).long() << 3)).to(torch.uint8).reshape(-1, 2)
        codes = nibbles[:, 0] | (nibbles[:, 1] << 4)
    return torch.cat([codes, scale.reshape(-1).view(torch.uint8)])


def dequantize(buf: torch.Tensor, numel: int, dtype: str) -> torch.Tensor:
    """fp32 tensor of ``numel`` elements from ``quantize``'s buffer."""
    code_bytes = numel if dtype == "int8" else numel // 2
    scale = buf[code_bytes:].view(torch.float32).reshape(-1, 1)
    codes = buf[:code_bytes]
    if dtype == "int8":
        values = codes.view(torch.int8).float()
    else:
        nibbles = torch.stack([codes & 0xF, codes >> 4], dim=1).reshape(-1).long()
        sign = 1.0 - 2.0 * (nibbles >> 3).float()
        values = FP4_MAGNITUDES.to(buf.device)[nibbles & 7] * sign
    return (values.reshape(-1, QUANT_BLOCK) * scale).reshape(-1)
