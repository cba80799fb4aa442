"""`palsgd explore`: a grid of simulations around the user's experiment, for the interactive what-if page,
and the fields both it and ``simulate --sensitivity`` vary (``AXES``).

Each field of ``AXES`` that the experiment uses varies over a few values around the user's own:
inter-node bandwidth and latency, nodes, H, p, Streaming DiLoCo's sync delay, the top-k density,
replica groups and jitter. Explore
simulates every combination (``sweep.run_points``); the sensitivity (``sensitivity.py``) varies one
field at a time over more values. Either way each point is the user's whole run with those changes
(its steps, warm-up and seed) and its wall-clock and speedup are what ``palsgd simulate`` prints for
that point, at the cost of a few hundred steps (``sim/steady.py`` says how; a test compares them).
``reports.explore`` draws the page. A new field is one more ``Axis`` in ``AXES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ...core.algorithms import FACTS
from ...core.config import BALANCED, Experiment
from ..machinery import sweep

BANDWIDTH_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
LATENCY_FACTORS = (0.1, 1.0, 10.0)
AROUND_FACTORS = (0.5, 1.0, 2.0)
"""Nodes, H and the top-k density on the page (a product of every field, so few values each)."""
SLICE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Nodes and H in the sensitivity (one field at a time, so more values)."""
P_FACTORS = (0.5, 1.0, 1.5)
JITTER_CV_EXTRA = 0.1
"""Jitter values: the user's and the user's + this (a coefficient of variation of step times)."""


@dataclass(frozen=True)
class Axis:
    key: str
    own: Callable[[Experiment], object]
    """The user's value, or None when no algorithm of the experiment uses the field (not varied)."""
    values: Callable[[Experiment, object, tuple[float, ...]], list]
    """(experiment, the user's value, factors) -> the values around it."""
    factors: tuple[float, ...] = ()
    slice_factors: tuple[float, ...] = ()
    """The sensitivity's factors; () leaves the field out of it."""


def _own(fact: str, field: str):
    """The value of ``field`` of the first algorithm with the registry's ``fact`` (None without one)."""
    def own(exp: Experiment):
        spec = next((a for a in exp.algorithms if getattr(FACTS[a.name], fact)), None)
        return None if spec is None else getattr(spec, field)
    return own


def _scaled(value: float, factors: tuple[float, ...]) -> list[float]:
    return sorted({float(f"{value * f:.4g}") for f in factors})


def _ints(value: int, factors: tuple[float, ...]) -> list[int]:
    return sorted({max(1, round(value * f)) for f in factors})


def _capped(value: float, factors: tuple[float, ...], most: float) -> list[float]:
    return sorted({round(min(most, value * f), 4) for f in factors})


