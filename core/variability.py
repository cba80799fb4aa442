"""How much longer each worker's compute takes at each step: one sampler for the simulator and for the
real harness's emulated accelerators, so both draw step times from the same distributions.

    c_kt = c · slow_k · J_kt · S_kt
    J_kt ~ LogNormal(μ, σ²) with σ² = ln(1 + cv²), μ = -σ²/2, so E[J] = 1 and sd(J)/E[J] = cv
    S_kt = straggler_factor with probability straggler_prob, else 1 (rare spikes: OS noise, GC)
    slow_k = slow_factor for the last ``slow_workers`` ranks, else 1 (a persistently slower card)

The factor of worker k at step t depends only on (seed, k, t), not on how the steps are drawn: step by
step, each step's workers in order, jitter and spikes from separate streams. The simulator draws a run in
blocks (DDP chunks, one block per sync interval), an emulated accelerator all its steps at once; with the
same seed both get the same factor for the same worker and step, so a comparison of waits at barriers
measures the model, not two different draws.
"""

from __future__ import annotations

import numpy as np

from .cluster import VariabilitySpec

_JITTER_STREAM = 0x717E
_SPIKE_STREAM = 0x5B1C


def slow_factors(var: VariabilitySpec, workers: int) -> np.ndarray:
    """slow_k of every worker: ``slow_factor`` for the last ``slow_workers`` ranks, else 1. The known,
    persistent part of each worker's speed: what the jitter and spikes average around, and what
    ``sync_every = "balanced"`` scales each replica's local steps by (``core.algorithms.balance``)."""
    slow = np.ones(workers)
    if var.slow_workers:
        slow[workers - min(var.slow_workers, workers):] = var.slow_factor
    return slow


class ComputeFactors:
    """Draws the factors slow_k · J_kt · S_kt, [workers, steps] at a time, from one seeded stream."""

    def __init__(self, var: VariabilitySpec, workers: int, seed: int):
        self.var, self.workers = var, workers
        self.slow = slow_factors(var, workers)
        sigma2 = np.log1p(var.jitter_cv ** 2)
        self._sigma, self._mu = np.sqrt(sigma2), -sigma2 / 2
        self._jitter = np.random.default_rng([seed, _JITTER_STREAM])
        self._spikes = np.random.default_rng([seed, _SPIKE_STREAM])

    @property
    def varies(self) -> bool:
        v = self.var
        return v.jitter_cv > 0 or v.straggler_prob > 0 or v.slow_workers > 0

    def draw(self, steps: int) -> np.ndarray:
        """[workers, steps] factors for the next ``steps`` steps (all ones without variability). Drawn as
        [steps, workers] (step-major), so that consecutive calls continue the same sequence."""
        shape = (steps, self.workers)
        out = np.broadcast_to(self.slow[None, :], shape).copy()
        if self.var.jitter_cv > 0:
            out *= self._jitter.lognormal(self._mu, self._sigma, shape)
        if self.var.straggler_prob > 0:
            out[self._spikes.random(shape) < self.var.straggler_prob] *= self.var.straggler_factor
        return out.T
