"""How a simulate answer moves around the user's point: speedup vs inter-node bandwidth, H and nodes.

One field varies at a time, over a few values around the user's own (bandwidth 0.1x-10x, H and nodes
1/4x-4x), the others stay the user's. Each point is the user's whole run with that one change (its
steps, warm-up and seeds): its wall-clock and speedup are what ``palsgd simulate`` prints for that point
(a test compares them), not those of a shorter window, whose warm-up would weigh more than in the run.
A point the experiment's rules refuse (H that P fragments do not divide, a job too large to simulate, or
more work in all than ``AROUND_MAX_WORK_S``) is left out and named in the notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ...core import convergence
from ...core.config import Experiment, with_changes
from ...core.errors import ConfigError
from ...core.typed import set_path
from ...sim import bounds, engine
from ..machinery.sweep import crossovers

BANDWIDTH_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
AROUND_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""H and nodes: the user's value divided and multiplied by 2 and 4."""
SENSITIVITY_COLUMNS = ("key", "value", "user_point", "algorithm", "speedup_vs_ddp", "speedup_to_target_vs_ddp")
MEASURES = {"same steps": "speedup_vs_ddp", "to target": "speedup_to_target_vs_ddp"}
"""The two speedups, by the name crossover tables give them (column ``speedup``)."""


@dataclass(frozen=True)
class Sensitivity:
    table: pd.DataFrame
    """One row per (varied key, value, algorithm): ``SENSITIVITY_COLUMNS``."""
    crossovers: pd.DataFrame
    """Where a speedup crosses 1 along a key: sweep's crossover columns plus ``speedup`` (``MEASURES``)."""
    steps: int
    """Steps of each point: the user's run."""
    notes: list[str] = field(default_factory=list)


def axes(exp: Experiment) -> list[tuple[str, list]]:
    """The varied keys with their values around ``exp``'s own; H only when a local algorithm runs."""
    out = [("cluster.inter_node.bandwidth_gbps",
            sorted({float(f"{exp.cluster.inter_node.bandwidth_gbps * f:.4g}") for f in BANDWIDTH_FACTORS})),
           ("cluster.nodes", _ints(exp.cluster.nodes))]
    local = [a for a in exp.algorithms if a.is_local]
    if local:
        out.append(("algorithm.sync_every", _ints(local[0].sync_every)))
    return out


def _ints(value: int) -> list[int]:
    return sorted({max(1, round(value * f)) for f in AROUND_FACTORS})


def user_values(exp: Experiment) -> dict[str, float]:
    local = [a for a in exp.algorithms if a.is_local]
    own = {"cluster.inter_node.bandwidth_gbps": exp.cluster.inter_node.bandwidth_gbps,
           "cluster.nodes": exp.cluster.nodes}
    if local:
        own["algorithm.sync_every"] = local[0].sync_every
    return own


AROUND_MAX_WORK_S = 60.0
"""Estimated one-core work of all the points together (``sim.bounds``): a simulate answer of a huge cluster
stays an answer, with its sensitivity cut short and saying so, instead of taking hours or all memory."""


def sensitivity(exp: Experiment) -> Sensitivity:
    """Simulate every point of ``axes(exp)`` (the whole run) and find the crossovers. Each point is
    checked to fit (memory, work) before it runs."""
    conv = convergence.of_experiment(exp)
    own = user_values(exp)
    parts, notes, work_s = [], [], 0.0
    for key, values in axes(exp):
        for value in values:
            change: dict = {}
            set_path(change, key.split("."), value)
            try:
                point = with_changes(exp, [("sensitivity", change)])
                work_s += bounds.check(point, record_steps=False, keep_totals=False).work_s
                if work_s > AROUND_MAX_WORK_S:
                    raise ConfigError(f"the points around this one would take over {AROUND_MAX_WORK_S:g} s of work; "
                                      "sweep the field instead (`palsgd sweep --vary`)")
                runs = engine.simulate(point, record_steps=False, keep_totals=False).runs
            except ConfigError as err:
                notes.append(f"{key} = {value:g} left out: {err}")
                continue
            runs = runs.assign(key=key, value=float(value), user_point=math.isclose(value, own[key]),
                               speedup_to_target_vs_ddp=convergence.speedup_to_target(runs, point, conv))
            parts.append(runs[list(SENSITIVITY_COLUMNS)])
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SENSITIVITY_COLUMNS))
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
