"""SparseLoCo: DiLoCo's rounds, a sparse quantized outer gradient exchanged by all-gather."""

from __future__ import annotations

from .base import SimAlgorithm


class SparseLoCo(SimAlgorithm):
    """SparseLoCo (Sarfi et al., arXiv 2508.15706).

    W DDP steps, then rounds of H inner steps of c + o as DiLoCo (outer steps after W + H - 1, ...). Each
    sync: the barrier, one ring all-gather of every worker's top-k values and indices
    (``core.sparse.sync_bytes`` bytes each: ``costs.sparse_sync``, growing with the workers), the buffers
    all-reduced as by the other local algorithms, then the outer step, charged u as DiLoCo's (error
    feedback, top-k, decoding the W messages and the plain outer SGD step: memory-bound passes over the
    parameters; the top-k selection's own cost is not modelled apart).
    """

    name = "sparseloco"
    outer_step = True
