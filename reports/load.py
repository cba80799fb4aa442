"""Read a results folder for a report: the manifest, whichever tables exist, and what the status means.

A report must open any folder a palsgd command wrote, including one whose writer was killed: tables may
be missing, a real run may have left only its per-rank files under ``ranks/``, a file may be damaged.
Nothing here raises on such a folder; every gap becomes a note the report shows. Only a folder that is
not a results folder at all (no readable manifest) raises ``ConfigError``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core import io, schema
from ..core.errors import ConfigError
from ..harness import store

# Tables a report knows how to draw; any other CSV is shown as it is.
KNOWN_TABLES = (io.RUNS, io.STEPS, io.METRICS, "sweep.csv", "crossovers.csv", "comparison.csv",
                "targets.csv", "totals.csv")
RANKS = "ranks"


@dataclass
class ResultFolder:
    """One results folder as a report sees it."""

    path: Path
    manifest: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    other_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "complete"
    """complete | running | interrupted | failed (``running`` only when the writer is still alive)."""
    status_line: str = ""
    """Empty when complete; else e.g. "interrupted at step 812" or "failed at step 3: out of memory"."""

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "?")

    @property
    def experiment(self) -> dict:
        exp = self.manifest.get("experiment")
        return exp if isinstance(exp, dict) else {}

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    def table(self, name: str) -> pd.DataFrame | None:
        df = self.tables.get(name)
        return df if df is not None and len(df) else None


def load_folder(path: str | Path) -> ResultFolder:
    """Everything a report needs from ``path``; ConfigError only when it is not a results folder."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError("not a palsgd results folder (no such folder)", source=str(path))
    folder = ResultFolder(path=path, manifest=store.read_manifest(path))
    for name in KNOWN_TABLES:
        df = _read(folder, name)
        if df is not None:
            folder.tables[name] = df
    _read_other_tables(folder)
    _recover_from_ranks(folder)
    _check_steps(folder)
    _derive_runs(folder)
    folder.status, folder.status_line = describe_status(folder)
    return folder


def _read(folder: ResultFolder, name: str) -> pd.DataFrame | None:
    try:
        return store.read_table(folder.path, name)
    except ConfigError as err:
        folder.notes.append(f"{name} could not be read and is left out ({err.rule})")
        return None


def _read_other_tables(folder: ResultFolder) -> None:
    for path in sorted(folder.path.glob("*.csv")):
        if path.name not in KNOWN_TABLES:
            df = _read(folder, path.name)
            if df is not None:
                folder.other_tables[path.name] = df


def _recover_from_ranks(folder: ResultFolder) -> None:
    """A real run killed before its merge leaves one file per rank: gather steps and metrics from them."""
    ranks = folder.path / RANKS
    if not ranks.is_dir() or (io.STEPS in folder.tables and io.METRICS in folder.tables):
        return
    found: dict[str, list[pd.DataFrame]] = {io.STEPS: [], io.METRICS: []}
    for path in sorted(p for p in ranks.rglob("*") if p.suffix in (".parquet", ".csv") and p.is_file()):
        try:
            df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, on_bad_lines="skip")
        except Exception:  # a rank file cut off mid-write: skip it, say so
            folder.notes.append(f"{path.relative_to(folder.path)} could not be read and is left out")
            continue
        if set(schema.STEP_COLUMNS) <= set(df.columns):
            found[io.STEPS].append(df[list(schema.STEP_COLUMNS)])
        elif set(schema.METRIC_COLUMNS) <= set(df.columns):
            found[io.METRICS].append(df[list(schema.METRIC_COLUMNS)])
    for name, parts in found.items():
        if parts and name not in folder.tables:
            folder.tables[name] = pd.concat(parts, ignore_index=True).dropna(subset=["step"])
            folder.notes.append(f"{name} was not written; gathered from {len(parts)} file(s) under {RANKS}/")


def _check_steps(folder: ResultFolder) -> None:
    steps = folder.tables.get(io.STEPS)
    if steps is None:
        return
    try:
        schema.validate_steps(steps)
    except ValueError as err:
        del folder.tables[io.STEPS]
        folder.notes.append(f"{io.STEPS} does not follow the step-table schema and is left out ({err})")


def _derive_runs(folder: ResultFolder) -> None:
    """No runs.csv but a step table: the run table is the one summary of it (``schema.summarize_steps``)."""
    steps = folder.table(io.STEPS)
    if io.RUNS in folder.tables or steps is None:
        return
    folder.tables[io.RUNS] = schema.summarize_steps(steps)
    folder.notes.append(f"{io.RUNS} was not written; the run table is summarized from {io.STEPS}")


def pid_alive(pid: object, host: object) -> bool | None:
    """Whether the writer still runs: True/False on this host, None when it cannot be told."""
    if host not in (None, platform.node()) or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return None
    return True


def describe_status(folder: ResultFolder) -> tuple[str, str]:
    """(status, one line for the reader): a ``running`` folder whose writer is gone is interrupted."""
    m = folder.manifest
    status = m.get("status", "complete")
    if status == "complete":
        return status, ""
    at = _at_step(folder)
    if status == "running":
        alive = pid_alive(m.get("pid"), m.get("host"))
        if alive:
            return "running", f"still running (pid {m['pid']} on {m.get('host')}){at}"
        if alive is None:
            return "running", f"still running, or interrupted (its writer cannot be checked from here){at}"
        status = "interrupted"
    if status == "failed":
        message = m.get("error") or m.get("message") or m.get("reason")
        return status, f"failed{at}" + (f": {message}" if message else "")
    return status, f"{status}{at}"


def _at_step(folder: ResultFolder) -> str:
    """" at step N", from the manifest's ``last_step`` (one number, or one per algorithm) or the tables."""
    last = folder.manifest.get("last_step")
    if isinstance(last, dict) and last:
        return " at step " + ", ".join(f"{v} ({k})" for k, v in last.items())
    if isinstance(last, int | float) and not isinstance(last, bool):
        return f" at step {int(last)}"
    steps = [folder.tables[n]["step"].max() for n in (io.STEPS, io.METRICS)
             if n in folder.tables and len(folder.tables[n]) and "step" in folder.tables[n]]
    return f" at step {int(max(steps))}" if steps else ""
