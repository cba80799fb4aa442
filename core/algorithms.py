"""The algorithm names and the step plan that the simulator and the real harness share.

``plan`` decides, before a run starts, which kind of step each worker takes at each step: a DDP step
(warm-up), a local gradient step or a PALSGD pseudo-synchronization step, and after which steps a
sync happens. Drawing it once from a seeded generator is what lets a simulated and a real run of the
same experiment take exactly the same steps (``../shared/docs/algorithms.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALGORITHMS = ("ddp", "local_sgd", "diloco", "palsgd")
LOCAL_ALGORITHMS = ("local_sgd", "diloco", "palsgd")
OUTER_ALGORITHMS = ("diloco", "palsgd")  # keep a global model z and an outer Nesterov optimizer

SKIP_DRAWS = ("shared", "independent")
SKIPPED_BATCHES = ("consumed", "kept")

# Step kinds in a plan.
DDP_STEP, GRADIENT_STEP, PSEUDO_SYNC_STEP = 0, 1, 2

_PSEUDO_SYNC_STREAM = 0x5EED  # keeps the pseudo-sync draws apart from every other use of the seed


def is_sync_step(step: int | np.ndarray, warmup_steps: int, sync_every: int):
    """True after the local steps that end with a sync (parameter averaging or outer step).

    Same rule as PyTorch's ``PeriodicModelAverager``: average when ``step >= warmup_steps`` and
    ``(step - warmup_steps) % period == 0``, steps counted from 0, so the first sync follows step W.
    """
    step = np.asarray(step)
    return (step >= warmup_steps) & ((step - warmup_steps) % sync_every == 0)


def pseudo_sync_mask(seed: int, workers: int, steps: int, p: float, warmup_steps: int,
                     skip_draws: str) -> np.ndarray:
    """Boolean [workers, steps]: True where a worker takes a pseudo-sync step instead of a gradient step.

    ``shared``: one stream for all workers (the released code seeds every rank alike), so every row
    is the same. ``independent``: one stream per worker. Warm-up steps are never pseudo-sync steps.
    """
    if skip_draws not in SKIP_DRAWS:
        raise ValueError(f"skip_draws must be one of {SKIP_DRAWS}, not {skip_draws!r}")
    mask = np.zeros((workers, steps), dtype=bool)
    if p <= 0 or steps <= warmup_steps:
        return mask
    if skip_draws == "shared":
        rng = np.random.default_rng([seed, _PSEUDO_SYNC_STREAM])
        mask[:, :] = rng.random(steps) < p
    else:
        for worker in range(workers):
            rng = np.random.default_rng([seed, _PSEUDO_SYNC_STREAM, worker + 1])
            mask[worker] = rng.random(steps) < p
    mask[:, :warmup_steps] = False
    return mask


@dataclass(frozen=True)
class Plan:
    """What every worker does at every step of one run of one algorithm."""

    algorithm: str
    kinds: np.ndarray  # int8 [workers, steps]: DDP_STEP, GRADIENT_STEP or PSEUDO_SYNC_STEP
    sync_after: np.ndarray  # bool [steps]: a sync follows this step (always False for ddp)

    @property
    def workers(self) -> int:
        return self.kinds.shape[0]

    @property
    def steps(self) -> int:
        return self.kinds.shape[1]

    def worker_kinds(self, worker: int) -> np.ndarray:
        return self.kinds[worker]


def plan(algorithm: str, *, workers: int, steps: int, seed: int, warmup_steps: int = 0,
         sync_every: int = 1, p: float = 0.0, skip_draws: str = "shared") -> Plan:
    """The step plan of one run. ``p`` is used by ``palsgd`` alone."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    kinds = np.full((workers, steps), GRADIENT_STEP, dtype=np.int8)
    index = np.arange(steps)
    if algorithm == "ddp":
        kinds[:, :] = DDP_STEP
        return Plan(algorithm, kinds, np.zeros(steps, dtype=bool))
    kinds[:, index < warmup_steps] = DDP_STEP
    if algorithm == "palsgd":
        kinds[pseudo_sync_mask(seed, workers, steps, p, warmup_steps, skip_draws)] = PSEUDO_SYNC_STEP
    return Plan(algorithm, kinds, is_sync_step(index, warmup_steps, sync_every))


def steps_for_gradient_budget(mask: np.ndarray, gradient_steps: int) -> int:
    """Steps needed until every worker has taken ``gradient_steps`` non-pseudo-sync steps
    (``skipped_batches = kept``: a pseudo-sync step does not use up a batch)."""
    done = np.cumsum(~mask, axis=1)
    reached = done >= gradient_steps
    if not reached[:, -1].all():
        raise ValueError("mask too short for the gradient budget")
    return int(reached.argmax(axis=1).max()) + 1
