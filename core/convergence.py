"""Convergence descriptions: how many steps each algorithm needs to reach a target loss, relative to DDP.

The simulator predicts the wall-clock of a number of steps. A local method may need more steps than
DDP to reach the same held-out loss, so "X times faster for the same steps" and "X times faster to the
target" differ. A convergence description gives the missing factor, measured (``palsgd time-to-target
RUN... --loss L --export FILE``) or stated by the user, in a TOML file (``--convergence FILE``)::

    [workload.convergence]
    target_loss = 3.05      # the held-out loss the steps refer to
    ddp_steps = 77.0        # steps DDP needs to reach it
    ddp_workers = 2         # optional: the worker count ddp_steps was measured at
    source = "..."          # where the numbers come from

    [[workload.convergence.points]]
    algorithm = "palsgd"
    sync_every = 8          # optional axes: sync_every (H), p (palsgd only), fragments, fragment_sync_delay,
                            # eager_outer (streaming_diloco only), workers, replica_group (workers per
                            # replica, core/groups.py)
    p = 0.2
    payload_dtype = "fp32"  # optional, default fp32 (sparseloco: int2): only points of the same dtype answer
    steps_vs_ddp = 1.49     # steps to the target / DDP's steps to the target (same workers)
    source = "..."

    [[workload.convergence.points]]
    algorithm = "ddp"       # optional: DDP's own steps on other worker counts, relative to ddp_steps
    workers = 4
    steps_vs_ddp = 1.15
    source = "..."

Rules, per algorithm and payload dtype:

- An axis its points give is *measured*: every point gives it, the points form a full grid, and a
  value between two measured ones is interpolated (linearly in log H and log workers, linearly in p).
  A value outside the measured range is never extrapolated: ``lookup`` answers no value and says why,
  ``require`` raises ``ConfigError``.
- An axis no point gives is *assumed not to matter*; every lookup lists that assumption.
- DDP needs 1.0 times DDP's steps on the same workers, by definition. Its steps on another number of
  workers are ``ddp_steps`` (measured on ``ddp_workers``) times its own points' value, interpolated in
  log workers; without DDP points they are assumed to be ``ddp_steps`` on any number of workers.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import tomli_w

from . import presets
from .algorithms import FACTS
from .buckets import PAYLOAD_ELEM_BYTES as PAYLOAD_BYTES
from .errors import ConfigError
from .sparse import DEFAULT_PAYLOAD as SPARSE_DEFAULT
from .sparse import SPARSE_VALUE_BITS

if TYPE_CHECKING:  # annotations only: config imports the workload, which parses this module's tables
    from .config import AlgorithmSpec, Experiment

TABLE = "workload.convergence"
AXES = ("sync_every", "p", "fragments", "workers", "replica_group", "fragment_sync_delay", "eager_outer")
AXES_OF = {name: tuple(axis for axis, has in (("sync_every", f.local), ("p", f.pseudo_syncs),
                                              ("fragments", f.fragments), ("workers", True),
                                              ("replica_group", f.local), ("fragment_sync_delay", f.fragments),
                                              ("eager_outer", f.fragments)) if has)
           for name, f in FACTS.items()}
"""The axes each local algorithm's steps to the target may depend on: p is PALSGD's alone; Streaming
DiLoCo's fragments change how stale each synced piece is, so they may cost steps as H does; the workers
per replica (``replica_group`` as a number, ``core/groups.py``) set how many replicas the local method
averages and how large each one's batch is; the delay tau and eager outer steps change how stale the
applied outer gradient is (docs/algorithms.md). ``eager_outer`` is never interpolated: it is 0 or 1."""
OWN_AXES = {axis: name for name, f in FACTS.items()
            for axis, has in (("p", f.pseudo_syncs), ("fragments", f.fragments),
                              ("fragment_sync_delay", f.fragments), ("eager_outer", f.fragments)) if has}
"""Axes that only one algorithm has."""
LOG_AXES = ("sync_every", "fragments", "workers", "replica_group")
"""Interpolated in log space: they are usually measured on geometric grids (H = 4, 8, 16, ...)."""
AXIS_NAMES = {"sync_every": "H (sync_every)", "p": "p", "fragments": "the number of fragments",
              "workers": "the number of workers", "replica_group": "the workers per replica (replica_group)",
              "fragment_sync_delay": "the sync delay tau (fragment_sync_delay)",
              "eager_outer": "eager outer steps (eager_outer)"}


@dataclass(frozen=True)
class Point:
    """One measured (or stated) configuration and its steps to the target relative to DDP."""

    algorithm: str
    steps_vs_ddp: float
    source: str
    payload_dtype: str = "fp32"
    sync_every: int | None = None
    p: float | None = None
    fragments: int | None = None
    workers: int | None = None
    replica_group: int | None = None
    fragment_sync_delay: int | None = None
    eager_outer: bool | None = None

    def given_axes(self) -> tuple[str, ...]:
        return tuple(a for a in AXES if getattr(self, a) is not None)


@dataclass(frozen=True)
class Lookup:
    """The answer for one configuration: ``steps_vs_ddp`` is None when it lies outside what was measured."""

    steps_vs_ddp: float | None
    why: str
    """Why there is no value, or the assumptions behind the value."""
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Convergence:
    target_loss: float
    ddp_steps: float
    source: str
    points: tuple[Point, ...] = ()
    ddp_workers: int | None = None
    _groups: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_number(self.target_loss, "target_loss", "must be a finite number")
        _check_number(self.ddp_steps, "ddp_steps", "must be a finite number > 0", positive=True)
        groups: dict[tuple[str, str], list[Point]] = {}
        for point in self.points:
            groups.setdefault((point.algorithm, point.payload_dtype), []).append(point)
        object.__setattr__(self, "_groups", {k: _Grid.of(v) for k, v in groups.items()})

    def payload_dtypes(self, algorithm: str) -> list[str]:
        return sorted(dtype for name, dtype in self._groups if name == algorithm)

    def measured(self, algorithm: str, payload_dtype: str) -> dict[str, list[float]]:
        """The measured values of each measured axis (empty when every axis is assumed not to matter)."""
        grid = self._groups.get((algorithm, payload_dtype))
        return dict(zip(grid.axes, grid.values, strict=True)) if grid else {}

    def lookup(self, spec: AlgorithmSpec, workers: int, group_size: int = 1) -> Lookup:
        """Steps to the target of ``spec`` on ``workers`` workers in replicas of ``group_size``, relative to DDP's."""
        if spec.name == "ddp":
            return Lookup(1.0, "DDP by definition", (self.source,))
        grid = self._groups.get((spec.name, spec.payload_dtype))
        if grid is None:
            return Lookup(None, f"the convergence description has no {spec.name} point with payload "
                                f"{spec.payload_dtype}")
        query = {"sync_every": spec.sync_every, "p": spec.p, "fragments": spec.fragments, "workers": workers,
                 "replica_group": group_size, "fragment_sync_delay": spec.fragment_sync_delay,
                 "eager_outer": spec.eager_outer}
        return grid.lookup(spec.name, query)

    def ddp_steps_on(self, workers: int) -> Lookup:
        """DDP's own steps to the target on ``workers`` workers (in the ``steps_vs_ddp`` field)."""
        grid = self._groups.get(("ddp", "fp32"))
        if grid is None:
            assumed = "" if self.ddp_workers in (None, workers) else \
                f" (measured on {self.ddp_workers} workers, assumed to hold on {workers})"
            return Lookup(self.ddp_steps, f"DDP's steps {self.ddp_steps:.1f}{assumed}", (self.source,))
        found = grid.lookup("ddp", {"workers": workers})
        if found.steps_vs_ddp is None:
            return found
        steps = self.ddp_steps * found.steps_vs_ddp
        return Lookup(steps, f"DDP's steps {steps:.1f} on {workers} workers (from its measured worker counts)",
                      found.sources)

    def steps_to_target(self, spec: AlgorithmSpec, workers: int, group_size: int = 1) -> Lookup:
        """Steps ``spec`` needs to the target on ``workers`` workers (in the ``steps_vs_ddp`` field): DDP's
        steps there times ``spec``'s steps relative to DDP there."""
        ddp, ratio = self.ddp_steps_on(workers), self.lookup(spec, workers, group_size)
        if ddp.steps_vs_ddp is None or ratio.steps_vs_ddp is None:
            return Lookup(None, ratio.why if ratio.steps_vs_ddp is None else ddp.why)
        return Lookup(ddp.steps_vs_ddp * ratio.steps_vs_ddp, f"{ratio.why}; {ddp.why}",
                      tuple(dict.fromkeys(ratio.sources + ddp.sources)))

    def require(self, spec: AlgorithmSpec, workers: int, *, source: str = "", group_size: int = 1) -> float:
        """Like ``lookup``, but a configuration outside the measured range is a ConfigError."""
        found = self.lookup(spec, workers, group_size)
        if found.steps_vs_ddp is None:
            raise ConfigError(f"no steps to the target: {found.why}", key=f"algorithm.{spec.name}",
                              source=source)
        return found.steps_vs_ddp

    def to_dict(self) -> dict:
        """The ``[workload.convergence]`` table; keys without a value are left out (TOML has no null)."""
        head = {"target_loss": self.target_loss, "ddp_steps": self.ddp_steps, "ddp_workers": self.ddp_workers,
                "source": self.source}
        points = [{"algorithm": p.algorithm, "payload_dtype": p.payload_dtype,
                   **{a: getattr(p, a) for a in AXES}, "steps_vs_ddp": p.steps_vs_ddp, "source": p.source}
                  for p in self.points]
        return {**_given(head), "points": [_given(p) for p in points]}

    def to_toml(self) -> str:
        """The file that ``load`` reads back into an equal description."""
        return tomli_w.dumps({"workload": {"convergence": self.to_dict()}})


