"""Streaming DiLoCo: DiLoCo synced one fragment at a time, the all-reduce overlapped with inner steps."""

from __future__ import annotations

import numpy as np
import torch

from ...core.buckets import fragment_bounds
from ..dist import ring_bytes
from .base import Setup
from .diloco import DELTA_SHARE, DiLoCo


class StreamingDiLoCo(DiLoCo):
    """Streaming DiLoCo (Douillard et al., arXiv 2501.18512), step for step as torchft's
    ``local_sgd.DiLoCo(model_fragments, fragment_sync_delay, fragment_update_alpha)``.

    The parameters are cut into P fragments, contiguous slices of the flat buffer
    (``core.buckets.fragment_bounds``, the layout the simulator charges). The plan says when each
    fragment's sync starts and when it is applied (``core.algorithms.plan``). For fragment f:

    start (after the step tau steps before the sync; torchft ``prepare_sync``):
        Δ_f = z_f - x_f, and an asynchronous all-reduce (``async_op=True``) of mean_k Δ_f starts
        (with the floating-point buffers when f is the last fragment)
    apply (after the sync step; torchft ``perform_sync``):
        wait for it; keep the local x_f (trained on during the tau steps);
        buf_f = μ·buf_f + Δ_f;  z_f = z_f - γ_out·(Δ_f + μ·buf_f)      (DiLoCo's outer Nesterov step)
        x_f = lerp(z_f, local x_f, α)                                 (α = ``fragment_update_alpha``)

    With tau = 0 the sync enters through a barrier, as DiLoCo's, so P = 1, tau = 0, α = 0 is DiLoCo.
    """

    name = "streaming_diloco"

    def __init__(self, setup: Setup):
        super().__init__(setup)
        if setup.fragment is None or setup.start_after is None:
            raise ValueError("streaming_diloco needs the plan's fragment and start_after in its Setup")
        offsets = np.cumsum([0, *self.numels]).tolist()
        bounds = fragment_bounds(self.numels, setup.spec.fragments)
        self.parts = [slice(offsets[a], offsets[b]) for a, b in bounds]  # each fragment in the flat buffer
        self.part_numels = [self.numels[a:b] for a, b in bounds]
        self.shares = [sum(n) / sum(self.numels) for n in self.part_numels]  # of u, on an emulated device
        self._pending = None  # (fragment, its outer gradient being averaged, the all-reduce's wait)

    def start_sync(self, step: int) -> None:
        fragment = int(self.setup.start_after[step])
        if fragment < 0:
            return
        if self.setup.spec.fragment_sync_delay == 0:
            self.wait_for_all()  # a blocking sync, timed as DiLoCo's
        part = self.parts[fragment]
        delta = self.delta[part]
        self.on_device("outer_step", lambda: torch.sub(self.z[part], self.flat[part], out=delta),
                       DELTA_SHARE * self.shares[fragment])
        buffers = self.float_buffers() if fragment == len(self.parts) - 1 else []
        wait = self.sync_comm.start_allreduce_mean_([list(delta.split(self.part_numels[fragment])), buffers])
        self._pending = (fragment, delta, wait)

    def sync(self, step: int) -> None:
        fragment, delta, wait = self._pending
        if fragment != self.setup.fragment[step]:
            raise AssertionError(f"step {step} applies fragment {self.setup.fragment[step]}, started {fragment}")
        self._pending = None
        with self.setup.timer.phase("allreduce") as box:
            box[0] = ring_bytes(wait(), self.sync_comm.world_size)
        self.on_device("outer_step", lambda: self.apply_fragment(step, self.parts[fragment], delta),
                       (1 - DELTA_SHARE) * self.shares[fragment])

    def apply_fragment(self, step: int, part: slice, delta: torch.Tensor) -> None:
        local = self.flat[part].clone()
        z, buf, mu = self.z[part], self.buf[part], self.setup.spec.outer_momentum
        buf.mul_(mu).add_(delta)
        delta.add_(buf, alpha=mu)
        z.add_(delta, alpha=-self.outer_lr_at(step))
        # torchft merges in place after the outer step: x_f = z_f + α·(local - z_f).
        self.flat[part].copy_(z).lerp_(local, self.setup.spec.fragment_update_alpha)

    def state_dict(self) -> dict:
        """A checkpoint while a fragment's all-reduce is in flight finishes it first and saves the
        averaged outer gradient, applied at the sync step as planned (after a resume, with no wait)."""
        pending = None
        if self._pending is not None:
            fragment, delta, wait = self._pending
            sent = wait()
            self._pending = (fragment, delta, lambda: sent)
            pending = (fragment, delta)
        return {**super().state_dict(), "pending": pending}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state.get("pending") is not None:
            fragment, delta = state["pending"]
            self._pending = (fragment, delta.clone(), lambda: 0)
