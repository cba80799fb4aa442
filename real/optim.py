"""The inner optimizer of every algorithm, and its learning-rate schedule.

Every algorithm (DDP, Local SGD, DiLoCo, PALSGD) builds its inner optimizer here, so they differ only
in what they do between steps. The algorithms set ``group["lr"]`` themselves each step (PALSGD scales
it by 1 / (1 - p)); the value given at construction is the peak ``train.lr``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..core.buckets import decay_groups
from ..core.workload import TrainSpec

FINAL_LR_FRACTION = 0.1
"""Cosine decay ends at this fraction of the peak learning rate (Chinchilla, Hoffmann et al. 2022)."""


def param_groups(params: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Decay matrices and conv kernels, not biases or normalisation gains (nanoGPT; Goyal et al. 2017
    leave BatchNorm undecayed too): weight decay on a LayerNorm gain pulls it toward 0, not toward 1.
    The split is ``core.buckets.decay_groups``, which also orders the flat buffer (``flat_order``)."""
    params = [p for p in params if p.requires_grad]
    decay, no_decay = decay_groups([p.ndim for p in params])
    groups = [{"params": [params[i] for i in decay], "weight_decay": weight_decay},
              {"params": [params[i] for i in no_decay], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def flat_order(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable parameters in the order of the optimizer's groups: the order of the flat buffer a
    sync all-reduces (``real/dist.flatten_``, ``core.buckets.flat_order``)."""
    return [p for g in param_groups(model.parameters(), 0.0) for p in g["params"]]


def build_optimizer(params: Iterable[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``params`` at the peak ``train.lr``.

    sgd: plain SGD; sgd_momentum: heavy-ball momentum ``train.momentum`` (not Nesterov; Goyal et al.
    2017); adam: Adam with L2 weight decay folded into the gradient; adamw: decoupled weight decay
    (Loshchilov & Hutter 2019) with betas (``beta1``, ``beta2``), as DiLoCo's inner optimizer.
    """
    groups = param_groups(params, train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr)
    if train.optimizer == "sgd_momentum":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)
    betas = (train.beta1, train.beta2)
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, lr=train.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=train.lr, betas=betas)


def lr_at(train: TrainSpec, step: int, total_steps: int) -> float:
    """Inner learning rate at optimizer step ``step`` (from 0) of a run of ``total_steps``.

    constant: ``lr``. cosine: linear warm-up to ``lr`` over ``lr_warmup_steps`` (step 0 already gets
    lr / W), then lr * (f + (1 - f) * (1 + cos(pi * progress)) / 2) with f = 10%, progress running from
    0 at the end of the warm-up to 1 at the last step (nanoGPT ``get_lr``).
    """
    if train.lr_schedule == "constant":
        return train.lr
    warm = train.lr_warmup_steps
    if step < warm:
        return train.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total_steps - 1 - warm))
    return train.lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (the weight-decay split keeps two groups)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
