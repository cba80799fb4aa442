"""Result files: written atomically (temporary file in the same folder, fsync, rename), so a run killed
at any moment leaves either the old file or the new one, never half of one.

A results folder always has a ``manifest.json`` whose ``status`` says whether it is ``running``,
``complete``, ``failed`` or ``interrupted``; readers trust the tables only as far as that says.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .errors import ConfigError

MANIFEST = "manifest.json"
RUNS = "runs.csv"
SPREAD = "spread.csv"  # Monte-Carlo percentiles per algorithm (schema.spread), with several repeats
STEPS = "steps.parquet"
SENSITIVITY = "sensitivity.csv"  # speedups around a simulated point (harness/commands/sensitivity.py)
SENSITIVITY_CROSSOVERS = "sensitivity_crossovers.csv"
TIMELINE = "timeline.parquet"  # the first steps of a run too large to keep every row
METRICS = "metrics.csv"
TRACE = "trace.json"
EXPERIMENT = "experiment.toml"


def check_writable(path: str | os.PathLike, key: str) -> None:
    """A file can be written at ``path`` (its folder exists or can be made): checked before minutes of
    work, not after. Makes nothing."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot be made: {folder} is a file, not a folder", key=key, value=str(path),
                          source="command line")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError("cannot be written (permission denied)", key=key, value=str(path),
                          source="command line")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then move the finished file over ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the file the caller asked for, not our temporary one
        raise OSError(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: df.to_csv(p, index=False))


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: df.to_parquet(p, index=False))


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def update_manifest(folder: str | os.PathLike, **fields: object) -> dict:
    """Merge ``fields`` into ``folder/manifest.json`` (created when absent), atomically."""
    path = Path(folder) / MANIFEST
    manifest = read_json(path) if path.exists() else {}
    manifest.update(fields)
    write_json(path, manifest)
    return manifest
