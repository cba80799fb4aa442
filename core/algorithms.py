"""The algorithm names and the step plan that the simulator and the real harness share.

``plan_for`` decides, before a run starts, which kind of step each worker takes at each step: a DDP
step (warm-up), a local gradient step or a PALSGD pseudo-synchronization step, after which steps a
sync happens and, for Streaming DiLoCo, which fragment it syncs and how many steps earlier its all-reduce
started. Drawing it once from a seeded generator is what lets a simulated and a real run of the
same experiment take exactly the same steps (``docs/algorithms.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .variability import slow_factors

if TYPE_CHECKING:  # core.config imports this module; the plan only reads the specs' fields
    from .config import AlgorithmSpec, Experiment


@dataclass(frozen=True)
class AlgorithmFacts:
    """What every part of palsgd knows of one algorithm, stated once: the simulator, the real harness,
    the reports, ``advise`` and the CLI read these instead of testing the algorithm's name."""

    name: str
    label: str
    colour: str
    """In every figure; colour-blind safe (seaborn "colorblind"), DDP, the baseline, in grey."""
    keys: tuple[str, ...]
    """The parameters it uses: the keys its ``[algorithm.<name>]`` table accepts."""
    local: bool = True
    """Local steps between syncs, after W DDP warm-up steps; False: DDP, every step synchronous."""
    outer_step: bool = False
    """A sync ends in an outer optimizer step on the averaged pseudo-gradient (global model + momentum)."""
    pseudo_syncs: bool = False
    """Some local steps are pseudo-synchronization steps (PALSGD's ``p``, ``eta``)."""
    fragments: bool = False
    """A sync covers one fragment of the model at a time (Streaming DiLoCo's ``fragments``)."""
    sparse: bool = False
    """A sync all-gathers each worker's top-k entries of an error-feedback buffer (SparseLoCo's
    ``topk_density``, ``error_decay``; ``core/sparse.py``)."""


_DDP_KEYS = ("payload_dtype", "bucket_mib")
# Local algorithms start with DDP warm-up steps, so DDP's keys apply to them too.
_LOCAL_KEYS = (*_DDP_KEYS, "sync_every", "sync_balanced", "warmup_steps", "per_tensor_allreduce",
               "warmup_syncs_optimizer_state", "replica_group")
_OUTER_KEYS = (*_LOCAL_KEYS, "outer_lr", "outer_momentum")
FACTS = {f.name: f for f in (
    AlgorithmFacts("ddp", "DDP", "#555555", _DDP_KEYS, local=False),
    AlgorithmFacts("local_sgd", "Local SGD", "#0173b2", (*_LOCAL_KEYS, "averager")),
    AlgorithmFacts("diloco", "DiLoCo", "#de8f05", _OUTER_KEYS, outer_step=True),
    AlgorithmFacts("palsgd", "PALSGD", "#029e73", (*_OUTER_KEYS, "p", "eta", "skip_draws", "skipped_batches"),
                   outer_step=True, pseudo_syncs=True),
    AlgorithmFacts("streaming_diloco", "Streaming DiLoCo", "#cc78bc",
                   (*_OUTER_KEYS, "fragments", "fragment_sync_delay", "fragment_update_alpha", "eager_outer"),
                   outer_step=True,
                   fragments=True),
    # Its error feedback replaces the outer momentum, and its one all-gather has no per-tensor calls.
    AlgorithmFacts("sparseloco", "SparseLoCo", "#ca9161",
                   (*(k for k in _LOCAL_KEYS if k != "per_tensor_allreduce"), "outer_lr", "topk_density",
                    "error_decay"), outer_step=True, sparse=True),
)}
"""Every algorithm, in the order every table and figure uses (DDP, the baseline, first)."""
ALGORITHMS = tuple(FACTS)
LOCAL_ALGORITHMS = tuple(name for name, facts in FACTS.items() if facts.local)
DEFAULT_ALGORITHMS = ("ddp", "local_sgd", "diloco", "palsgd")
"""What an experiment runs when it names no algorithms: the PALSGD paper's comparison (Streaming DiLoCo
is asked for by name, so the default outputs stay those of the paper's question)."""

SKIP_DRAWS = ("shared", "independent")
AVERAGERS = ("pytorch", "torchft")
"""Local SGD's schedule: PyTorch's ``PeriodicModelAverager`` (the first average right after step W) or
torchft's ``local_sgd.LocalSGD`` (H local steps before every average, the first after step W + H - 1)."""
SKIPPED_BATCHES = ("consumed", "kept")

# Step kinds in a plan. IDLE_STEP: a slower replica's slot under ``sync_every = "balanced"`` (``balance``):
# no batch, no compute, no optimizer step; the replica is waiting for the next barrier.
DDP_STEP, GRADIENT_STEP, PSEUDO_SYNC_STEP, IDLE_STEP = 0, 1, 2, 3

