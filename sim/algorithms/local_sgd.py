"""Local SGD (periodic model averaging); with W > 0, Post-local SGD."""

from __future__ import annotations

from .base import SimAlgorithm


class LocalSGD(SimAlgorithm):
    """Local SGD (Stich, arXiv 1805.09767); Post-local SGD (Lin et al., arXiv 1808.07217).

    W DDP steps, then local steps of c + o; after every step t >= W with (t - W) % H == 0 (PyTorch's
    ``PeriodicModelAverager``: the first average follows step W), x_k ← mean_j(x_j): a blocking
    all-reduce of S bytes, T_AR(S), and nothing else (u = 0).
    """

    name = "local_sgd"