@dataclass(frozen=True)
class _Grid:
    """The points of one algorithm and payload dtype, as a full grid over the axes they give."""

    axes: tuple[str, ...]
    values: tuple[list[float], ...]
    table: dict[tuple, Point]

    @classmethod
    def of(cls, points: list[Point]) -> _Grid:
        name = points[0].algorithm
        axes = points[0].given_axes()
        for point in points:
            if point.given_axes() != axes:
                raise ConfigError(f"every {name} point with payload {point.payload_dtype} must give the same "
                                  f"axes ({', '.join(axes) or 'none'}); this one gives "
                                  f"{', '.join(point.given_axes()) or 'none'}", key="points",
                                  value=point.source)
        table: dict[tuple, Point] = {}
        for point in points:
            coords = tuple(getattr(point, a) for a in axes)
            if coords in table:
                raise ConfigError(f"{name} is given twice at {_where(axes, coords)}", key="points",
                                  value=point.source)
            table[coords] = point
        values = tuple(sorted({c[i] for c in table}) for i in range(len(axes)))
        missing = math.prod(len(v) for v in values) - len(table)
        if missing:
            raise ConfigError(f"the {name} points over {' x '.join(axes)} must form a full grid (every "
                              f"combination of {_where(axes, values)}); {missing} missing",
                              key="points")
        return cls(axes, values, table)

    def lookup(self, name: str, query: dict[str, float]) -> Lookup:
        for axis, measured in zip(self.axes, self.values, strict=True):
            q = query[axis]
            if not measured[0] <= q <= measured[-1]:
                span = f"{measured[0]:g}" if len(measured) == 1 else f"{measured[0]:g}..{measured[-1]:g}"
                return Lookup(None, f"{axis} = {q:g} is outside the measured range of {name} ({span}); "
                                    "not extrapolated")
        corners = self._corners(tuple(query[a] for a in self.axes))
        value = sum(w * self.table[c].steps_vs_ddp for c, w in corners)
        assumed = [a for a in AXES_OF[name] if a not in self.axes]
        why = f"{name} interpolated within the measured range"
        if assumed:
            why = (f"{name}'s steps to the target relative to DDP assumed independent of "
                   + " and ".join(AXIS_NAMES[a] for a in assumed))
        sources = tuple(dict.fromkeys(self.table[c].source for c, w in corners if w > 0))
        return Lookup(value, why, sources)

    def _corners(self, query: tuple) -> list[tuple[tuple, float]]:
        """The grid points around ``query`` and their multilinear weights."""
        corners: list[tuple[tuple, float]] = [((), 1.0)]
        for axis, measured, q in zip(self.axes, self.values, query, strict=True):
            i = bisect.bisect_left(measured, q)
            if measured[i] == q:
                corners = [((*c, q), w) for c, w in corners]
                continue
            lo, hi = measured[i - 1], measured[i]
            f = math.log if axis in LOG_AXES else float
            t = (f(q) - f(lo)) / (f(hi) - f(lo))
            corners = [((*c, v), w * wv) for c, w in corners for v, wv in ((lo, 1 - t), (hi, t))]
        return corners


