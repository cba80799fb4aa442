"""One class per algorithm, same interface (``base.SimAlgorithm``); names as in ``core.algorithms``."""

from __future__ import annotations

from ...core.config import AlgorithmSpec, Experiment
from .base import SimAlgorithm, SyncCost
from .ddp import DDP
from .diloco import DiLoCo
from .local_sgd import LocalSGD
from .palsgd import PALSGD
from .sparseloco import SparseLoCo
from .streaming_diloco import StreamingDiLoCo

REGISTRY: dict[str, type[SimAlgorithm]] = {
    cls.name: cls for cls in (DDP, LocalSGD, DiLoCo, PALSGD, StreamingDiLoCo, SparseLoCo)
}


def build(spec: AlgorithmSpec, exp: Experiment) -> SimAlgorithm:
    return REGISTRY[spec.name](spec, exp)


__all__ = ["DDP", "PALSGD", "REGISTRY", "DiLoCo", "LocalSGD", "SimAlgorithm", "SparseLoCo", "StreamingDiLoCo",
           "SyncCost", "build"]
