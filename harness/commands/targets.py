"""Time-to-target: when does each algorithm reach a held-out loss, measured and predicted?

"PALSGD is X% faster than DDP" has two meanings, and the paper's abstract does not say which:

- time to the target: DDP's wall-clock to reach the loss / the algorithm's (needs loss curves);
- time for the same budget: DDP's wall-clock for the whole run / the algorithm's (needs no curve).

The loss curve of each algorithm, as a function of the *step*, comes from a real run (metrics.csv) or
from a user's CSV (columns ``algorithm, step, loss``). Reaching the target therefore takes the same
number of steps on any cluster; only the time per step changes, which the simulator predicts. So the
predicted time to target on a cluster is the simulated wall-clock at the step where the measured curve
first reaches the target (linearly interpolated between evaluations).

With a convergence description (``--convergence``), a third set of rows predicts a run without its
curves: the step at the target is the description's DDP steps times the algorithm's steps relative to
DDP, as ``simulate`` and ``advise`` use them. Beside a measured run this checks whether a description
measured on another configuration (workers, network, cluster) carries over to this one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...core import config, io, presets
from ...core.algorithms import ALGORITHMS
from ...core.convergence import Convergence
from ...core.errors import ConfigError
from ...sim import engine
from ..machinery import store
from .simulate import human_s

TARGET_COLUMNS = ("source", "cluster", "algorithm", "target_loss", "step_at_target", "time_to_target_s",
                  "speedup_to_target", "wall_clock_budget_s", "speedup_same_budget", "error_vs_measured",
                  "assumption")
"""``source``: real (measured), sim (measured curve, simulated step times) or convergence (the steps from a
convergence description, simulated step times); ``error_vs_measured``: time to target / measured - 1."""


def step_at_target(curve: pd.DataFrame, target: float) -> float:
    """First (fractional) step where the loss falls to ``target``; NaN when it never does.
    ``curve`` has columns step, loss (one value per step, e.g. the mean over workers)."""
    curve = curve.dropna().sort_values("step")
    steps, loss = curve["step"].to_numpy(float), curve["loss"].to_numpy(float)
    below = np.flatnonzero(loss <= target)
    if below.size == 0:
        return math.nan
    i = below[0]
    if i == 0:
        return steps[0]
    s0, s1, l0, l1 = steps[i - 1], steps[i], loss[i - 1], loss[i]
    return s0 + (s1 - s0) * (l0 - target) / (l0 - l1)


def _curves_from_run(folder: Path) -> pd.DataFrame:
    """Held-out loss per algorithm and step (mean over workers); training loss when never evaluated."""
    metrics = store.read_table(folder, io.METRICS)
    if metrics is None or metrics.empty:
        raise ConfigError("has no metrics.csv (loss curves); run `palsgd run` first", source=str(folder))
    column = "eval_loss" if metrics["eval_loss"].notna().any() else "loss"
    real = metrics[metrics["source"] == "real"] if "source" in metrics else metrics
    curves = real.groupby(["algorithm", "step"], as_index=False)[[column, "end_s"]].mean()
    return curves.rename(columns={column: "loss"}).dropna(subset=["loss"])


def _read_user_curves(path: Path) -> pd.DataFrame:
    try:
        curves = pd.read_csv(path)
    except Exception as err:
        raise ConfigError(f"unreadable CSV: {err}", source=str(path)) from None
    missing = {"algorithm", "step", "loss"} - set(curves.columns)
    if missing:
        raise ConfigError(f"needs columns algorithm, step, loss; missing {sorted(missing)}", source=str(path))
    _check_column(path, curves, "algorithm", curves["algorithm"].isin(ALGORITHMS),
                  f"must be one of {', '.join(ALGORITHMS)}")
    step = pd.to_numeric(curves["step"], errors="coerce")
    loss = pd.to_numeric(curves["loss"], errors="coerce")
    _check_column(path, curves, "step", step >= 0, "must be a number >= 0")
    # An empty loss is a step without an evaluation; anything else must be a finite number.
    _check_column(path, curves, "loss", np.isfinite(loss) | curves["loss"].isna(), "must be a finite number")
    return curves.assign(step=step, loss=loss)


def _check_column(path: Path, curves: pd.DataFrame, column: str, ok: pd.Series, rule: str) -> None:
    """Name the first bad row (as numbered in the file, header = line 1) and its raw value."""
    bad = np.flatnonzero(~ok.to_numpy(bool))
    if bad.size:
        raw = pd.read_csv(path, dtype=str)[column].iloc[bad[0]]
        raise ConfigError(f"{rule} (line {bad[0] + 2})", key=column, value=raw, source=str(path))


def time_to_target(source: str | Path, target_loss: float, *, cluster: str | None = None,
                   overrides: list[str] = (), workload: str | None = None,
                   described: Convergence | None = None) -> pd.DataFrame:
    """The target table: measured (from a run folder), predicted (simulated cluster) and, with
    ``described``, predicted from a convergence description."""
    if described is not None and not math.isclose(described.target_loss, target_loss, rel_tol=1e-9):
        raise ConfigError(f"the convergence description is for a loss of {described.target_loss:g}, not "
                          f"{target_loss:g}", key="--loss", value=target_loss, source="command line")
    source = Path(source)
    rows: list[dict] = []
    if source.is_dir():
        manifest = store.read_manifest(source)
        if manifest.get("kind") != "run" or not isinstance(manifest.get("experiment"), dict):
            raise ConfigError(f"is a {manifest.get('kind')} folder; time-to-target needs the folder of a "
                              "`palsgd run` (or a CSV of loss curves)", source=str(source))
        exp = config.from_dict(manifest["experiment"])
        curves = _curves_from_run(source)
        rows += _measured_rows(source, curves, target_loss, exp.cluster.name)
        if cluster is not None or overrides:
            exp = _retarget(exp, cluster, list(overrides))
    else:
        curves = _read_user_curves(source)
        exp = config.load(workload=workload, cluster=cluster, overrides=list(overrides))
    curves = curves[curves["algorithm"].isin([a.name for a in exp.algorithms])]
    sim = engine.simulate(exp.replace(budget=config.BudgetSpec(steps=exp.nominal_steps)), record_steps=True)
    rows += _predicted_rows(sim.steps, sim.runs, curves, target_loss, exp.cluster.name)
    if described is not None:
        rows += _described_rows(sim.steps, sim.runs, described, exp)
    table = _errors(_speedups(pd.DataFrame(rows, columns=list(TARGET_COLUMNS))))
    if source.is_dir():  # derived data: the report of this folder draws it
        store.write_table(source, "targets.csv", table)
    return table


def _retarget(exp: config.Experiment, cluster: str | None, overrides: list[str]) -> config.Experiment:
    """The same experiment on another cluster: the workers count stays, the machines change."""
    layers = []
    if cluster is not None:
        path = presets.resolve("cluster", cluster, "--cluster")
        layers.append((str(path), presets.read_toml(path)))
        # The loss curve holds for the run's global batch: keep its worker layout unless --set changes it.
        layers.append(("run", {"cluster": {"nodes": exp.cluster.nodes, "gpus_per_node": exp.cluster.gpus_per_node}}))
    layers += [("--set", config.parse_override(o)) for o in overrides]
    return config.with_changes(exp, layers)


def _measured_rows(folder: Path, curves: pd.DataFrame, target: float, cluster: str) -> list[dict]:
    runs = store.read_table(folder, io.RUNS)
    wall = {}
    if runs is not None:
        real = runs[runs["source"] == "real"]
        wall = real.groupby("algorithm")["wall_clock_s"].mean().to_dict()
    rows = []
    for algorithm, g in curves.groupby("algorithm", sort=False):
        step = step_at_target(g[["step", "loss"]], target)
        t = float(np.interp(step, g["step"], g["end_s"])) if math.isfinite(step) else math.nan
        rows.append({"source": "real", "cluster": cluster, "algorithm": algorithm, "target_loss": target,
                     "step_at_target": step, "time_to_target_s": t,
                     "wall_clock_budget_s": wall.get(algorithm, math.nan)})
    return rows


def _predicted_rows(steps: pd.DataFrame, runs: pd.DataFrame, curves: pd.DataFrame, target: float,
                    cluster: str) -> list[dict]:
    done, wall = _step_ends(steps), runs.groupby("algorithm")["wall_clock_s"].mean()
    rows = []
    for algorithm, g in curves.groupby("algorithm", sort=False):
        step = step_at_target(g[["step", "loss"]], target)
        rows.append({"source": "sim", "cluster": cluster, "algorithm": algorithm, "target_loss": target,
                     "step_at_target": step, "time_to_target_s": _time_at(done, algorithm, step),
                     "wall_clock_budget_s": float(wall.get(algorithm, math.nan))})
    return rows


def _described_rows(steps: pd.DataFrame, runs: pd.DataFrame, conv: Convergence,
                    exp: config.Experiment) -> list[dict]:
    """Each algorithm's step at the target from ``conv`` (none outside its measured range, or past this
    run's budget: a description is never extrapolated), at the simulated wall-clock of that step."""
    done, wall = _step_ends(steps), runs.groupby("algorithm")["wall_clock_s"].mean()
    rows = []
    for spec in exp.algorithms:
        found = conv.steps_to_target(spec, exp.workers, exp.group_size(spec))
        step = found.steps_vs_ddp if found.steps_vs_ddp is not None else math.nan
        rows.append({"source": "convergence", "cluster": exp.cluster.name, "algorithm": spec.name,
                     "target_loss": conv.target_loss, "step_at_target": step,
                     "time_to_target_s": _time_at(done, spec.name, step),
                     "wall_clock_budget_s": float(wall.get(spec.name, math.nan)), "assumption": found.why})
    return rows


