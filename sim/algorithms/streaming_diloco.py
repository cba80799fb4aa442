"""Streaming DiLoCo: DiLoCo synced one fragment at a time, each all-reduce overlapped with inner steps."""

from __future__ import annotations

from ...core.config import AlgorithmSpec, Experiment
from ..costs import StepCosts, fragment_syncs
from .base import SimAlgorithm, SyncCost


class StreamingDiLoCo(SimAlgorithm):
    """Streaming DiLoCo (Douillard et al., arXiv 2501.18512; torchft ``local_sgd.DiLoCo`` with
    ``model_fragments``, ``fragment_sync_delay``, ``fragment_update_alpha``).

    W DDP steps, then every H/P inner steps one of the P fragments (``core.buckets.fragment_bounds``) in
    turn: its outer gradient is all-reduced from the end of the step tau steps before the sync
    (``core.algorithms.plan``), overlapped with the tau inner steps that follow, then the fragment's
    outer Nesterov step costs its share of u and the local fragment is mixed in by alpha (in u).

    With tau = 0 a fragment sync is DiLoCo's sync of that fragment's calls (barrier, T_AR, u share),
    so P = 1, tau = 0 is DiLoCo. With tau > 0 the engine (``sim/run.py``) starts the all-reduce when the
    last worker ends the step tau before the sync, and a worker waits at the sync for what the tau steps
    did not hide. Assumed: the all-reduce competes for the link with nothing else (tau < H/P, so one
    fragment is in flight at a time, and local steps send nothing) and for compute with nothing (the
    transfer costs no compute time; the real harness runs it on gloo's or NCCL's own threads/stream).
    The engine also re-aligns the workers at each fragment sync, as at a DiLoCo sync; torchft does not
    wait there for the slowest worker, so under jitter the prediction overstates waiting.
    """

    name = "streaming_diloco"
    outer_step = True

    def __init__(self, spec: AlgorithmSpec, exp: Experiment):
        super().__init__(spec, exp)
        self.fragments = fragment_syncs(exp, spec)

    def sync(self, costs: StepCosts, fragment: int = 0) -> SyncCost:
        """The sync of ``fragment``: its own calls (T_AR, with the barrier when tau = 0) and its share of u."""
        comm_s, nbytes, share = self.fragments[fragment]
        return SyncCost(comm_s, nbytes, share * costs.outer_s)