_PSEUDO_SYNC_STREAM = 0x5EED  # keeps the pseudo-sync draws apart from every other use of the seed

# Where the first sync falls, as an offset of the sync rule below: Local SGD follows PyTorch's
# PeriodicModelAverager (first average right after step W) unless its averager is torchft's (offset 1);
# DiLoCo and PALSGD take H local steps before each outer step, as in the DiLoCo paper. (PALSGD's
# released code also takes H steps between outer steps, but counts them from step 0, warm-up included,
# so its first round is not aligned to W.)
_SYNC_OFFSET = {"local_sgd": 0, "diloco": 1, "palsgd": 1, "streaming_diloco": 1, "sparseloco": 1}


def is_sync_step(algorithm: str, step: int | np.ndarray, warmup_steps: int, sync_every: int,
                 averager: str = "pytorch"):
    """True after the local steps that end with a sync (parameter averaging or outer step).

    Steps are counted from 0; W = ``warmup_steps`` DDP steps come first, H = ``sync_every``.

    - ``local_sgd``: PyTorch's ``PeriodicModelAverager``: after step t when t >= W and
      (t - W) % H == 0, so the first average follows the first local step, step W; with
      ``averager = "torchft"`` (torchft's ``LocalSGD``), as DiLoCo: H local steps before every average.
    - ``diloco``, ``palsgd``: H local steps between outer steps: after step t when t >= W and
      (t - W + 1) % H == 0, so the first outer step follows step W + H - 1. PALSGD's pseudo-sync steps
      count among the H, as in the released code (its step counter advances on them too).
    - ``sparseloco``: as DiLoCo (its outer step is SparseLoCo's, ``core/sparse.py``).
    - ``streaming_diloco``: as DiLoCo with ``sync_every`` = H/P, one fragment per sync (``plan``).
    - ``ddp``: never.
    """
    step = np.asarray(step)
    if not FACTS[algorithm].local:
        return np.zeros(step.shape, dtype=bool)
    offset = 1 if averager == "torchft" else _SYNC_OFFSET[algorithm]
    return (step >= warmup_steps) & ((step - warmup_steps + offset) % sync_every == 0)


