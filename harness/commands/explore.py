"""`palsgd explore`: a grid of simulations around the user's experiment, for the interactive what-if page.

Six fields vary together (inter-node bandwidth and latency, nodes, H, p, jitter), each over a few values
around the user's own, and a seventh when the experiment trains in replica groups: every worker a replica
or the user's groups (``core/groups.py``); every combination is simulated by the sweep machinery (``sweep.run_points``).
Each point simulates a window of ``W + 2·H_max`` steps instead of the whole budget: the page shows
speedups and time per step, which a window with two sync intervals of the slowest-syncing point already
gives, and the grid of ~800 points then takes seconds, not hours. ``reports.explore`` draws the page.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ...core.algorithms import FACTS
from ...core.config import BALANCED, BudgetSpec, Experiment
from ..machinery import sweep

BANDWIDTH_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
LATENCY_FACTORS = (0.1, 1.0, 10.0)
NODES_FACTORS = (0.5, 1.0, 2.0)
SYNC_EVERY_FACTORS = (0.5, 1.0, 2.0)
P_FACTORS = (0.5, 1.0, 1.5)
DENSITY_FACTORS = (0.5, 1.0, 2.0)
"""SparseLoCo's top-k density around the user's (at most 1): its message, and so its all-gather, scales with it."""
JITTER_CV_EXTRA = 0.1
"""Jitter values: the user's and the user's + this (a coefficient of variation of step times)."""


@dataclass(frozen=True)
class ExploreGrid:
    table: pd.DataFrame
    """One row per (point, algorithm): the varied keys, then the run table's columns."""
    axes: list[tuple[str, list]]
    """The varied keys with their values, in slider order."""
    base: dict
    """The user's own value of each varied key (the page opens there)."""
    window_steps: int


def axes(exp: Experiment) -> list[tuple[str, list]]:
    """The varied fields and their values around ``exp``'s own. H, p and the top-k density only when an
    algorithm uses them."""
    link = exp.cluster.inter_node
    out = [("cluster.inter_node.bandwidth_gbps", _scaled(link.bandwidth_gbps, BANDWIDTH_FACTORS)),
           ("cluster.inter_node.latency_us", _scaled(link.latency_us or 10.0, LATENCY_FACTORS)),
           ("cluster.nodes", _ints(exp.cluster.nodes, NODES_FACTORS))]
    local = [a for a in exp.algorithms if a.is_local]
    if local:
        hs: list = _ints(local[0].sync_every, SYNC_EVERY_FACTORS)
        # Workers of mixed speeds: also the user's H balanced per replica (docs/algorithms.md), last.
        out.append(("algorithm.sync_every", hs + [BALANCED] * (exp.cluster.variability.slow_workers > 0)))
    if any(a.name == "palsgd" for a in exp.algorithms):
        p = exp.algorithm("palsgd").p
        out.append(("algorithm.p", sorted({round(min(0.9, p * f), 4) for f in P_FACTORS})))
    sparse = [a for a in exp.algorithms if FACTS[a.name].sparse]
    if sparse:
        density = sparse[0].topk_density
        out.append(("algorithm.topk_density", sorted({round(min(1.0, density * f), 4) for f in DENSITY_FACTORS})))
    if local and exp.group_size(local[0]) > 1:
        # Groups within a node stay valid whatever the nodes axis says; larger ones become a node each.
        own = local[0].replica_group if exp.group_size(local[0]) <= exp.cluster.gpus_per_node else "node"
        out.append(("algorithm.replica_group", ["worker", own]))
    cv = exp.cluster.variability.jitter_cv
    out.append(("cluster.variability.jitter_cv", [cv, round(cv + JITTER_CV_EXTRA, 4)]))
    return out


def _scaled(value: float, factors: tuple[float, ...]) -> list[float]:
    return sorted({float(f"{value * f:.4g}") for f in factors})


def _ints(value: int, factors: tuple[float, ...]) -> list[int]:
    return sorted({max(1, round(value * f)) for f in factors})


def window_steps(exp: Experiment, grid_axes: list[tuple[str, list]]) -> int:
    """Warm-up plus two sync intervals of the largest H, at most the user's own budget."""
    local = [a for a in exp.algorithms if a.is_local]
    if not local:
        return min(exp.nominal_steps, 200)
    h_max = max(h for h in dict(grid_axes).get("algorithm.sync_every", [local[0].sync_every]) if h != BALANCED)
    return min(exp.nominal_steps, max(a.warmup_steps for a in local) + 2 * h_max)


def explore(exp: Experiment, *, jobs: int | None = None, progress=None) -> ExploreGrid:
    """Simulate the grid around ``exp`` (one seed per point) and return it with its axes."""
    grid_axes = axes(exp)
    window = window_steps(exp, grid_axes)
    base = exp.replace(budget=BudgetSpec(steps=window), repeats=1)
    grid = sweep.points(base, grid_axes, most=len(grid_axes))
    table = sweep.run_points(grid, jobs, progress=progress).drop(columns="_point")
    return ExploreGrid(table, grid_axes, _own_values(exp, grid_axes), window)


def grid_size(exp: Experiment) -> int:
    """How many points ``explore`` simulates (for a progress bar)."""
    n = 1
    for _, values in axes(exp):
        n *= len(values)
    return n


def _own_values(exp: Experiment, grid_axes: list[tuple[str, list]]) -> dict:
    local = [a for a in exp.algorithms if a.is_local]
    own = {"cluster.inter_node.bandwidth_gbps": exp.cluster.inter_node.bandwidth_gbps,
           "cluster.inter_node.latency_us": exp.cluster.inter_node.latency_us,
           "cluster.nodes": exp.cluster.nodes,
           "algorithm.sync_every": local[0].sync_every if local else None,
           "algorithm.p": exp.algorithm("palsgd").p if any(a.name == "palsgd" for a in exp.algorithms) else None,
           "cluster.variability.jitter_cv": exp.cluster.variability.jitter_cv,
           "algorithm.replica_group": exp.group_size(local[0]) if local else None}
    return {key: own[key] for key, _ in grid_axes}
