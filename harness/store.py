"""Result folders: one manifest, the tables, nothing half-written.

Every command that produces results writes a folder::

    manifest.json   kind (simulate | sweep | run | validate | calibrate), status (running | complete |
                    failed | interrupted), the resolved experiment, versions, git revision, times
    experiment.toml the resolved experiment, loadable with ``palsgd simulate experiment.toml``
    <tables>        runs.csv, steps.parquet, metrics.csv, sweep.csv, comparison.csv, ... (schema.py)

The manifest is written first with status ``running`` and rewritten at the end, so a folder whose
writer was killed says so; every file is replaced atomically (``core.io``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import tomli_w

from ..core import io
from ..core.config import Experiment
from ..core.errors import ConfigError
from ..core.procs import pid_alive

KINDS = ("simulate", "sweep", "run", "validate", "calibrate")
STATUSES = ("running", "complete", "failed", "interrupted")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def git_revision() -> str:
    """The revision of the palsgd checkout this code runs from, or "unknown"."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        rev = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if out.returncode == 0 and rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    import numpy
    import simpy

    from .. import __version__

    out = {"palsgd": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
           "pandas": pd.__version__, "simpy": simpy.__version__}
    torch = sys.modules.get("torch")  # reported only when loaded: harness code never imports torch
    if torch is not None:
        out["torch"] = torch.__version__
    return out


def prepare(folder: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Make ``folder`` ready for new results without losing old ones.

    A folder that already holds results is refused, unless ``resume`` (continue it) or ``overwrite``
    (the old folder is moved aside to ``<folder>.old-<time>``, not deleted).
    """
    folder = Path(folder)
    if (folder / io.MANIFEST).exists() and not resume:
        if not overwrite:
            raise ConfigError("already holds results; choose another --out, or pass --overwrite to move "
                              "them aside", key="--out", value=str(folder), source="command line")
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        shutil.move(str(folder), f"{folder}.old-{stamp}")
    elif folder.exists() and not folder.is_dir():
        raise ConfigError("is a file, not a folder", key="--out", value=str(folder), source="command line")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start(folder: str | Path, kind: str, exp: Experiment | None = None, **fields) -> Path:
    """Write the manifest with status ``running`` (and experiment.toml) before any table."""
    if kind not in KINDS:
        raise ValueError(kind)
    folder = Path(folder)
    manifest = {"kind": kind, "status": "running", "started_at": now(), "ended_at": None,
                "command": sys.argv, "git_revision": git_revision(), "versions": versions(),
                "host": platform.node(), "pid": os.getpid(), **fields}
    if exp is not None:
        manifest["experiment"] = exp.to_dict()
        io.write_text(folder / io.EXPERIMENT, tomli_w.dumps(exp.to_dict()))
    io.write_json(folder / io.MANIFEST, manifest)
    return folder


def write_table(folder: str | Path, name: str, df: pd.DataFrame) -> Path:
    path = Path(folder) / name
    if name.endswith(".parquet"):
        return io.write_parquet(path, df)
    return io.write_csv(path, df)


def finish(folder: str | Path, status: str = "complete", **fields) -> dict:
    if status not in STATUSES:
        raise ValueError(status)
    return io.update_manifest(folder, status=status, ended_at=now(), versions=versions(), **fields)


def effective_status(manifest: dict) -> str:
    """The status to show: a ``running`` folder whose writer is dead on this host was interrupted."""
    status = manifest.get("status", "interrupted")
    if status != "running":
        return status
    pid, host = manifest.get("pid"), manifest.get("host")
    if host == platform.node() and isinstance(pid, int) and not pid_alive(pid):
        return "interrupted"
    return status


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a results folder; ConfigError when it is missing or unreadable."""
    path = Path(folder) / io.MANIFEST
    try:
        manifest = io.read_json(path)
    except FileNotFoundError:
        raise ConfigError("not a palsgd results folder (no manifest.json)", source=str(folder)) from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"unreadable manifest: {err}", source=str(path)) from None
    if not isinstance(manifest, dict) or manifest.get("kind") not in KINDS:
        raise ConfigError(f"manifest kind must be one of {KINDS}", source=str(path))
    return manifest


def read_table(folder: str | Path, name: str) -> pd.DataFrame | None:
    """A table of a results folder, or None when it was never written."""
    path = Path(folder) / name
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
    except Exception as err:  # a foreign or damaged file: say which, never a traceback
        raise ConfigError(f"unreadable table: {err}", source=str(path)) from None
