"""DiLoCo: Local SGD with an outer Nesterov optimizer on the global model."""

from __future__ import annotations

import torch

from .base import Algorithm

DELTA_SHARE = 0.5
"""Share of the outer step u that computing the outer gradient takes (3 of its ~6 passes over 4N bytes:
read z, read x, write Δ); the Nesterov step and x <- z take the rest."""


class DiLoCo(Algorithm):
    """DiLoCo (Douillard et al., arXiv 2311.08105).

    Keeps the global model z (identical on every worker; changes only at a sync) and the outer Nesterov
    momentum buffer. After the warm-up z <- x. Every H inner steps:

        Δ   = mean_k(z - x_k)                  (the outer gradient; S bytes all-reduced)
        buf = μ·buf + Δ                        (PyTorch SGD form, dampening 0)
        z   = z - γ_out·(Δ + μ·buf)            (Nesterov)
        x_k = z                                (inner optimizer state is kept)

    with γ_out = ``outer_lr`` (optionally cosine-scheduled), μ = ``outer_momentum``. With γ_out = 1 and
    μ = 0 this is exactly Local SGD (a test checks it).
    """

    name = "diloco"

    def begin_local(self) -> None:
        # z and the momentum buffer are flat like the parameters (``self.flat``), so the outer gradient
        # is one flat tensor too: one in-place all-reduce of S bytes and a few whole-buffer operations.
        self.z = self.flat.clone()
        self.buf = torch.zeros_like(self.z)
        self.delta = torch.zeros_like(self.z)

    def sync(self, step: int) -> None:
        self.wait_for_all()
        self.on_device("outer_step", lambda: torch.sub(self.z, self.flat, out=self.delta), DELTA_SHARE)
        self.allreduce_mean(list(self.delta.split(self.numels)), self.float_buffers())
        self.on_device("outer_step", lambda: self.apply_outer_step(step), 1 - DELTA_SHARE)

    def apply_outer_step(self, step: int) -> None:
        self.outer_step(self.delta, self.outer_lr_at(step))
        self.flat.copy_(self.z)

    def outer_step(self, delta: torch.Tensor, lr: float) -> None:
        mu = self.setup.spec.outer_momentum
        self.buf.mul_(mu).add_(delta)
        delta.add_(self.buf, alpha=mu)  # Δ + μ·buf (Δ is ours to overwrite)
        self.z.add_(delta, alpha=-lr)

    def state_dict(self) -> dict:
        # Before the end of the warm-up there is no z yet.
        return {**super().state_dict(), "z": getattr(self, "z", None), "buf": getattr(self, "buf", None)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["z"] is not None:
            self.z = state["z"].clone()
            self.buf = state["buf"].clone()
            self.delta = torch.zeros_like(self.z)
