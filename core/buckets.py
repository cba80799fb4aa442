"""The all-reduce calls a step makes: DDP's gradient buckets and the calls of a sync.

One definition for both sides: the simulator charges these calls (a latency per call, ``sim/costs.py``)
and the real harness makes exactly these (``real/dist.py``; tests record the calls it makes and compare).
Sizes are element counts or bytes of whole tensors. DDP lays its buckets out over the tensors in the
order they are registered in the model (``nn.Module.parameters()``), whatever their storage; a sync sends
runs of the flat parameter buffer, which holds them in ``flat_order``. No torch here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

MIB = 1 << 20
PARAM_BYTES = 4
"""Bytes per parameter element: the model's master weights and their gradients are fp32 (AMP casts only
the activations), and DDP sizes its buckets by the gradients' bytes."""

QUANT_BLOCK = 32
"""Elements that share one fp32 scale in a quantized payload (``real/quantize.py``)."""
QUANTIZED = ("int8", "fp4")
"""Payload dtypes sent as codes plus a scale per block, averaged with fp32 accumulation: a sync's
all-reduce becomes an all-to-all of the quantized chunks, a sum in fp32, and an all-gather of the
re-quantized result (as torchft's ``allreduce_quantized``); DDP steps send these payloads' gradients in
fp32 (PyTorch's DDP has no such hook)."""
PAYLOAD_ELEM_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0,
                      "int8": 1 + 4 / QUANT_BLOCK, "fp4": 0.5 + 4 / QUANT_BLOCK}
"""Bytes on the wire per element of a sync's payload, scales included; one truth for sim and real."""


INT_BUFFER_BYTES = 8
"""Bytes per element of an integer buffer (BatchNorm's ``num_batches_tracked`` is int64)."""


def decay_groups(param_ndims: Sequence[int]) -> tuple[list[int], list[int]]:
    """The inner optimizer's two parameter groups (``real/optim.py``), as tensor indices in registration
    order: matrices and conv kernels (ndim >= 2) are weight-decayed; biases and normalisation gains
    are not."""
    decay = [i for i, ndim in enumerate(param_ndims) if ndim >= 2]
    return decay, [i for i, ndim in enumerate(param_ndims) if ndim < 2]


def flat_order(param_ndims: Sequence[int]) -> list[int]:
    """The parameter tensors' order in the flat buffer a sync all-reduces (``real/dist.flatten_``): the
    optimizer's groups one after the other, the order in which PyTorch's ``average_parameters`` flattens
    ``optimizer.param_groups`` (torch 2.13 ``PostLocalSGDOptimizer``). The same elements at the same
    offsets are what make our averages bit-identical to PyTorch's: gloo's ring sums each chunk of the
    buffer in its own rank order."""
    decay, no_decay = decay_groups(param_ndims)
    return decay + no_decay


def ddp_payload_dtype(payload_dtype: str) -> str:
    """What DDP steps send their gradient buckets in: the payload's float type, fp32 under a quantized
    payload (``QUANTIZED``). The simulator charges it (``ddp_elem_bytes``), the real worker sends it."""
    return "fp32" if payload_dtype in QUANTIZED else payload_dtype


def ddp_elem_bytes(payload_dtype: str) -> float:
    """Bytes per gradient element in DDP's buckets (``ddp_payload_dtype``)."""
    return PAYLOAD_ELEM_BYTES[ddp_payload_dtype(payload_dtype)]


def ddp_bucket_numels(param_numels: Sequence[float], cap_bytes: float, first_cap_bytes: float) -> list[float]:
    """Elements in each of DDP's gradient buckets, in the order the buckets become ready.

    PyTorch (torch 2.13, ``Reducer::rebuild_buckets`` after the first iteration, which calls
    ``compute_bucket_assignment_by_size``): the tensors in the order their gradients become ready, here
    the reverse of registration (a backward meets the layers last to first), go into the open bucket,
    which is closed as soon as it holds at least its limit, so a tensor is never split and a bucket may
    overshoot its limit. The first bucket's limit is ``first_cap_bytes``, every later one ``cap_bytes``.
    (The very first iteration runs with one bucket of everything; the steady state is what is charged.)
    """
    buckets: list[float] = []
    size_bytes, numel, members = 0.0, 0.0, 0
    limit = first_cap_bytes
    for n in reversed(param_numels):
        size_bytes += n * PARAM_BYTES
        numel += n
        members += 1
        if size_bytes >= limit:
            buckets.append(numel)
            size_bytes, numel, members, limit = 0.0, 0.0, 0, cap_bytes
    if members:
        buckets.append(numel)
    return buckets


