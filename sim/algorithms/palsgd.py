"""PALSGD: DiLoCo plus pseudo-synchronization steps."""

from __future__ import annotations

import math

from ...core.algorithms import pseudo_sync_mask, steps_for_gradient_budget
from ..costs import StepCosts
from .base import SimAlgorithm


class PALSGD(SimAlgorithm):
    """PALSGD (Naganuma et al., arXiv 2504.18454, TMLR 2025; released code
    ``PostAdaptiveLocalSGDDecoupled``).

    DiLoCo, except that each local step is, with probability p, a pseudo-sync step
    x_k ← x_k − min(1, γ_t·η/p)·(x_k − z) costing m (``pseudo_sync_passes`` passes over 4N bytes)
    and no traffic. ``skip_draws``: shared (every worker skips the same steps) or independent (a
    sync waits for the worker that drew the most gradient steps). ``skipped_batches``: consumed (a
    pseudo-sync step still loads its batch, paying the data time; the budget stays W + local steps)
    or kept (the batch goes to the next gradient step, so the budget grows until every worker has
    taken as many gradient steps as DDP takes steps).
    """

    name = "palsgd"
    outer_step = True

    def steps(self, seed: int) -> int:
        nominal = self.exp.nominal_steps
        s = self.spec
        if s.skipped_batches == "consumed" or s.p <= 0:
            return nominal
        length = nominal
        while True:  # a long enough draw; the plan's mask is a prefix of it (same stream)
            length = max(length + 64, math.ceil(length / (1 - s.p) * 1.1))
            mask = pseudo_sync_mask(seed, self.exp.workers, length, s.p, s.warmup_steps, s.skip_draws)
            try:
                return steps_for_gradient_budget(mask, nominal)
            except ValueError:
                continue

    def pseudo_sync(self, costs: StepCosts) -> tuple[float, float]:
        data = costs.data_s if self.spec.skipped_batches == "consumed" else 0.0
        return costs.pseudo_sync_s, data
