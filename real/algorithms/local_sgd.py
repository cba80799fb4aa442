"""Local SGD with a DDP warm-up (Post-local SGD)."""

from __future__ import annotations

from .base import Algorithm


class LocalSGD(Algorithm):
    """Periodic model averaging: Local SGD (Stich, arXiv 1805.09767) and Post-local SGD (Lin et al.,
    arXiv 1808.07217).

    W (``warmup_steps``) DDP steps, then every worker x_k steps on its own and after every H
    (``sync_every``) local steps the parameters are averaged, x_k <- mean_j(x_j). The inner optimizer
    state stays local. Same parameters, step for step, as PyTorch's
    ``PostLocalSGDOptimizer(optim, PeriodicModelAverager(period=H, warmup_steps=W))`` (a test checks it);
    unlike that reference we also average BatchNorm running statistics at each sync.
    """

    name = "local_sgd"

    def sync(self, step: int) -> None:
        self.wait_for_all()
        self.allreduce_mean([p.data for p in self.params], self.float_buffers())
