"""How a simulate answer moves around the user's point: speedup vs inter-node bandwidth, H and nodes.

One field of ``explore.AXES`` varies at a time, over its sensitivity values around the user's own
(bandwidth 0.1x-10x, H and nodes 1/4x-4x), the others stay the user's. Each point is simulated as an
explore point is (``sweep.run_points`` with ``steady``): the user's whole run with that one change (its
steps, warm-up and seeds), whose wall-clock and speedup are what ``palsgd simulate`` prints for that
point (a test compares them). A point the experiment's rules refuse (H that P fragments do not divide,
a job too large to simulate, or more work in all than ``AROUND_MAX_WORK_S``) is left out and named in
the notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ...core import convergence
from ...core.config import Experiment, with_changes
from ...core.errors import ConfigError
from ...core.typed import set_path
from ...sim import bounds
from ..machinery.sweep import crossovers, run_points
from . import explore

SENSITIVITY_COLUMNS = ("key", "value", "user_point", "algorithm", "speedup_vs_ddp", "speedup_to_target_vs_ddp")
MEASURES = {"same steps": "speedup_vs_ddp", "to target": "speedup_to_target_vs_ddp"}
"""The two speedups, by the name crossover tables give them (column ``speedup``)."""
AROUND_MAX_WORK_S = 60.0
"""Estimated one-core work of all the points together (``sim.bounds``, whole runs by the engine
``simulate`` would take): a simulate answer of a huge cluster stays an answer, with its sensitivity cut
short and saying so, instead of taking hours or all memory."""


@dataclass(frozen=True)
class Sensitivity:
    table: pd.DataFrame
    """One row per (varied key, value, algorithm): ``SENSITIVITY_COLUMNS``."""
    crossovers: pd.DataFrame
    """Where a speedup crosses 1 along a key: sweep's crossover columns plus ``speedup`` (``MEASURES``)."""
    steps: int
    """Steps of each point: the user's run."""
    notes: list[str] = field(default_factory=list)


def sensitivity(exp: Experiment) -> Sensitivity:
    """Simulate every point of ``explore.axes(exp, sliced=True)`` (the whole run) and find the
    crossovers. Each point is checked to fit (memory, work) before any runs."""
    grid_axes = explore.axes(exp, sliced=True)
    own = explore.own_values(exp, grid_axes)
    points, notes, work_s = [], [], 0.0
    for key, values in grid_axes:
        for value in values:
            change: dict = {}
            set_path(change, key.split("."), value)
            try:
                point = with_changes(exp, [("sensitivity", change)])
                work_s += bounds.check(point, record_steps=False, keep_totals=False).work_s
                if work_s > AROUND_MAX_WORK_S:
                    raise ConfigError(f"the points around this one would take over {AROUND_MAX_WORK_S:g} s of work; "
                                      "sweep the field instead (`palsgd sweep --vary`)")
            except ConfigError as err:
                notes.append(f"{key} = {value:g} left out: {err}")
                continue
            points.append(({"key": key, "value": float(value), "user_point": math.isclose(value, own[key])}, point))
    table = pd.DataFrame(columns=list(SENSITIVITY_COLUMNS))
    if points:
        runs = run_points(points, 1, steady=True)
        conv = convergence.of_experiment(exp)
        runs["speedup_to_target_vs_ddp"] = pd.concat(
            [convergence.speedup_to_target(rows, points[i][1], conv) for i, rows in runs.groupby("_point")])
        table = runs[list(SENSITIVITY_COLUMNS)]
    return Sensitivity(table, _crossovers(table), exp.nominal_steps, notes)


def _crossovers(table: pd.DataFrame) -> pd.DataFrame:
    found = []
    for key, along in table.groupby("key", sort=False):
        curve = along.rename(columns={"value": key})
        found.append(crossovers_both(curve, [key]))
    return pd.concat(found, ignore_index=True) if found else crossovers_both(table.iloc[:0], [])


def crossovers_both(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sweep crossovers of the same-steps speedup and, where the table has one, of the speedup to the
    target, in one table with a ``speedup`` column naming which."""
    found = []
    for measure, column in MEASURES.items():
        if column in table and table[column].notna().any():
            curve = table.assign(speedup_vs_ddp=table[column]).dropna(subset=["speedup_vs_ddp"])
            found.append(crossovers(curve, keys).assign(speedup=measure))
    if not found:
        return crossovers(table, keys).assign(speedup=pd.Series(dtype=str))
    return pd.concat(found, ignore_index=True)


def json_of(result: Sensitivity, algorithm: str) -> dict:
    """One algorithm's sensitivity for ``simulate --json``: its curves and crossovers."""
    rows = result.table[result.table["algorithm"] == algorithm]
    cross = result.crossovers[result.crossovers["algorithm"] == algorithm]
    curves = rows.drop(columns="algorithm")
    curves = curves.astype(object).where(curves.notna(), None)
    return {"steps": result.steps, "points": curves.to_dict(orient="records"),
            "crossovers": cross[["key", "value", "direction", "speedup"]].to_dict(orient="records")}