def _sync_every(exp: Experiment, h: int, factors: tuple[float, ...]) -> list:
    """H around the user's, those Streaming DiLoCo accepts (P divides H, tau <= H/P); with workers of
    mixed speeds also the user's H balanced per replica (``sync_every = "balanced"``, docs/algorithms.md),
    last."""
    fragmented = [a for a in exp.algorithms if FACTS[a.name].fragments]
    hs = [v for v in _ints(h, factors)
          if all(v % a.fragments == 0 and a.fragment_sync_delay <= v // a.fragments for a in fragmented)]
    return hs + [BALANCED] * (exp.cluster.variability.slow_workers > 0)


def _sync_delays(exp: Experiment, tau: int, factors: tuple[float, ...]) -> list[int]:
    """Streaming DiLoCo's tau: none, the user's, and a whole round (H/P) at the smallest H that ``factors``
    give the H axis, so that every value is valid at every H (``_sync_every``)."""
    spec = next(a for a in exp.algorithms if FACTS[a.name].fragments)
    hs = [v for v in _sync_every(exp, spec.sync_every, factors) if not isinstance(v, str)]
    return sorted({0, tau, min(hs) // spec.fragments})


def _group_size(exp: Experiment) -> int | None:
    """Workers per replica, when the experiment trains in replica groups."""
    spec = next((a for a in exp.algorithms if a.is_local), None)
    return exp.group_size(spec) if spec is not None and exp.group_size(spec) > 1 else None


def _groups(exp: Experiment, size: int) -> list:
    """Every worker a replica, or the user's groups: groups within a node stay valid whatever the nodes
    axis says, larger ones become a node each."""
    return ["worker", _own("local", "replica_group")(exp) if size <= exp.cluster.gpus_per_node else "node"]


AXES = (
    Axis("cluster.inter_node.bandwidth_gbps", lambda e: e.cluster.inter_node.bandwidth_gbps,
         lambda e, v, f: _scaled(v, f), BANDWIDTH_FACTORS, BANDWIDTH_FACTORS),
    Axis("cluster.inter_node.latency_us", lambda e: e.cluster.inter_node.latency_us,
         lambda e, v, f: _scaled(v or 10.0, f), LATENCY_FACTORS),
    Axis("cluster.nodes", lambda e: e.cluster.nodes, lambda e, v, f: _ints(v, f), AROUND_FACTORS, SLICE_FACTORS),
    Axis("algorithm.sync_every", _own("local", "sync_every"), lambda e, v, f: _sync_every(e, v, f),
         AROUND_FACTORS, SLICE_FACTORS),
    Axis("algorithm.p", _own("pseudo_syncs", "p"), lambda e, v, f: _capped(v, f, 0.9), P_FACTORS),
    # Explore: the H axis's factors, the delays valid at each of its values; the sensitivity varies one
    # field at a time, so at the user's H. Eager outer steps are no axis: they change the update, not the
    # time (docs/algorithms.md).
    Axis("algorithm.streaming_diloco.fragment_sync_delay", _own("fragments", "fragment_sync_delay"),
         lambda e, v, f: _sync_delays(e, v, f), AROUND_FACTORS, (1.0,)),
    Axis("algorithm.topk_density", _own("sparse", "topk_density"), lambda e, v, f: _capped(v, f, 1.0),
         AROUND_FACTORS),
    Axis("algorithm.replica_group", _group_size, lambda e, v, f: _groups(e, v)),
    Axis("cluster.variability.jitter_cv", lambda e: e.cluster.variability.jitter_cv,
         lambda e, v, f: [v, round(v + JITTER_CV_EXTRA, 4)]),
)
"""The fields explore and the sensitivity vary, in slider order: a new field is one more ``Axis``."""


@dataclass(frozen=True)
class ExploreGrid:
    table: pd.DataFrame
    """One row per (point, algorithm): the varied keys, then the run table's columns and ``engine``."""
    axes: list[tuple[str, list]]
    """The varied keys with their values, in slider order."""
    base: dict
    """The user's own value of each varied key (the page opens there)."""


def axes(exp: Experiment, *, sliced: bool = False) -> list[tuple[str, list]]:
    """The varied fields and their values around ``exp``'s own: explore's grid, or with ``sliced`` the
    sensitivity's (numbers only). A field only when an algorithm uses it."""
    out = [(a.key, a.values(exp, own, a.slice_factors if sliced else a.factors)) for a in AXES
           if (own := a.own(exp)) is not None and (a.slice_factors or not sliced)]
    # the sensitivity's curves are along numbers (its value column): a word ("balanced") is explore's alone
    return [(key, [v for v in values if not isinstance(v, str)]) for key, values in out] if sliced else out


def own_values(exp: Experiment, grid_axes: list[tuple[str, list]]) -> dict:
    """The user's own value of each varied key."""
    own = {a.key: a.own(exp) for a in AXES}
    return {key: own[key] for key, _ in grid_axes}


def explore(exp: Experiment, *, jobs: int | None = None, progress=None,
            grid_axes: list[tuple[str, list]] | None = None) -> ExploreGrid:
    """Simulate the grid around ``exp`` (``axes``, or ``grid_axes``) with one seed, each point for the
    whole run, and return it with its axes."""
    grid_axes = grid_axes or axes(exp)
    grid = sweep.points(exp.replace(repeats=1), grid_axes, most=len(grid_axes))
    table = sweep.run_points(grid, jobs, progress=progress, steady=True).drop(columns="_point")
    return ExploreGrid(table, grid_axes, own_values(exp, grid_axes))


def grid_size(exp: Experiment) -> int:
    """How many points ``explore`` simulates (for a progress bar)."""
    n = 1
    for _, values in axes(exp):
        n *= len(values)
    return n


def engine_note(table: pd.DataFrame) -> str:
    """How the page's points were simulated, counted over (point, algorithm)."""
    counts = table["engine"].value_counts()
    return ("Each point is the whole run with one seed, as `palsgd simulate --repeats 1` answers it: "
            + "; ".join(f"{n} runs by the {how}" for how, n in counts.items())
            + ". The fast engine is equal in distribution to the exact engine (equal without variability); "
              "an extrapolated run adds whole sync periods measured after the warm-up (sim/steady.py).")