def pseudo_sync_mask(seed: int, workers: int, steps: int, p: float, warmup_steps: int,
                     skip_draws: str, group_size: int = 1) -> np.ndarray:
    """Boolean [workers, steps]: True where a worker takes a pseudo-sync step instead of a gradient step.

    ``shared``: one stream for all workers (the released code seeds every rank alike), so every row
    is the same. ``independent``: one stream per replica: with replica groups of ``group_size`` workers
    (``core/groups.py``), group j draws from stream j + 1 and all its workers take its draws, so that a
    group stays in lockstep (its gradient steps are DDP steps over the group, and a pseudo-sync step of
    an identical replica needs no traffic); with groups of one worker that is stream k + 1 for worker k.
    Warm-up steps are never pseudo-sync steps.
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
        for group in range(workers // group_size):
            rng = np.random.default_rng([seed, _PSEUDO_SYNC_STREAM, group + 1])
            mask[group * group_size:(group + 1) * group_size] = rng.random(steps) < p
    mask[:, :warmup_steps] = False
    return mask


@dataclass(frozen=True)
class Plan:
    """What every worker does at every step of one run of one algorithm."""

    algorithm: str
    kinds: np.ndarray  # int8 [workers, steps]: DDP_STEP, GRADIENT_STEP, PSEUDO_SYNC_STEP or IDLE_STEP
    sync_after: np.ndarray  # bool [steps]: a sync follows this step (always False for ddp)
    fragment: np.ndarray  # int [steps]: the fragment a sync after this step applies; -1 without a sync
    sync_delay: int = 0  # tau: a sync's all-reduce starts after the step tau steps before it
    group_size: int = 1  # workers per replica group: a gradient step is a DDP step over the group

    @property
    def start_after(self) -> np.ndarray:
        """int [steps]: the fragment whose all-reduce starts after this step (-1: none). With tau = 0
        it is the step of the sync itself."""
        out = np.full(self.steps, -1, dtype=self.fragment.dtype)
        out[:self.steps - self.sync_delay] = self.fragment[self.sync_delay:]
        out[self.kinds[0] == DDP_STEP] = -1  # tau = H/P: the first round's start has nothing trained to send
        return out

    def sync_started(self, step: int) -> bool:
        """Whether the sync after ``step`` applies an all-reduce started earlier: with tau = H/P the first
        sync has none (its start would fall before the first local step), and applies a zero average."""
        start = step - self.sync_delay
        return start >= 0 and self.start_after[start] == self.fragment[step] >= 0

    @property
    def workers(self) -> int:
        return self.kinds.shape[0]

    @property
    def steps(self) -> int:
        return self.kinds.shape[1]

    def worker_kinds(self, worker: int) -> np.ndarray:
        return self.kinds[worker]

    @property
    def local_steps_per_sync(self) -> np.ndarray:
        """int [workers, syncs]: the local steps (gradient and pseudo-sync, not idle) each worker takes
        before each sync; with ``sync_every = "balanced"`` they differ between replicas."""
        syncs = np.flatnonzero(self.sync_after)
        taken = np.cumsum((self.kinds == GRADIENT_STEP) | (self.kinds == PSEUDO_SYNC_STEP), axis=1)
        at = taken[:, syncs] if len(syncs) else np.zeros((self.workers, 0), dtype=taken.dtype)
        return np.diff(at, axis=1, prepend=0)


def plan(algorithm: str, *, workers: int, steps: int, seed: int, warmup_steps: int = 0,
         sync_every: int = 1, p: float = 0.0, skip_draws: str = "shared", fragments: int = 1,
         sync_delay: int = 0, group_size: int = 1, averager: str = "pytorch",
         slow: np.ndarray | None = None) -> Plan:
    """The step plan of a run of ``steps`` steps. ``p`` is used by ``palsgd`` alone, ``fragments`` (P)
    and ``sync_delay`` (tau) by ``streaming_diloco`` alone.

    Streaming DiLoCo (torchft ``local_sgd.DiLoCo``): a fragment sync every H/P local steps, fragments in
    turn (0, 1, ..., P-1, 0, ...), so fragment i is synced every H steps, H/P steps after fragment i-1.
    Its all-reduce starts after the step tau steps before the sync (torchft's ``prepare_sync`` at inner
    step H/P - tau) and is applied after the sync step (``perform_sync``); tau <= H/P, so one fragment is
    in flight at a time (with tau = H/P the next one starts once the sync step has applied the last) and
    never before the warm-up ends.

    Replica groups (``group_size`` > 1, ``core/groups.py``) change no step's kind: a worker's gradient
    step is then a DDP step over its group (the warm-up's DDP steps still span every worker), its sync is
    made with the same rank of the other groups, and PALSGD's draws are one per group.

    ``slow`` (per-worker compute multipliers slow_k, ``sync_every = "balanced"``): each replica's local
    steps between two syncs are scaled by its speed (``balance``); None: every replica takes them all."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    kinds = np.full((workers, steps), GRADIENT_STEP, dtype=np.int8)
    index = np.arange(steps)
    streaming = FACTS[algorithm].fragments
    period = sync_every // fragments if streaming else sync_every
    sync_after = is_sync_step(algorithm, index, warmup_steps, period, averager)
    fragment = np.where(sync_after, np.cumsum(sync_after) - 1, -1)
    fragment[sync_after] %= fragments if streaming else 1
    delay = sync_delay if streaming else 0
    if not FACTS[algorithm].local:
        kinds[:, :] = DDP_STEP
        return Plan(algorithm, kinds, sync_after, fragment)
    kinds[:, index < warmup_steps] = DDP_STEP
    if FACTS[algorithm].pseudo_syncs:
        kinds[pseudo_sync_mask(seed, workers, steps, p, warmup_steps, skip_draws, group_size)] = PSEUDO_SYNC_STEP
    if slow is not None:
        balance(kinds, sync_after, warmup_steps, np.asarray(slow, dtype=float), group_size)
    return Plan(algorithm, kinds, sync_after, fragment, delay, group_size)


def plan_for(exp: Experiment, spec: AlgorithmSpec, seed: int) -> Plan:
    """The plan of one run of ``spec`` in ``exp``: the simulator draws it with seeds seed, seed+1, ...
    (one per repeat), the real workers with ``exp.seed``.

    Length: the budget's nominal steps N (``budget.steps``, or the steps of ``budget.epochs``), each
    step counted as one, except for PALSGD with ``skipped_batches = kept``: a pseudo-sync step then
    leaves its batch to the next gradient step, so the budget counts gradient steps and the run lasts
    until every worker has taken N - W gradient local steps after the W warm-up steps. The same rule
    holds for a steps and an epochs budget.
    """
    steps = exp.nominal_steps
    group = exp.group_size(spec)
    if spec.skipped_batches == "kept" and spec.effective_p > 0:
        steps = _steps_with_gradient_budget(spec, exp.workers, seed, steps - spec.warmup_steps, group)
    return plan(spec.name, workers=exp.workers, steps=steps, seed=seed, warmup_steps=spec.warmup_steps,
                sync_every=spec.sync_every, p=spec.effective_p, skip_draws=spec.skip_draws,
                fragments=spec.fragments, sync_delay=spec.fragment_sync_delay, group_size=group,
                averager=spec.averager,
                slow=slow_factors(exp.cluster.variability, exp.workers) if spec.sync_balanced else None)


def balanced_steps(slots: int, slow: np.ndarray) -> np.ndarray:
    """Local steps each replica takes in an interval of ``slots`` plan steps between two syncs under
    ``sync_every = "balanced"``: H_k = max(1, floor(H · speed_k / speed_fastest)), speed_k = 1 / slow_k.

    The fastest replicas keep the fixed H and the slower ones take fewer steps, so every replica's
    known compute, H_k · slow_k · c, is at most the fastest one's H · c: a fast replica no longer
    waits for a slow one's persistent slowness at the barrier (only for the random jitter, which no
    plan made before the run can know). Rounding down, not to the nearest, is what keeps that bound;
    a slow replica then waits less than one of its steps. torchft PR 233 (pytorch/torchft, "simplify
    streaming diloco") allows the same thing by giving each replica its own ``sync_every``, "slower /
    faster machines perform less / more local steps before they sync"; which side moves is our choice
    (``docs/algorithms.md``)."""
    fastest = float(np.min(slow))
    return np.maximum(1, np.floor(np.asarray(slots) * fastest / slow + 1e-9)).astype(np.int64)


def _replica_slow(slow: np.ndarray, group_size: int) -> np.ndarray:
    """slow_k of each worker's replica: a group runs at the pace of its slowest worker."""
    return np.repeat(slow.reshape(-1, group_size).max(axis=1), group_size)


def balanced_work_share(exp: Experiment, spec: AlgorithmSpec) -> float:
    """The share of the fixed H's local steps that the workers take under ``sync_every = "balanced"``,
    over one sync period (H, or H/P for Streaming DiLoCo): 1 on a uniform cluster."""
    if not (spec.is_local and spec.sync_balanced):
        return 1.0
    period = spec.sync_every // spec.fragments if FACTS[spec.name].fragments else spec.sync_every
    slow = _replica_slow(slow_factors(exp.cluster.variability, exp.workers), exp.group_size(spec))
    return float(balanced_steps(period, slow).mean() / period)


def balance(kinds: np.ndarray, sync_after: np.ndarray, warmup_steps: int, slow: np.ndarray,
            group_size: int = 1) -> None:
    """In place: in each interval of local steps (up to a sync, and the tail after the last one), a
    replica takes its first H_k steps (``balanced_steps``) and idles the rest (IDLE_STEP). A replica
    group runs at the pace of its slowest worker, so all its workers take the same H_k."""
    replica_slow = _replica_slow(slow, group_size)
    steps = kinds.shape[1]
    if steps <= warmup_steps:
        return
    # Vectorized over the intervals (a run of H = 1 has one per step): each local step's interval and
    # its position in it; a replica idles from position H_k of its interval on. One pass per distinct
    # speed (one or two), so that nothing larger than a row of the plan is made.
    ends = np.flatnonzero(sync_after[warmup_steps:]) + warmup_steps + 1
    if not len(ends) or ends[-1] < steps:  # the tail after the last sync is an interval too
        ends = np.append(ends, steps)
    starts = np.concatenate(([warmup_steps], ends[:-1]))
    local = np.arange(warmup_steps, steps)
    interval = np.searchsorted(ends, local, side="right")
    position = local - starts[interval]
    speeds = np.unique(replica_slow)
    keep = balanced_steps(ends - starts, speeds[:, None])  # [distinct speeds, intervals]
    for value, kept in zip(speeds, keep, strict=True):
        idle = np.flatnonzero(position >= kept[interval]) + warmup_steps
        if len(idle):
            kinds[np.ix_(np.flatnonzero(replica_slow == value), idle)] = IDLE_STEP


def _steps_with_gradient_budget(spec: AlgorithmSpec, workers: int, seed: int, gradient_steps: int,
                                group_size: int) -> int:
    """W + the local steps after which every worker has taken ``gradient_steps`` gradient steps.

    Draws ever longer masks from the plan's stream (a longer draw starts with the shorter one), sized
    at the expected length plus a margin so that one draw nearly always suffices.
    """
    length = gradient_steps
    while True:
        length = math.ceil(length / (1 - spec.p) * 1.1) + 64
        mask = pseudo_sync_mask(seed, workers, spec.warmup_steps + length, spec.p, spec.warmup_steps,
                                spec.skip_draws, group_size)
        done = np.cumsum(~mask[:, spec.warmup_steps:], axis=1)  # gradient steps taken, per worker
        if (done[:, -1] >= gradient_steps).all():
            return spec.warmup_steps + int((done >= gradient_steps).argmax(axis=1).max()) + 1
