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

    tau = H/P (a whole round; DiLoCoX's one-step delay when P = 1): the fragment started after a sync
    step goes out once that step's sync is applied, so one all-reduce is in flight at a time; the first
    sync has none and applies a zero average. ``eager_outer`` (Kale et al., arXiv 2502.12996): the
    averaged Δ_f is corrected by (z_f - x_f now - this worker's Δ_f as sent) / K before the outer step,
    so the worker's own share is its freshest one (``docs/algorithms.md``; z_f then differs by worker).
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
        self._pending = None  # (fragment, its outer gradient being averaged, the all-reduce's wait, own share)
        self._next = None  # tau = H/P: (fragment, outer gradient, own share) to send after this step's sync

    def begin_local(self) -> None:
        super().begin_local()
        self._make_buffers()

    def _make_buffers(self) -> None:
        """The outer gradients' buffers, allocated (and touched) once: with tau = H/P a second one, since the
        next fragment's outer gradient is taken while the last one is in flight (with P = 1, the same slice);
        with eager updates, each one's own share as sent."""
        spec = self.setup.spec
        count = 2 if spec.fragment_sync_delay == spec.sync_every // spec.fragments > 0 else 1
        self._deltas = [self.delta, *(torch.zeros_like(self.delta) for _ in range(count - 1))]
        self._owns = [torch.zeros_like(self.delta) for _ in range(count)] if spec.eager_outer else None
        self._turn = 0

    def _buffers(self, part: slice, take: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next free (outer gradient, own share) pair, taken in turn (``take``) or only lent."""
        i = self._turn
        self._turn = (i + 1) % len(self._deltas) if take else i
        return self._deltas[i][part], self._owns[i][part] if self._owns else None

    def start_sync(self, step: int) -> None:
        fragment = int(self.setup.start_after[step])
        if fragment < 0:
            return
        if self.setup.spec.fragment_sync_delay == 0:
            self.wait_for_all()  # a blocking sync, timed as DiLoCo's
        part = self.parts[fragment]
        delta, own = self._buffers(part)

        def take() -> None:
            torch.sub(self.z[part], self.flat[part], out=delta)
            if own is not None:
                own.copy_(delta)  # the all-reduce overwrites delta

        self.on_device("outer_step", take, DELTA_SHARE * self.shares[fragment])
        # tau = H/P: this step's sync applies the fragment in flight; the next one's outer gradient was
        # taken just now, from z before that outer step, and is sent after it.
        if self.setup.sync_after[step] and self.setup.spec.fragment_sync_delay > 0:
            self._next = (fragment, delta, own)
        else:
            self._launch(fragment, delta, own)

    def _launch(self, fragment: int, delta: torch.Tensor, own: torch.Tensor | None) -> None:
        buffers = self.float_buffers() if fragment == len(self.parts) - 1 else []
        wait = self.sync_comm.start_allreduce_mean_([list(delta.split(self.part_numels[fragment])), buffers])
        self._pending = (fragment, delta, wait, own)

    def sync(self, step: int) -> None:
        fragment = int(self.setup.fragment[step])
        part = self.parts[fragment]
        first = self._pending is None  # tau = H/P, first sync: nothing was sent, the average is zero
        if first:
            delta, own = self._buffers(part, take=False)  # the pair the deferred start did not take
        else:
            started, delta, wait, own = self._pending
            if started != fragment:
                raise AssertionError(f"step {step} applies fragment {fragment}, started {started}")
            with self.setup.timer.phase("allreduce") as box:
                box[0] = ring_bytes(wait(), self.sync_comm.world_size)
        self._pending = None
        self.on_device("outer_step", lambda: self.apply_fragment(step, part, delta, own, zero=first),
                       (1 - DELTA_SHARE) * self.shares[fragment])
        if self._next is not None:
            next_fragment, next_delta, next_own = self._next
            self._next = None
            self._launch(next_fragment, next_delta, next_own)

    def apply_fragment(self, step: int, part: slice, delta: torch.Tensor, own: torch.Tensor | None = None, *,
                       zero: bool = False) -> None:
        if zero:  # nothing was averaged, nor sent
            delta.zero_()
            if own is not None:
                own.zero_()
        local = self.flat[part].clone()
        z, buf, mu = self.z[part], self.buf[part], self.setup.spec.outer_momentum
        if own is not None:
            # Eager (Kale et al., arXiv 2502.12996): this worker's share of the average, as it was when
            # sent, is replaced by its share now: mean + (fresh - own) / K.
            fresh = torch.sub(z, local)
            delta.add_(fresh.sub_(own), alpha=1 / self.sync_comm.world_size)
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
            fragment, delta, wait, own = self._pending
            sent = wait()
            self._pending = (fragment, delta, lambda: sent, own)
            pending = (fragment, delta, own)
        return {**super().state_dict(), "pending": pending}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["z"] is not None:
            self._make_buffers()
        if state.get("pending") is not None:
            fragment, delta, *own = state["pending"]
            own = own[0].clone() if own and own[0] is not None else None
            self._pending = (fragment, delta.clone(), lambda: 0, own)
