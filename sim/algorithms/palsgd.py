"""PALSGD: DiLoCo plus pseudo-synchronization steps."""

from __future__ import annotations

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
    or kept (the batch goes to the next gradient step, so the run grows until every worker has taken
    the budget's gradient steps: ``core.algorithms.plan_for``). H counts pseudo-sync steps too.
    """

    name = "palsgd"
    outer_step = True

    def pseudo_sync(self, costs: StepCosts) -> tuple[float, float]:
        data = costs.data_s if self.spec.skipped_batches == "consumed" else 0.0
        return costs.pseudo_sync_s, data
