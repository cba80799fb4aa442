"""The read side of a results folder: its vocabulary, its manifest and its tables.

``harness/machinery/store.py`` writes results folders and ``reports/`` reads them; both use this module, so that
reports never depend on the harness that wrote the folder. The folder layout is described in
``harness/machinery/store.py``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pandas as pd

from . import io
from .errors import ConfigError
from .procs import pid_alive

KINDS = ("simulate", "sweep", "run", "validate", "calibrate")
STATUSES = ("running", "complete", "failed", "interrupted", "diverged")
"""``diverged``: a worker saw a non-finite loss or parameter and the run was stopped at that step."""


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
    if not os.path.lexists(path):
        raise ConfigError("not a palsgd results folder (no manifest.json)", source=str(folder))
    try:
        manifest = io.read_json(path, follow=False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"unreadable manifest: {err}", source=str(path)) from None
    if not isinstance(manifest, dict) or manifest.get("kind") not in KINDS:
        raise ConfigError(f"manifest kind must be one of {KINDS}", source=str(path))
    return manifest


def read_table(folder: str | Path, name: str, columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """A table of a results folder, or None when it was never written; ConfigError when it lacks one of
    ``columns`` (a foreign file under one of our names)."""
    path = Path(folder) / name
    if not os.path.lexists(path):
        return None
    df = read_table_file(path, follow=False)
    missing = [c for c in columns if c not in df]
    if missing:
        raise ConfigError(f"is not a palsgd table: it lacks the column(s) {', '.join(missing)}", source=str(path))
    return df


def read_table_file(path: Path, *, follow: bool = True) -> pd.DataFrame:
    """A parquet or CSV table (``io.open_input``'s checks: a regular file, of at most MAX_TABLE_BYTES);
    ConfigError naming the file when it is cut, damaged or foreign, never a traceback."""
    with io.open_input(path, max_bytes=io.MAX_TABLE_BYTES, follow=follow, what="table") as f:
        if path.suffix != ".parquet" and not _ends_with_newline(f):  # tables are written whole (core.io)
            raise ConfigError("truncated: its last row is incomplete", source=str(path))
        try:
            return pd.read_parquet(f) if path.suffix == ".parquet" else pd.read_csv(f)
        except Exception as err:  # a foreign or damaged file: say which, never a traceback
            raise ConfigError(f"unreadable table: {err}", source=str(path)) from None


def _ends_with_newline(f) -> bool:
    f.seek(0, 2)
    if f.tell() == 0:
        return True
    f.seek(-1, 2)
    last = f.read(1) == b"\n"
    f.seek(0)
    return last
