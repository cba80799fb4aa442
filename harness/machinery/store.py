"""Result folders: one manifest, the tables, nothing half-written.

Every command that produces results writes a folder::

    manifest.json   kind (simulate | sweep | run | validate | calibrate), status (running | complete |
                    failed | interrupted | diverged), the resolved experiment, versions, git revision, times
    experiment.toml the resolved experiment, loadable with ``palsgd simulate experiment.toml``
    <tables>        runs.csv, steps.parquet, metrics.csv, sweep.csv, comparison.csv, ... (schema.py)

The manifest is written first with status ``running`` and rewritten at the end, so a folder whose
writer was killed says so; every file is replaced atomically (``core.io``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pandas as pd
import simpy
import tomli_w

from ... import __version__
from ...core import io
from ...core.config import Experiment
from ...core.errors import ConfigError
from ...core.results import KINDS, STATUSES, effective_status, read_manifest, read_table  # noqa: F401 (read side)


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
    out = {"palsgd": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
           "pandas": pd.__version__, "simpy": simpy.__version__}
    torch = sys.modules.get("torch")  # reported only when loaded: harness code never imports torch
    if torch is not None:
        out["torch"] = torch.__version__
    return out


LOCK = ".palsgd.lock"
_held: dict[Path, int] = {}
"""Folders this process has locked -> the open lock file; the OS releases the lock when the process
ends, however it ends, so a killed command never leaves a folder locked."""


def prepare(folder: str | Path, *, overwrite: bool = False, resume: bool = False, kind: str | None = None,
            exp: Experiment | None = None, job: str = "") -> Path:
    """Make ``folder`` ready for new results without losing old ones, and lock it for this process.

    A folder that already holds results is refused, unless ``resume`` (continue it: only a ``kind``
    folder of the same ``exp``, when given) or ``overwrite`` (the old folder is moved aside to
    ``<folder>.old-<time>``, not deleted). ``job`` identifies the command (see ``lock``).
    """
    folder = Path(folder)
    has_results = (folder / io.MANIFEST).exists()
    if resume and overwrite:
        raise ConfigError("--resume continues the results in --out, --overwrite moves them aside: give one",
                          key="--overwrite", source="command line")
    if resume and not has_results:
        raise ConfigError("holds no results to resume", key="--out", value=str(folder), source="command line")
    if has_results and not (resume or overwrite):
        raise ConfigError("already holds results; choose another --out, or pass --overwrite to move "
                          "them aside", key="--out", value=str(folder), source="command line")
    if folder.exists() and not folder.is_dir():
        raise ConfigError("is a file, not a folder", key="--out", value=str(folder), source="command line")
    folder.mkdir(parents=True, exist_ok=True)
    lock(folder, job)
    if resume:
        check_resumable(folder, kind, exp)
    elif has_results:
        unlock(folder)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        shutil.move(str(folder), f"{folder}.old-{stamp}")
        folder.mkdir(parents=True)
        lock(folder, job)
    return folder


def lock(folder: Path, job: str = "") -> None:
    """Hold ``folder``'s exclusive lock until this process ends; a second command gets a ConfigError.

    The lock file records the holder (pid, host, ``job``): the launchers of one multi-node job share a
    rendezvous endpoint and job id, which is what would let them share a folder."""
    key = folder.resolve()
    if key in _held:
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"is in use by another palsgd command ({holder}); wait for it or choose another "
                          "--out", key="--out", value=str(folder), source="command line") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": platform.node(), "job": job}).encode(), 0)
    _held[key] = fd


def join(folder: str | Path, job: str) -> Path:
    """Let another launcher of a multi-node ``job`` write into ``folder``, which node 0 locks (``prepare``).

    A folder held by any other command is refused. The joiner holds no lock itself: node 0 may reach the
    folder after it, and must still be able to lock it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free: no command holds the folder (released below)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
        try:
            holder_job = json.loads(holder).get("job")
        except ValueError:
            holder_job = None
        if holder_job != job:
            raise ConfigError(f"is in use by another palsgd command ({holder}), not by this job ({job}); the "
                              "nodes of one job share --rdzv-endpoint: wait for it or choose another --out",
                              key="--out", value=str(folder), source="command line") from None
    finally:
        os.close(fd)
    return folder


def unlock(folder: Path) -> None:
    fd = _held.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)


def check_resumable(folder: Path, kind: str | None, exp: Experiment | None) -> None:
    """Only a folder of the same kind and the same experiment can be continued: a run resumed with
    another budget would mix two learning-rate schedules in one table."""
    manifest = read_manifest(folder)
    source = str(folder / io.MANIFEST)
    if kind is not None and manifest["kind"] != kind:
        raise ConfigError(f"is a {manifest['kind']} folder; --resume continues a {kind} folder",
                          source=str(folder))
    if exp is None:
        return
    old, new = _flat(manifest.get("experiment", {})), _flat(exp.to_dict())
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            raise ConfigError(f"this command gives {new.get(key)!r}, the run to resume has {old.get(key)!r}; "
                              "resume with the same experiment, or choose another --out", key=key,
                              source=source)


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
