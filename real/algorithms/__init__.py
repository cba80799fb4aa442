"""The algorithms of the real harness, one small class each (same names as ``core.algorithms``)."""

from .base import Algorithm, Setup
from .ddp import DDP
from .diloco import DiLoCo
from .local_sgd import LocalSGD
from .palsgd import PALSGD
from .sparseloco import SparseLoCo
from .streaming_diloco import StreamingDiLoCo

ALGORITHM_CLASSES: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (DDP, LocalSGD, DiLoCo, PALSGD, StreamingDiLoCo, SparseLoCo)
}

__all__ = ["ALGORITHM_CLASSES", "DDP", "PALSGD", "Algorithm", "DiLoCo", "LocalSGD", "Setup",
           "SparseLoCo", "StreamingDiLoCo"]
