"""DiLoCo: Local SGD with an outer Nesterov step on the averaged outer gradient."""

from __future__ import annotations

from .base import SimAlgorithm


class DiLoCo(SimAlgorithm):
    """DiLoCo (Douillard et al., arXiv 2311.08105).

    W DDP steps, then rounds of H inner steps of c + o (outer steps after steps W + H - 1, W + 2H - 1,
    ...), each followed by Δ = mean_k(z − x_k) by all-reduce (T_AR(S)) and the outer Nesterov
    step z ← z − γ_out·(Δ + μ·buf), costing u (``outer_passes`` passes over 4N bytes), then x_k ← z.
    With γ_out = 1, μ = 0 it is Local SGD averaging after the same steps; the timing differs only by u.
    """

    name = "diloco"
    outer_step = True
