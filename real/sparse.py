"""SparseLoCo's sparse messages in torch: per tensor, the top-k entries of the error-feedback buffer,
their values (fp32, bf16, or int2 codes with one fp32 scale) and their indices, packed into one uint8
buffer laid out and sized exactly as ``core.sparse`` counts it (SparseLoCo, arXiv 2508.15706).

int2: four levels (c - 1.5)·s, c in 0..3, with s = max|v|/1.5 over the tensor's k values, so the largest
magnitude is sent exactly and no sent value is zero unless all are (s = 0); c = round(v/s + 1.5) (ties
to even), four codes a byte, lowest bits first. Indices: uint8, int16 offset by 2^15, or int32
(``core.sparse.index_bytes``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.sparse import index_bytes, topk_count, value_bytes

_HALF_RANGE = 1.5  # int2 levels at ±0.5 and ±1.5 scales
_INT16_OFFSET = 1 << 15


def quantize_int2(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 codes packed four a byte then the fp32 scale, the values those codes decode to)."""
    scale = (values.abs().max() / _HALF_RANGE).reshape(1)
    # All zeros: scale 0, so every code decodes to 0 (a scale of 1 would send ±0.5 for nothing).
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = (values / safe + _HALF_RANGE).round().clamp(0, 3).to(torch.uint8)
    decoded = (codes.float() - _HALF_RANGE) * scale
    padded = torch.nn.functional.pad(codes, (0, -codes.numel() % 4)).reshape(-1, 4)
    packed = padded[:, 0] | (padded[:, 1] << 2) | (padded[:, 2] << 4) | (padded[:, 3] << 6)
    return torch.cat([packed, scale.view(torch.uint8)]), decoded


def dequantize_int2(buf: torch.Tensor, k: int) -> torch.Tensor:
    packed = buf[:-4]
    scale = buf[-4:].clone().view(torch.float32)  # clone: a view needs an aligned offset
    codes = torch.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], dim=1).reshape(-1)[:k]
    return (codes.float() - _HALF_RANGE) * scale


def _encode_values(values: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    if dtype == "int2":
        return quantize_int2(values)
    wire = values.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    return wire.view(torch.uint8), wire.float()


def _decode_values(buf: torch.Tensor, k: int, dtype: str) -> torch.Tensor:
    if dtype == "int2":
        return dequantize_int2(buf, k)
    return buf.clone().view(torch.bfloat16 if dtype == "bf16" else torch.float32).float()


def _encode_indices(idx: torch.Tensor, numel: int) -> torch.Tensor:
    width = index_bytes(numel)
    if width == 1:
        return idx.to(torch.uint8)
    if width == 2:
        return (idx - _INT16_OFFSET).to(torch.int16).view(torch.uint8)
    return idx.to(torch.int32).view(torch.uint8)


def _decode_indices(buf: torch.Tensor, numel: int) -> torch.Tensor:
    width = index_bytes(numel)
    if width == 1:
        return buf.long()
    if width == 2:
        return buf.clone().view(torch.int16).long() + _INT16_OFFSET
    return buf.clone().view(torch.int32).long()


def encode_(error: torch.Tensor, numels: Sequence[int], density: float, dtype: str) -> torch.Tensor:
    """One worker's message from the flat error-feedback buffer ``error`` (tensors of ``numels`` one after
    the other); subtracts what is sent (the values as they decode) from ``error`` in place."""
    parts = []
    for e in error.split(list(numels)):
        k = topk_count(e.numel(), density)
        idx = e.abs().topk(k, sorted=False).indices
        wire, sent = _encode_values(e[idx], dtype)
        e.index_put_((idx,), e[idx] - sent)
        parts += [wire, _encode_indices(idx, e.numel())]
    return torch.cat(parts)


def decode_sum(messages: Sequence[torch.Tensor], numels: Sequence[int], density: float,
               dtype: str) -> torch.Tensor:
    """The dense sum of the workers' messages, added in the order given (rank order: every rank gets the
    same bits)."""
    total = torch.zeros(sum(numels), device=messages[0].device)
    for message in messages:
        at, offset = 0, 0
        for n in numels:
            k = topk_count(n, density)
            vb, ib = value_bytes(k, dtype), k * index_bytes(n)
            values = _decode_values(message[at:at + vb], k, dtype)
            idx = _decode_indices(message[at + vb:at + vb + ib], n)
            total[offset:offset + n].index_add_(0, idx, values)
            at, offset = at + vb + ib, offset + n
    return total
