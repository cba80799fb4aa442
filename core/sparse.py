"""SparseLoCo's sync payload: per tensor the top-k entries of the error-feedback buffer, their values
at the payload's width and their indices at the width the tensor's size needs. One truth for the
simulator (``sim/costs.py``) and the real harness (``real/sparse.py`` packs exactly these bytes).

SparseLoCo (Sarfi, Thérien, Lidin, Belilovsky, "Communication Efficient LLM Pre-training with
SparseLoCo", arXiv 2508.15706) sends 1-3 % of the pseudo-gradient quantized to 2 bits. The paper's
top-k is taken per chunk of a tensor; ours per whole tensor (``docs/algorithms.md`` says why). No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SPARSE_VALUE_BITS = {"fp32": 32, "bf16": 16, "int2": 2}
"""Bits per transmitted value of each payload dtype SparseLoCo accepts."""
SCALE_BYTES = 4
"""One fp32 scale per tensor with an ``int2`` payload (the 4 codes are multiples of it)."""
DEFAULT_PAYLOAD = "int2"


def topk_count(numel: int, density: float) -> int:
    """k of a tensor of ``numel`` elements: ceil(density·numel), at least one, at most all."""
    return min(int(numel), max(1, math.ceil(density * numel)))


def index_bytes(numel: int) -> int:
    """Bytes of one index into a tensor of ``numel`` elements: the smallest of 1, 2, 4 whose codes cover
    0..numel-1 (sent as uint8, int16 offset by 2^15, int32)."""
    if numel <= 1 << 8:
        return 1
    if numel <= 1 << 16:
        return 2
    return 4


def value_bytes(k: int, dtype: str) -> int:
    """Bytes of k values: int2 packs four codes per byte and adds the tensor's fp32 scale."""
    bits = SPARSE_VALUE_BITS[dtype]
    return math.ceil(k * bits / 8) + (SCALE_BYTES if dtype == "int2" else 0)


def tensor_bytes(numel: int, density: float, dtype: str) -> int:
    """Bytes one worker sends for one tensor: values, then indices."""
    k = topk_count(numel, density)
    return value_bytes(k, dtype) + k * index_bytes(numel)


def sync_bytes(param_numels: Sequence[float], density: float, dtype: str) -> int:
    """Bytes of one worker's message at a SparseLoCo sync: every parameter tensor's part, one buffer
    all-gathered in one call (each worker receives W-1 such messages)."""
    return sum(tensor_bytes(int(n), density, dtype) for n in param_numels)


def allgather_bytes_sent(message_bytes: float, workers: int) -> float:
    """Bytes one rank sends in a ring all-gather of one ``message_bytes`` message per rank: it forwards
    the n-1 messages that are not its own, (n-1)·m (what gloo's and NCCL's ring all-gathers do)."""
    return (workers - 1) * message_bytes if workers > 1 else 0.0
