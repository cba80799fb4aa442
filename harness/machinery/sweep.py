"""Sweeps: simulate an experiment over a grid of one or two varied fields, in parallel, and find
where each algorithm's speedup over DDP crosses 1.

A varied field is any experiment key in dotted form (``cluster.inter_node.bandwidth_gbps``,
``cluster.nodes``, ``algorithm.sync_every``, ``algorithm.palsgd.p``, ``algorithm.replica_group``). Each
point is built with ``core.config.from_dict`` from the base experiment's dict with the override merged, so every point
is validated like a user's file.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import tomllib
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...core import io, schema
from ...core.config import Experiment, with_changes
from ...core.errors import ConfigError
from ...core.groups import group_size
from ...core.results import read_table_file
from ...core.typed import set_path
from ...sim import bounds, fast
from ...sim import steady as sim_steady
from ...sim.engine import simulate_tables
from ...sim.fast_runs import run_columns, run_table
from .ray_executor import RayExecutor

MAX_POINTS = 100_000
"""The largest grid: the sweep table keeps a row per point, algorithm and repeat (docs/limits.md)."""

CROSSOVER_COLUMNS = ("algorithm", "key", "value", "direction", "fixed_key", "fixed_value")


@dataclass(frozen=True)
class SweepResult:
    table: pd.DataFrame
    """One row per (point, algorithm, run): the varied keys (named by their dotted key), then the run
    table's columns."""
    crossovers: pd.DataFrame
    """Where speedup_vs_ddp crosses 1 along a varied key (``CROSSOVER_COLUMNS``)."""