def ddp_bucket_bytes(param_numels: Sequence[float], bucket_mib: float, first_bucket_mib: float,
                     payload_elem_bytes: int) -> list[float]:
    """Bytes each DDP bucket all-reduces: buckets laid out on the fp32 gradients (``bucket_mib`` and
    ``first_bucket_mib`` in MiB, as PyTorch's ``bucket_cap_mb``), sent as ``payload_elem_bytes`` per element
    (a bf16 payload halves what is sent, not the layout)."""
    numels = ddp_bucket_numels(param_numels, int(bucket_mib * MIB), int(first_bucket_mib * MIB))
    return [n * payload_elem_bytes for n in numels]


def ddp_buffer_broadcast_bytes(buffer_numels: Sequence[float], int_buffer_numels: Sequence[float]) -> list[float]:
    """Bytes of each broadcast from rank 0 that DDP makes before the first forward of a step, when the
    model has buffers (its default ``broadcast_buffers=True``).

    torch 2.13 ``DistributedDataParallel._pre_forward`` syncs the buffers when ``require_forward_param_sync``
    is set, which the previous forward leaves set only if it ran outside ``no_sync``: once per optimizer
    step, before the first micro-batch, however many run under ``no_sync``. ``_broadcast_coalesced``
    flattens the buffers into one broadcast per dtype (``compute_bucket_assignment_by_size``, 250 MiB
    buckets: BatchNorm statistics are far smaller), floating point first (a running mean is the first
    buffer), then the int64 ``num_batches_tracked``.

    What torch promises is the calls and their bytes, not the order in which they run: the two broadcasts
    are in flight at once (``broadcast_coalesced`` keeps two outstanding), so which one gloo starts first
    varies from run to run. Compare them as a multiset; the simulator charges them together
    (``sim/costs.buffer_broadcast``)."""
    calls = [PARAM_BYTES * sum(buffer_numels), INT_BUFFER_BYTES * sum(int_buffer_numels)]
    return [b for b in calls if b > 0]


def sync_call_bytes(param_numels: Sequence[float], buffer_numels: Sequence[float], payload_elem_bytes: int,
                    *, per_tensor: bool) -> list[float]:
    """Bytes of each all-reduce of one Local SGD / DiLoCo / PALSGD sync, in the order they are made.

    Every local algorithm sends one parameter-sized payload (the parameters, or DiLoCo's outer gradient
    z - x) and the floating-point buffers (BatchNorm running statistics). Each is one flat buffer
    all-reduced by one call; ``per_tensor`` (the released GPT code) sends every tensor by a call of its own,
    in the order of ``param_numels`` (the flat buffer's, ``flat_order``).
    """
    if per_tensor:
        return [n * payload_elem_bytes for n in (*param_numels, *buffer_numels)]
    groups = [sum(param_numels), sum(buffer_numels)]
    return [n * payload_elem_bytes for n in groups if n > 0]


def fragment_bounds(param_numels: Sequence[float], fragments: int) -> list[tuple[int, int]]:
    """Streaming DiLoCo's fragments: P contiguous runs of the parameter tensors ``param_numels`` (in the
    flat buffer's order, ``flat_order``), as ``[first, end)`` tensor indices; a tensor is never split.

    torchft's ``DiLoCo(model_fragments=...)`` takes the fragments as modules the user cuts (torchtitan
    cuts a transformer into contiguous blocks of layers); we cut the flat buffer, each cut where
    the fragment nearest holds 1/(fragments left) of the elements left, so fragments are contiguous slices of the
    flat parameter buffer of about equal size (one tensor bigger than N/P, such as GPT's embedding,
    makes its fragment bigger and the others share the rest). Every fragment holds at least one tensor.
    """
    count = len(param_numels)
    if not 1 <= fragments <= count:
        raise ValueError(f"cannot cut {count} tensors into {fragments} fragments")
    ends = [0.0]
    for n in param_numels:
        ends.append(ends[-1] + n)
    cuts = [0]
    for i in range(1, fragments):
        # Share what is left evenly among the fragments still to cut, so that one big tensor does not
        # unbalance the fragments after it.
        target = ends[cuts[-1]] + (ends[-1] - ends[cuts[-1]]) / (fragments - i + 1)
        # Leave at least one tensor to each fragment before and after this cut.
        lo, hi = cuts[-1] + 1, count - (fragments - i)
        cuts.append(min(range(lo, hi + 1), key=lambda c: abs(ends[c] - target)))
    cuts.append(count)
    return list(itertools.pairwise(cuts))
