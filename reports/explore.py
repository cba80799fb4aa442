"""The interactive what-if page: sliders over a grid of simulator results, one offline HTML file.

The grid (one row per point, algorithm and run, the varied keys as dotted columns, as in sweep.csv) is
embedded as JSON; a small hand-written script looks up the point the sliders name and redraws the
speedups, the time breakdown and a speedup chart. Nothing is computed in the page but the mean over
seeds' already-summarized rows: every number shown is one the simulator wrote. No server, no CDN.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from .. import __version__
from ..core import io
from ..core.errors import ConfigError
from .style import CATEGORIES, color, label, ordered

AXIS_LABELS = {
    "cluster.inter_node.bandwidth_gbps": ("inter-node bandwidth", "Gb/s"),
    "cluster.inter_node.latency_us": ("inter-node latency", "µs"),
    "cluster.nodes": ("nodes", ""),
    "algorithm.sync_every": ("H (sync every)", "steps"),
    "algorithm.p": ("p (PALSGD pseudo-sync)", ""),
    "algorithm.streaming_diloco.fragment_sync_delay": ("sync delay τ (Streaming DiLoCo)", "steps"),
    "cluster.variability.jitter_cv": ("jitter (CV of step time)", ""),
    "algorithm.replica_group": ("workers per replica (replica_group)", "workers"),
}


def payload(table: pd.DataFrame, keys: list[str], base: dict | None = None) -> dict:
    """The page's data: the axes and, for every grid point in row-major order (last key fastest), per
    algorithm [speedup_vs_ddp, wall_clock_s, steps, *time per category] (means over runs), or null; and
    where the table has an ``engine`` column (``palsgd explore``), what simulated each (point, algorithm)."""
    if len(keys) < 2:
        raise ConfigError("needs two or more varied fields", key="vary", value=keys, source="explore")
    algorithms = ordered(table["algorithm"].unique())
    columns = ["speedup_vs_ddp", "wall_clock_s", "steps", *(col for _, col, _, _ in CATEGORIES)]
    mean = table.groupby([*keys, "algorithm"])[columns].mean()
    axes = []
    for key in keys:
        values = sorted(table[key].dropna().unique(), key=_numbers_first)
        start = _nearest(values, (base or {}).get(key))
        name, unit = AXIS_LABELS.get(key, (key, ""))
        axes.append({"key": key, "label": name, "unit": unit, "values": [_plain(v) for v in values], "start": start})
    engine = table.groupby([*keys, "algorithm"])["engine"].first() if "engine" in table else pd.Series()
    cells, engines = [], []
    for combo in itertools.product(*(a["values"] for a in axes)):
        cell = [_row(mean, (*combo, algo)) for algo in algorithms]
        cells.append(cell if any(c is not None for c in cell) else None)
        engines.append([engine.get((*combo, algo)) for algo in algorithms])
    return {"axes": axes, "cells": cells, "engines": engines if len(engine) else None,
            "algorithms": [{"name": a, "label": label(a), "color": color(a)} for a in algorithms],
            "categories": [{"label": name, "color": colour} for name, _, _, colour in CATEGORIES]}


def _numbers_first(value) -> tuple:
    """An axis's order: its numbers ascending, then its words (sync_every's "balanced") in alphabetical order."""
    return (1, 0.0, value) if isinstance(value, str) else (0, float(value), "")


def _row(mean: pd.DataFrame, index: tuple) -> list[float] | None:
    try:
        row = mean.loc[index]
    except KeyError:
        return None
    return [None if pd.isna(v) else float(v) for v in row.to_numpy()]


def _nearest(values: list, own) -> int:
    """The slider's start: the user's own value, or the grid's middle when there is none."""
    numbers = [i for i, v in enumerate(values) if isinstance(v, int | float)]
    if own is None or isinstance(own, str) or len(numbers) < len(values) - 1 or not numbers:
        return len(values) // 2  # an axis of words (replica_group) starts in its middle
    return min(numbers, key=lambda i: abs(values[i] - own))


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def render_explore(table: pd.DataFrame, keys: list[str], output: Path, *, title: str, notes: list[str] = (),
                   base: dict | None = None) -> Path:
    """Write the what-if page of ``table`` over ``keys`` to ``output`` (atomically)."""
    data = json.dumps(payload(table, keys, base), separators=(",", ":"), allow_nan=False)
    html = _template().render(
        title=title, notes=list(notes), data=Markup(data.replace("</", "<\\/")),
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), version=__version__)
    return io.write_text(Path(output), html)


def sweep_keys_varied(sweep: pd.DataFrame) -> list[str]:
    """The dotted columns of sweep.csv that take two or more values."""
    return [c for c in sweep.columns if "." in c and sweep[c].nunique() > 1]


def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("explore.html.j2")