def parse_vary(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` or an integer range: ``KEY=A..B`` (every integer), ``KEY=A..B:S`` (step S),
    ``KEY=A..B:xF`` (geometric: A, A·F, A·F², ... up to B). Values are read as TOML (numbers,
    booleans, quoted strings); a bare word is a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw or any(not p for p in key.split(".")):
        raise ConfigError("expected KEY=V1,V2,... or KEY=A..B[:STEP|:xFACTOR]", key=key or text,
                          source="--vary")
    if ".." in raw:
        return key, _range(key, raw)
    return key, [_value(key, item) for item in raw.split(",")]


def _range(key: str, raw: str) -> list[int]:
    span, _, step = raw.partition(":")
    lo, _, hi = span.partition("..")
    rule = "a range is A..B, A..B:STEP or A..B:xFACTOR with integers A <= B, STEP >= 1, FACTOR >= 2"
    try:
        a, b = int(lo), int(hi)
        geometric = step.strip().lower().startswith("x")
        s = int(step.strip()[1:] if geometric else step) if step.strip() else 1
    except ValueError:
        raise ConfigError(rule, key=key, value=raw, source="--vary") from None
    if a > b or s < (2 if geometric else 1) or (geometric and a < 1):
        raise ConfigError(rule, key=key, value=raw, source="--vary")
    if not geometric:
        _check_points(key, raw, (b - a) // s + 1)  # counted before a list is built
        return list(range(a, b + 1, s))
    out = [a]
    while out[-1] * s <= b:
        out.append(out[-1] * s)
    return out


def _value(key: str, item: str):
    item = item.strip()
    if not item:
        raise ConfigError("empty value in the list", key=key, value=item, source="--vary")
    try:
        value = tomllib.loads(f"v = {item}")["v"]
    except tomllib.TOMLDecodeError:
        return item
    except RecursionError:
        value = []
    if isinstance(value, dict | list):
        raise ConfigError("a --vary value is a number, true or false, or a string", key=key, value=item,
                          source="--vary")
    return value


def points(base: Experiment, vary: list[tuple[str, list]], most: int = 2) -> Grid:
    """Every grid point as ({key: value}, validated Experiment), built when read (``Grid``). A sweep
    varies one or two fields (``most``); the explore page's grid varies more."""
    if not 1 <= len(vary) <= most:
        raise ConfigError("vary one or two fields" if most == 2 else f"vary 1 to {most} fields", key="vary",
                          value=[k for k, _ in vary], source="--vary")
    for key, values in vary:
        if not values:
            raise ConfigError("give at least one value", key=key, value=values, source="--vary")
    grid = Grid(base, vary)
    _check_points(" x ".join(k for k, _ in vary), [len(v) for _, v in vary], len(grid))
    _check_corners(base, vary, len(grid))
    return grid


def _check_corners(base: Experiment, vary: list[tuple[str, list]], n_points: int) -> None:
    """The whole grid before any work: every combination of the ends of each numeric axis and every value
    of the others is built, validated and checked to fit (``bounds``), so a point refused late cannot
    leave a sweep half done. Memory and work grow with workers, steps, H and repeats, so a point between
    the ends fits when both ends do; the sweep table keeps a row per point, algorithm and repeat."""
    ends = []
    for _, values in vary:
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ends.append(sorted({min(values), max(values)}) if numeric else list(dict.fromkeys(values)))
    rows = 0
    for combo in itertools.product(*ends):
        override: dict = {}
        for (key, _), value in zip(vary, combo, strict=True):
            set_path(override, key.split("."), value)
        exp = with_changes(base, [("--vary", override)])
        bounds.check(exp, record_steps=False, keep_totals=False)
        rows = max(rows, n_points * len(exp.algorithms) * exp.repeats)
    bounds.check_table_rows(rows, key=" x ".join(k for k, _ in vary))


class Grid(Sequence):
    """The points of a grid in ``itertools.product`` order, each built, validated and checked to fit
    (``bounds``) when it is read: a large sweep starts simulating at once, not after building them all."""

    def __init__(self, base: Experiment, vary: list[tuple[str, list]]):
        self.base, self.vary = base, vary
        self._sizes = [len(values) for _, values in vary]

    def __len__(self) -> int:
        return math.prod(self._sizes)

    def __getitem__(self, i: int) -> tuple[dict, Experiment]:
        i = range(len(self))[i]  # IndexError past the end, as iteration expects
        combo = [values[j] for (_, values), j in zip(self.vary, np.unravel_index(i, self._sizes), strict=True)]
        override: dict = {}
        for (key, _), value in zip(self.vary, combo, strict=True):
            set_path(override, key.split("."), value)
        exp = with_changes(self.base, [("--vary", override)])
        bounds.check(exp, record_steps=False, keep_totals=False)
        return {key: _recorded(key, value, exp) for (key, _), value in zip(self.vary, combo, strict=True)}, exp


def _recorded(key: str, value, exp: Experiment):
    """The value a table records for a varied key: a replica group as its workers per replica
    (``worker`` 1, ``node`` the GPUs per node), so that the axis is numeric and can be crossed."""
    return group_size(value, exp.cluster) if key.split(".")[-1] == "replica_group" else value


def _check_points(key: str, value, count: int) -> None:
    if count > MAX_POINTS:
        raise ConfigError(
            f"{count:,} sweep points, over the limit of {MAX_POINTS:,} (docs/limits.md); split the range "
            "over several calls, or run the points on a distributed executor", key=key, value=value,
            source="--vary")


def _simulate_chunk(items: Sequence[tuple[dict, Experiment]], steady: bool = False) -> pd.DataFrame:
    """Simulate some points and build their run table at once (pandas costs more than a small
    simulation): point i's runs are numbered i·R + r there, then numbered back. A point the fast path
    simulates as the exact engine would (``fast.equals_exact``: nothing random, or every step drawn from
    the exact engine's own factors) or that only it can (``bounds.engine_for``: many repeats, large runs)
    gives its run columns directly; the others are summarized in one ``schema.summarize`` call. With
    ``steady``, each point is answered as ``sim.steady.answer_parts`` says, and a column ``engine`` says
    how each algorithm's runs were simulated."""
    totals, extents, columns, offsets, engines = [], [], [], [], {}
    offset = 0
    for i, (_, exp) in enumerate(items):
        for how, part in sim_steady.answer_parts(exp) if steady else [(_engine(exp), exp)]:
            if how == "fast":
                columns.append(run_columns(part, run_offset=offset))
            else:
                t, e = (sim_steady.simulate_tables_steady(part, run_offset=offset) if how == "steady" else
                        simulate_tables(part, record_steps=False, run_offset=offset)[:2])
                totals.append(t)
                extents.append(e)
            engines.update({(i, a.name): sim_steady.describe(how, part) for a in part.algorithms})
        offsets.append(offset)
        offset += exp.repeats
    parts = [run_table(columns)] if columns else []
    if totals:
        parts.append(schema.summarize(pd.concat(totals, ignore_index=True), pd.concat(extents, ignore_index=True)))
    runs = schema.finish_runs(pd.concat(parts, ignore_index=True)) if len(parts) > 1 else parts[0]
    point = np.searchsorted(np.array(offsets), runs["run"].to_numpy(), side="right") - 1
    runs["run"] -= np.array(offsets)[point]
    if steady:
        runs["engine"] = [engines[(i, a)] for i, a in zip(point, runs["algorithm"], strict=True)]
    keys = list(items[0][0])
    for j, key in enumerate(keys):
        runs.insert(j, key, [items[i][0][key] for i in point])
    runs.insert(0, "_point", point)
    return runs


def _engine(exp: Experiment) -> str:
    """The fast path where it gives the exact engine's runs or where only it can simulate the point."""
    return "fast" if fast.equals_exact(exp) or bounds.engine_for(exp, record_steps=False) == "fast" else "exact"


class _Points(Sequence):
    """Some points of a ``Grid``, built where they are read: in the process or Ray task that simulates
    them, not one by one in the sweep's own process (building a point costs about as much as simulating
    a small one)."""

    def __init__(self, grid: Grid, indices: list[int]):
        self.grid, self.indices = grid, indices
        self._built: list | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if self._built is None:
            self._built = [self.grid[j] for j in self.indices]
        return self._built[i]

    def __getstate__(self) -> dict:
        return {"grid": self.grid, "indices": self.indices, "_built": None}


def sweep(base: Experiment, vary: list[tuple[str, list]], jobs: int | None = None, *, executor: str = "local",
          address: str | None = None, done: Path | None = None, progress=None) -> SweepResult:
    """Simulate every point of the grid (see ``run_points``)."""
    table = run_points(points(base, vary), jobs, executor=executor, address=address, done=done, progress=progress)
    return SweepResult(table=table.drop(columns="_point"), crossovers=crossovers(table, [k for k, _ in vary]))


def run_points(grid: list[tuple[dict, Experiment]], jobs: int | None = None, *, executor: str = "local",
               address: str | None = None, done: Path | None = None, progress=None,
               steady: bool = False) -> pd.DataFrame:
    """Simulate every point, one row per (point, algorithm, run) in grid order, with the point's index in
    ``_point``. ``executor``: "local" (``jobs`` processes, None: every core) or "ray" (the Ray cluster at
    ``address``). With ``done`` (a folder), each finished chunk is stored there as it arrives and points
    already stored are not simulated again, so an interrupted sweep resumes. ``progress`` is told how many
    points each finished chunk held. ``steady``: each point as ``sim.steady.answer_parts`` answers it
    (what ``simulate`` prints for its whole run, in less time)."""
    parts = stored_parts(done, len(grid)) if done is not None else []
    finished = set().union(*(set(part["_point"]) for part in parts))
    todo = [i for i in range(len(grid)) if i not in finished]
    if progress is not None:
        progress.update(len(grid) - len(todo))
    if todo:
        if executor == "ray":
            run = RayExecutor(address)
        elif executor == "local":
            run = LocalExecutor(jobs)
        else:
            raise ConfigError("must be local or ray", key="--executor", value=executor, source="command line")
        size = max(1, min(32, math.ceil(len(todo) / (run.slots(len(todo)) * 4))))
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        simulate = functools.partial(_simulate_chunk, steady=True) if steady else _simulate_chunk
        work = (_Points(grid, chunk) if isinstance(grid, Grid) else [grid[i] for i in chunk] for chunk in chunks)
        for indices, part in run.map(simulate, work, chunks):
            part["_point"] = np.asarray(indices)[part["_point"].to_numpy()]
            if done is not None:
                _store_part(done, indices, part)
            parts.append(part)
            if progress is not None:
                progress.update(len(indices))
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values(["_point", "run"], kind="stable").reset_index(drop=True)


class LocalExecutor:
    """Chunks of points on a process pool of this machine (in this process for one job)."""

    def __init__(self, jobs: int | None):
        if jobs is not None and jobs < 1:
            raise ConfigError("must be >= 1 (leave it out to use every core)", key="--jobs", value=jobs,
                              source="command line")
        self.jobs = jobs or os.cpu_count() or 1

    def slots(self, n_points: int) -> int:
        return min(self.jobs, n_points)

    def map(self, fn, chunks: Iterable, tags: list):
        """Yield (tag, fn(chunk)) as each chunk finishes. Chunks are taken from the iterable (points
        built) only as processes free up: at most two per process wait."""
        work = zip(chunks, tags, strict=True)
        if self.jobs == 1 or len(tags) == 1:
            yield from ((tag, fn(chunk)) for chunk, tag in work)
            return
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(tags))) as pool:
            running: dict = {}
            for chunk, tag in work:
                running[pool.submit(fn, chunk)] = tag
                if len(running) >= 2 * self.jobs:
                    yield from _finished(running)
            while running:
                yield from _finished(running)


def _finished(running: dict):
    """(tag, result) of the futures of ``running`` that finish first, removed from it."""
    done, _ = wait(running, return_when=FIRST_COMPLETED)
    for future in done:
        yield running.pop(future), future.result()


def _store_part(done: Path, indices: list[int], part: pd.DataFrame) -> None:
    """One file per finished chunk, named by its first and last point, written atomically."""
    done.mkdir(parents=True, exist_ok=True)
    io.atomic_write(done / f"points-{indices[0]:07d}-{indices[-1]:07d}.parquet", part.to_parquet)


def stored_parts(done: Path, n_points: int) -> list[pd.DataFrame]:
    """The chunks an interrupted sweep stored in ``done``; a part that is damaged, foreign or not of this
    grid is a ConfigError naming it (before anything is simulated or written)."""
    if not os.path.lexists(done):
        return []
    parts = []
    for path in sorted(Path(done).glob("points-*.parquet")):
        part = read_table_file(path, follow=False)
        point = part.get("_point")
        if point is None or not pd.api.types.is_integer_dtype(point) or not point.between(0, n_points - 1).all() \
                or "speedup_vs_ddp" not in part:
            raise ConfigError(f"is not a part of this sweep (points 0..{n_points - 1}); remove it, or start "
                              "a new --out", source=str(path))
        parts.append(part)
    return parts


def crossovers(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Where the mean speedup_vs_ddp over runs crosses 1 along the numbers of each varied key, the other key
    (if any) held fixed. Linear interpolation between neighbouring points, in log space when the
    values span more than 10x."""
    rows = []
    for key in keys:
        others = [k for k in keys if k != key]
        group_keys = ["algorithm", *others]
        for gk, g in table[table["algorithm"] != "ddp"].groupby(group_keys, sort=False):
            gk = gk if isinstance(gk, tuple) else (gk,)
            # Along its numbers only: an axis may also hold a word (sync_every = "balanced").
            numeric = g[g[key].map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))]
            curve = numeric.groupby(key)["speedup_vs_ddp"].mean().sort_index()
            fixed_key, fixed_value = (others[0], gk[1]) if others else ("", None)
            for value, direction in _crossings(curve):
                rows.append((gk[0], key, value, direction, fixed_key, fixed_value))
    return pd.DataFrame(rows, columns=list(CROSSOVER_COLUMNS))


TIE = 0.005
"""Speedups within 0.5% of 1 count as a tie: a crossing goes from clearly slower to clearly faster."""


def _crossings(curve: pd.Series) -> list[tuple[float, str]]:
    x = curve.index.to_numpy()
    if len(x) < 2 or not np.issubdtype(x.dtype, np.number):
        return []
    x = x.astype(float)
    y = curve.to_numpy(dtype=float) - 1.0
    log = x.min() > 0 and x.max() / x.min() > 10
    u = np.log(x) if log else x
    state = np.where(y > TIE, 1, np.where(y < -TIE, -1, 0))
    decided = np.flatnonzero(state)
    out = []
    for i, j in itertools.pairwise(decided):
        if state[i] == state[j]:
            continue
        # the first segment between the two decided points where y changes sign holds the crossing
        k = next(k for k in range(i, j) if (y[k] <= 0 < y[k + 1]) or (y[k] > 0 >= y[k + 1]))
        a, b = y[k], y[k + 1]
        at = u[k] + (u[k + 1] - u[k]) * (-a) / (b - a)
        out.append((float(math.exp(at) if log else at), "overtakes" if state[j] > 0 else "falls behind"))
    return out