def _step_ends(steps: pd.DataFrame) -> pd.Series:
    """The wall-clock at the end of each (algorithm, step): when the slowest worker has finished it."""
    return steps.groupby(["algorithm", "step"])["end_s"].max()


def _time_at(done: pd.Series, algorithm: str, step: float) -> float:
    """The simulated wall-clock at a fractional ``step``; NaN when it is not a step of the run."""
    if not math.isfinite(step) or algorithm not in done.index.get_level_values(0):
        return math.nan
    ends = done.loc[algorithm]
    if step > ends.index.max():
        return math.nan
    return float(np.interp(step, ends.index.to_numpy(float), ends.to_numpy(float)))


def _speedups(table: pd.DataFrame) -> pd.DataFrame:
    for _, g in table.groupby(["source", "cluster"], sort=False):
        ddp = g[g["algorithm"] == "ddp"]
        if ddp.empty:
            continue
        idx = g.index
        table.loc[idx, "speedup_to_target"] = ddp["time_to_target_s"].iloc[0] / g["time_to_target_s"]
        table.loc[idx, "speedup_same_budget"] = ddp["wall_clock_budget_s"].iloc[0] / g["wall_clock_budget_s"]
    return table


def _errors(table: pd.DataFrame) -> pd.DataFrame:
    """Each prediction's time to target against the measured one of the same algorithm."""
    measured = table[table["source"] == "real"].set_index("algorithm")["time_to_target_s"]
    predicted = table["source"] != "real"
    table.loc[predicted, "error_vs_measured"] = (table.loc[predicted, "time_to_target_s"]
                                                 / table.loc[predicted, "algorithm"].map(measured) - 1)
    return table


