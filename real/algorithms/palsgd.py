"""PALSGD: DiLoCo plus pseudo-synchronization steps."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Batch
from .diloco import DiLoCo


def pseudo_sync_(x: list[torch.Tensor], z: list[torch.Tensor], alpha: float) -> None:
    """x <- x - α·(x - z), in place (a lerp toward z with weight α)."""
    torch._foreach_lerp_(x, z, alpha)


def pseudo_sync_alpha(lr: float, eta: float, p: float) -> float:
    """α = min(1, γ_t·η/p): the released code does not clip; we do, so x never overshoots z."""
    return min(1.0, lr * eta / p)


class PALSGD(DiLoCo):
    """PALSGD, Pseudo-Asynchronous Local SGD (Naganuma et al., TMLR 2025, arXiv 2504.18454; released
    code ``PostAdaptiveLocalSGDDecoupled``).

    Exactly DiLoCo, except that with probability p (``p``) a local step is a pseudo-sync step

        x_k <- x_k - min(1, γ_t·η/p)·(x_k - z)     (pull toward the stale global model; no traffic)

    and every other local step is an inner-optimizer step with learning rate γ_t/(1 - p), which also
    scales AdamW's decoupled weight decay (lr·wd), as the released code does. Which steps are pseudo-sync
    steps comes from the shared plan (``skip_draws``). ``skipped_batches = consumed`` fetches and throws
    away the batch of a pseudo-sync step (released code); ``kept`` leaves it to the next gradient step.
    With p = 0 this is exactly DiLoCo (a test checks it).
    """

    name = "palsgd"

    @property
    def lr_scale(self) -> float:
        return 1.0 / (1.0 - self.setup.spec.p)

    def pseudo_sync(self, next_batch: Callable[[], Batch], lr: float) -> float:
        if self.setup.spec.skipped_batches == "consumed":
            self.fetch(next_batch)
        alpha = pseudo_sync_alpha(lr, self.setup.spec.eta, self.setup.spec.p)
        self.on_device("pseudo_sync", lambda: pseudo_sync_([self.flat], [self.z], alpha))
        return float("nan")
