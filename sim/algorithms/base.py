"""What every simulated algorithm provides: its step plan and the cost of its syncs.

The engine (``sim/engine.py``) walks the plan; the classes here only say what is particular to each
algorithm (``../shared/docs/algorithms.md``, "Cost of one step"). ``real/algorithms/`` has one class
per algorithm with the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.algorithms import Plan, plan
from ...core.config import AlgorithmSpec, Experiment
from ..costs import StepCosts


@dataclass(frozen=True)
class SyncCost:
    """One sync, per worker: the blocking all-reduce and what follows it."""

    comm_s: float  # T_AR(S), per-tensor latency included when asked
    bytes: float  # bytes one worker sends
    outer_s: float  # u: the outer Nesterov step (DiLoCo, PALSGD); 0 for Local SGD


class SimAlgorithm:
    """Base: a DDP warm-up of W steps, then local steps, a sync after each step ``is_sync_step`` marks."""

    name = ""
    outer_step = False  # pays u after each sync

    def __init__(self, spec: AlgorithmSpec, exp: Experiment):
        if spec.name != self.name:
            raise ValueError(f"{type(self).__name__} simulates {self.name!r}, not {spec.name!r}")
        self.spec, self.exp = spec, exp

    def steps(self, seed: int) -> int:
        """Steps of the budget: the nominal count (every step counts as one)."""
        return self.exp.nominal_steps

    def plan(self, seed: int) -> Plan:
        """The seeded plan the real harness takes too (``core.algorithms.plan``)."""
        s = self.spec
        return plan(self.name, workers=self.exp.workers, steps=self.steps(seed), seed=seed,
                    warmup_steps=s.warmup_steps, sync_every=s.sync_every, p=s.effective_p,
                    skip_draws=s.skip_draws)

    def sync(self, costs: StepCosts) -> SyncCost:
        """A sync: T_AR(S) (+ u with an outer step)."""
        return SyncCost(costs.sync_s, costs.sync_bytes, costs.outer_s if self.outer_step else 0.0)

    def pseudo_sync(self, costs: StepCosts) -> tuple[float, float]:
        """(m, data loading) of a pseudo-sync step; only PALSGD takes them."""
        return costs.pseudo_sync_s, costs.data_s