def _where(axes: tuple[str, ...], coords) -> str:
    return ", ".join(f"{a}={c}" for a, c in zip(axes, coords, strict=True))


def _given(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _check_number(value, key: str, rule: str, *, positive: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise ConfigError(rule, key=key, value=value, has_value=True)


SAME_STEPS_NOTE = ("speedups are for the same steps; for the speedup to a target loss give --convergence FILE "
                   "(`palsgd time-to-target RUN... --loss L --export FILE` measures one)")
TO_TARGET_ASSUMPTION = ("speedup to the target = same-steps speedup / steps to the target relative to DDP: each "
                        "algorithm's mean simulated step time assumed to hold over its steps to the target")


def of_experiment(exp: Experiment) -> Convergence | None:
    """The experiment's ``[workload.convergence]`` table (from its file or ``--convergence``), if any."""
    return exp.workload.described


def with_convergence(exp: Experiment, conv: Convergence) -> Experiment:
    """``exp`` carrying ``conv``, so that its results folder (manifest) and every sweep point hold it."""
    return exp.replace(workload=dataclasses.replace(exp.workload, convergence=conv.to_dict()))


def notes(exp: Experiment) -> list[str]:
    """What a speedup of ``exp`` means: the same steps (no description), or to the target, and on what
    each algorithm's steps to the target rest."""
    conv = of_experiment(exp)
    if conv is None:
        return [SAME_STEPS_NOTE]
    out = [f"to target = to held-out loss {conv.target_loss:g} ({conv.ddp_steps_on(exp.workers).why}; "
           f"{conv.source}); " + TO_TARGET_ASSUMPTION]
    for spec in exp.algorithms:
        if spec.is_local:
            found = conv.lookup(spec, exp.workers, exp.group_size(spec))
            ratio = f"{found.steps_vs_ddp:.3g}x DDP's steps" if found.steps_vs_ddp is not None else "no value"
            out.append(f"{spec.name}: {ratio}; {found.why}")
    return out


def speedup_to_target(runs: pd.DataFrame, exp: Experiment, conv: Convergence | None) -> pd.Series:
    """``speedup_to_target_vs_ddp`` for each row of a run table (``schema.RUN_COLUMNS``): NaN without a
    description or outside its measured range."""
    if conv is None:
        return pd.Series(math.nan, index=runs.index, name="speedup_to_target_vs_ddp")
    ratio = {a.name: conv.lookup(a, exp.workers, exp.group_size(a)).steps_vs_ddp for a in exp.algorithms}
    steps_vs_ddp = runs["algorithm"].map(lambda name: ratio.get(name) or math.nan)
    return (runs["speedup_vs_ddp"] / steps_vs_ddp).rename("speedup_to_target_vs_ddp")


# ---------------------------------------------------------------------------------------------
# Loading


def load(ref: str | Path) -> Convergence:
    """Read a convergence TOML file or preset (``core/presets/convergence/``); every error names the file,
    the key, the value and the rule."""
    path = presets.resolve("convergence", str(ref), "--convergence")
    data = presets.read_toml(path)
    table = data.get("workload", {}).get("convergence") if isinstance(data.get("workload"), dict) else None
    if not isinstance(table, dict):
        raise ConfigError(f"is not a convergence file: it needs a [{TABLE}] table", source=str(path))
    try:
        return from_dict(table)
    except ConfigError as err:
        raise err.located(str(path), TABLE) from None


_HEAD_KEYS = ("target_loss", "ddp_steps", "ddp_workers", "source", "points")
_POINT_KEYS = ("algorithm", "steps_vs_ddp", "source", "payload_dtype", *AXES)


def from_dict(table: dict) -> Convergence:
    """The ``[workload.convergence]`` table as a Convergence (keys relative to that table)."""
    _check_keys(table, _HEAD_KEYS, "", ("target_loss", "ddp_steps", "source"))
    _check_string(table["source"], "source")
    workers = table.get("ddp_workers")
    if workers is not None:
        _check_count(workers, "ddp_workers")
    points = table.get("points", [])
    if not isinstance(points, list):
        raise ConfigError("must be a list of [[points]] tables", key="points", value=points)
    return Convergence(target_loss=table["target_loss"], ddp_steps=table["ddp_steps"], source=table["source"],
                       ddp_workers=workers, points=tuple(_point(p, f"points[{i}]") for i, p in enumerate(points)))


def _point(raw: object, key: str) -> Point:
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", key=key, value=raw)
    _check_keys(raw, _POINT_KEYS, f"{key}.", ("algorithm", "steps_vs_ddp", "source"))
    name = raw["algorithm"]
    if name not in AXES_OF:
        raise ConfigError(f"must be one of {', '.join(AXES_OF)}", key=f"{key}.algorithm", value=name)
    if name == "ddp" and (sorted(set(raw) & set(AXES)) != ["workers"] or raw.get("payload_dtype", "fp32") != "fp32"):
        raise ConfigError("a DDP point gives DDP's steps on another number of workers: `workers` and no other "
                          "axis or payload dtype (on the same workers DDP is 1.0 by definition)", key=key,
                          value=raw)
    _check_number(raw["steps_vs_ddp"], f"{key}.steps_vs_ddp", "must be a finite number > 0", positive=True)
    _check_string(raw["source"], f"{key}.source")
    # SparseLoCo's values have dtypes of their own, int2 by default (core/sparse.py).
    dtypes, default = (SPARSE_VALUE_BITS, SPARSE_DEFAULT) if FACTS[name].sparse else (PAYLOAD_BYTES, "fp32")
    dtype = raw.get("payload_dtype", default)
    if dtype not in dtypes:
        raise ConfigError(f"must be one of {', '.join(dtypes)}", key=f"{key}.payload_dtype", value=dtype)
    for axis, owner in OWN_AXES.items():
        if axis in raw and name != owner:
            raise ConfigError(f"applies to {owner} only", key=f"{key}.{axis}", value=raw[axis])
    for axis in ("sync_every", "fragments", "workers", "replica_group"):
        if axis in raw:
            _check_count(raw[axis], f"{key}.{axis}")
    if "fragment_sync_delay" in raw and (isinstance(raw["fragment_sync_delay"], bool)
                                         or not isinstance(raw["fragment_sync_delay"], int)
                                         or raw["fragment_sync_delay"] < 0):
        raise ConfigError("must be an integer >= 0", key=f"{key}.fragment_sync_delay",
                          value=raw["fragment_sync_delay"], has_value=True)
    if "eager_outer" in raw and not isinstance(raw["eager_outer"], bool):
        raise ConfigError("must be true or false", key=f"{key}.eager_outer", value=raw["eager_outer"],
                          has_value=True)
    if "p" in raw:
        _check_number(raw["p"], f"{key}.p", "must be in [0, 1)")
        if not 0 <= raw["p"] < 1:
            raise ConfigError("must be in [0, 1)", key=f"{key}.p", value=raw["p"])
    return Point(algorithm=name, steps_vs_ddp=float(raw["steps_vs_ddp"]), source=raw["source"],
                 payload_dtype=dtype, sync_every=raw.get("sync_every"),
                 p=float(raw["p"]) if "p" in raw else None, fragments=raw.get("fragments"),
                 workers=raw.get("workers"), replica_group=raw.get("replica_group"),
                 fragment_sync_delay=raw.get("fragment_sync_delay"), eager_outer=raw.get("eager_outer"))


def _check_keys(raw: dict, allowed: tuple[str, ...], prefix: str, required: tuple[str, ...]) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key; expected one of: {', '.join(allowed)}", key=prefix + unknown[0])
    for key in required:
        if key not in raw:
            raise ConfigError("is required", key=prefix + key)


def _check_string(value: object, key: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("must be a non-empty string saying where the numbers come from", key=key, value=value,
                          has_value=True)


def _check_count(value: object, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("must be an integer >= 1", key=key, value=value, has_value=True)
