"""Read a results folder for a report: the manifest, whichever tables exist, and what the status means.

A report must open any folder a palsgd command wrote, including one whose writer was killed: tables may
be missing, a real run may have left only its per-rank files under ``ranks/``, a file may be damaged.
Nothing here raises on such a folder; every gap becomes a note the report shows. Only a folder that is
not a results folder at all (no readable manifest) raises ``ConfigError``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core import io, results, schema
from ..core.errors import ConfigError

# Tables a report knows how to draw; any other CSV is shown as it is.
KNOWN_TABLES = (io.RUNS, io.STEPS, io.TIMELINE, io.METRICS, "sweep.csv", "crossovers.csv", "comparison.csv",
                "targets.csv", "totals.csv", io.SENSITIVITY, io.SENSITIVITY_CROSSOVERS)
RANKS = "ranks"
REQUIRED_COLUMNS = {io.RUNS: ("algorithm", "run", "wall_clock_s", "speedup_vs_ddp"),
                    io.METRICS: ("algorithm", "step", "loss")}
"""Columns a known table must hold to be drawn (every known table has ``algorithm``); a table without them
is foreign, and is left out with a note instead of failing the page."""


@dataclass
class ResultFolder:
    """One results folder as a report sees it."""

    path: Path
    manifest: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    other_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "complete"
    """One of ``core.results.STATUSES`` (``running`` only when the writer may still be alive)."""
    status_line: str = ""
    """Empty when complete; else e.g. "interrupted at step 812" or "diverged at step 3: loss is nan"."""
    partial: dict[str, str] = field(default_factory=dict)
    """Algorithms that did not finish their budget, each with why ("partial" or "diverged"): their totals
    are real, a speedup from them is not."""

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
    folder = ResultFolder(path=path, manifest=results.read_manifest(path))
    for name in KNOWN_TABLES:
        df = _read(folder, name)
        if df is not None:
            folder.tables[name] = df
    _read_other_tables(folder)
    _recover_from_ranks(folder)
    _check_steps(folder)
    _derive_runs(folder)
    folder.status, folder.status_line = describe_status(folder)
    folder.partial = partial_algorithms(folder)
    return folder


def _read(folder: ResultFolder, name: str) -> pd.DataFrame | None:
    try:
        df = results.read_table(folder.path, name)
    except ConfigError as err:
        folder.notes.append(f"{name} could not be read and is left out ({err.rule})")
        return None
    missing = [c for c in REQUIRED_COLUMNS.get(name, ("algorithm",) if name in KNOWN_TABLES else ())
               if df is not None and c not in df]
    if missing:
        folder.notes.append(f"{name} lacks the column(s) {', '.join(missing)} and is left out")
        return None
    return df


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
            with io.open_input(path, max_bytes=io.MAX_TABLE_BYTES, follow=False, what="rank file") as f:
                df = pd.read_parquet(f) if path.suffix == ".parquet" else pd.read_csv(f, on_bad_lines="skip")
        except Exception:  # a rank file cut off mid-write, or not a regular file of ours: skip it, say so
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


def partial_algorithms(folder: ResultFolder) -> dict[str, str]:
    """In a folder that is not complete, the algorithms that did not finish: those whose record in the
    manifest (``palsgd run`` keeps one per algorithm) is not complete; without records, all of them.
    Each maps to "diverged" when it is the one that diverged, else to "partial"."""
    runs = folder.tables.get(io.RUNS)
    if folder.status == "complete" or runs is None:
        return {}
    records = folder.manifest.get("algorithms")
    names = set(runs["algorithm"])
    if isinstance(records, dict):
        names = {a for a in names if not (isinstance(records.get(a), dict) and records[a].get("status") == "complete")}
    return {a: "diverged" if a in _diverged(folder) else "partial" for a in names}


def _diverged(folder: ResultFolder) -> set[str]:
    """The algorithms whose record, or the failure record, says they diverged."""
    records = folder.manifest.get("algorithms")
    records = records if isinstance(records, dict) else {}
    out = {a for a, r in records.items() if isinstance(r, dict) and r.get("status") == "diverged"}
    failure = folder.manifest.get("failure")
    if isinstance(failure, dict) and failure.get("kind") == "diverged" and failure.get("algorithm"):
        out.add(failure["algorithm"])
    return out


def describe_status(folder: ResultFolder) -> tuple[str, str]:
    """(status, one line for the reader). ``results.effective_status`` turns a ``running`` folder whose
    writer died on this host into ``interrupted``; a writer on another host cannot be checked."""
    m = folder.manifest
    status = results.effective_status(m) if "status" in m else "interrupted"
    if status == "complete":
        return status, ""
    failure = m.get("failure") if isinstance(m.get("failure"), dict) else {}
    at = _at_step(folder, failure)
    if status == "running":
        if m.get("host") == platform.node():
            return status, f"still running (pid {m.get('pid')}){at}"
        return status, f"still running on {m.get('host', 'another host')}, or interrupted (cannot tell from here){at}"
    where = ", ".join(f"{k} {failure[k]}" for k in ("algorithm", "rank") if failure.get(k) is not None)
    message = failure.get("message") or m.get("error") or m.get("message")
    return status, f"{status}{at}" + (f" ({where})" if where else "") + (f": {message}" if message else "")


def _at_step(folder: ResultFolder, failure: dict) -> str:
    """" at step N": from the failure record, the manifest's last step per algorithm (``algorithms``
    records of ``palsgd run``) or ``last_step``, else the largest step in the tables."""
    if isinstance(failure.get("step"), int):
        return f" at step {failure['step']}"
    algos = folder.manifest.get("algorithms")
    if isinstance(algos, dict):
        last = {k: v["last_step"] for k, v in algos.items() if isinstance(v, dict) and
                v.get("status") != "complete" and isinstance(v.get("last_step"), int) and v["last_step"] >= 0}
        if last:
            return " at step " + ", ".join(f"{v} ({k})" for k, v in last.items())
    last = folder.manifest.get("last_step")
    if isinstance(last, dict) and last:
        return " at step " + ", ".join(f"{v} ({k})" for k, v in last.items())
    if isinstance(last, int | float) and not isinstance(last, bool):
        return f" at step {int(last)}"
    steps = [folder.tables[n]["step"].max() for n in (io.STEPS, io.METRICS)
             if n in folder.tables and len(folder.tables[n]) and "step" in folder.tables[n]]
    return f" at step {int(max(steps))}" if steps else ""
