"""What every simulated algorithm provides: its step plan and the cost of its syncs.

The engine (``sim/engine.py``) walks the plan; the classes here only say what is particular to each
algorithm (``docs/algorithms.md``; costs in ``docs/model.md``). ``real/algorithms/`` has one class
per algorithm with the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.algorithms import Plan, plan_for
from ...core.config import AlgorithmSpec, Experiment
from ..costs import StepCosts


@dataclass(frozen=True)
class SyncCost:
    """One sync, per worker: the blocking all-reduce and what follows it."""

    comm_s: float  # T_AR(S), per-tensor latency included when asked
    bytes: float  # bytes one worker sends
    outer_s: float  # u: the outer Nesterov step (DiLoCo, PALSGD); 0 for Local SGD


class SimAlgorithm:
    """Base: a DDP warm-up of W steps, then local steps, a sync after each step the plan marks
    (``core.algorithms.is_sync_step``)."""

    name = ""
    outer_step = False  # pays u after each sync

    def __init__(self, spec: AlgorithmSpec, exp: Experiment):
        if spec.name != self.name:
            raise ValueError(f"{type(self).__name__} simulates {self.name!r}, not {spec.name!r}")
        self.spec, self.exp = spec, exp

    def plan(self, seed: int) -> Plan:
        """The seeded plan the real harness takes too (``core.algorithms.plan_for``)."""
        return plan_for(self.exp, self.spec, seed)

    def sync(self, costs: StepCosts, fragment: int = 0) -> SyncCost:
        """A sync: T_AR(S) (+ u with an outer step). Only Streaming DiLoCo has more than one fragment."""
        return SyncCost(costs.sync_s, costs.sync_bytes, costs.outer_s if self.outer_step else 0.0)

    def pseudo_sync(self, costs: StepCosts) -> tuple[float, float]:
        """(m, data loading) of a pseudo-sync step; only PALSGD takes them."""
        return costs.pseudo_sync_s, costs.data_s