HEADINGS = {"real": "measured", "sim": "predicted (measured curves)",
            "convergence": "predicted (steps from the convergence description)"}


def format_targets(table: pd.DataFrame) -> str:
    lines = []
    for (source, cluster), g in table.groupby(["source", "cluster"], sort=False):
        lines.append(f"{HEADINGS[source]} on {cluster}:")
        for r in g.itertuples():
            reach = f"does not reach {r.target_loss:g} in the run"
            if math.isfinite(r.time_to_target_s):
                reach = f"reaches {r.target_loss:g} at step {r.step_at_target:.0f} after {human_s(r.time_to_target_s)}"
            elif math.isfinite(r.step_at_target):
                reach = f"reaches {r.target_loss:g} at step {r.step_at_target:.0f}, after the run's last step"
            elif source == "convergence":
                reach = "no prediction (see below)"
            error = f" ({r.error_vs_measured:+.1%} vs measured)" if math.isfinite(r.error_vs_measured) else ""
            lines.append(f"  {r.algorithm:10s} {reach}{error}; to target {_x(r.speedup_to_target)} DDP, same budget "
                         f"{_x(r.speedup_same_budget)} DDP ({human_s(r.wall_clock_budget_s)})")
            if isinstance(r.assumption, str) and r.assumption:
                lines.append(f"  {'':10s} steps: {r.assumption}")
    return "\n".join(lines)


def _x(speedup: float) -> str:
    return f"{speedup:.3f}x" if math.isfinite(speedup) else "-"
