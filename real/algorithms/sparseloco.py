"""SparseLoCo: DiLoCo's rounds with a sparse, quantized outer gradient and error feedback."""

from __future__ import annotations

import torch

from ...core.sparse import allgather_bytes_sent
from ..sparse import decode_sum, encode_
from .base import Algorithm
from .diloco import DELTA_SHARE


class SparseLoCo(Algorithm):
    """SparseLoCo (Sarfi, Thérien, Lidin, Belilovsky, arXiv 2508.15706).

    Keeps the global model z (the same on every worker) and a local error-feedback buffer e. After the
    warm-up z <- x and e <- 0. Every H inner steps, per worker k:

        e   = β·e + (z - x_k)                         (β = ``error_decay``; Δ_k = z - x_k as DiLoCo's)
        m_k = Q(top-k(e)), per tensor                 (``topk_density``, ``payload_dtype``: real/sparse.py)
        e   = e - m_k                                 (what was sent, as it decodes)
        Δ   = (1/W)·Σ_j m_j                           (one all-gather of values + indices, then a dense sum)
        z   = z - γ_out·Δ;  x_k = z                   (plain outer SGD: the error feedback replaces momentum)

    The floating-point buffers (BatchNorm) are averaged in fp32 as by the other local algorithms.
    """

    name = "sparseloco"

    def __init__(self, setup):
        super().__init__(setup)
        # On an emulated accelerator the parameters never move: z - x and the error feedback stay 0, so every
        # sync sends the same message. Built once, before the timed steps: the host's top-k is a device's
        # work (slept as part of u) and must not lengthen the syncs.
        self.emulated_message = None
        if setup.device_s is not None:
            zeros = torch.zeros_like(self.flat)
            self.emulated_message = encode_(zeros, self.numels, setup.spec.topk_density, setup.spec.payload_dtype)

    def begin_local(self) -> None:
        self.z = self.flat.clone()
        self.error = torch.zeros_like(self.z)

    def sync(self, step: int) -> None:
        self.wait_for_all()
        out: list[torch.Tensor] = []
        self.on_device("outer_step", lambda: out.append(self.encode()), DELTA_SHARE)
        message = out[0] if out else self.emulated_message
        with self.setup.timer.phase("allreduce") as box:
            gathered = self.sync_comm.allgather(message)  # all workers, or the peers across replica groups
            box[0] = allgather_bytes_sent(message.numel(), self.sync_comm.world_size)
        buffers = self.float_buffers()
        if buffers:
            self.allreduce_mean(buffers)
        self.on_device("outer_step", lambda: self.apply_outer_step(step, gathered), 1 - DELTA_SHARE)

    def encode(self) -> torch.Tensor:
        spec = self.setup.spec
        self.error.mul_(spec.error_decay).add_(self.z).sub_(self.flat)
        return encode_(self.error, self.numels, spec.topk_density, spec.payload_dtype)

    def apply_outer_step(self, step: int, gathered: list[torch.Tensor]) -> None:
        spec = self.setup.spec
        mean = decode_sum(gathered, self.numels, spec.topk_density, spec.payload_dtype).div_(len(gathered))
        self.z.add_(mean, alpha=-self.outer_lr_at(step))
        self.flat.copy_(self.z)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "z": getattr(self, "z", None), "error": getattr(self, "error", None)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["z"] is not None:
            self.z = state["z"].clone()
            self.error = state["error"].clone()
