"""Result files: written atomically (temporary file in the same folder, fsync, rename), so a run killed
at any moment leaves either the old file or the new one, never half of one.

A results folder always has a ``manifest.json`` whose ``status`` says whether it is ``running``,
``complete``, ``failed`` or ``interrupted``; readers trust the tables only as far as that says.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .errors import ConfigError

if TYPE_CHECKING:  # only in annotations: reading a TOML file should not import pandas
    import pandas as pd

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

MAX_INPUT_BYTES = 16 << 20
"""The largest experiment, preset, convergence or manifest file read (TOML, JSON): such a file is a few kB."""
MAX_TABLE_BYTES = 2 << 30
"""The largest table read from a results folder or given as curves (parquet, CSV)."""
MAX_TEXT_BYTES = 8 << 30
"""The most training text read in all (``workload.data.path``): it is held in memory, a byte a token."""


@contextlib.contextmanager
def open_input(path: str | os.PathLike, *, max_bytes: int = MAX_INPUT_BYTES, follow: bool = True,
               what: str = "file") -> Iterator[BinaryIO]:
    """``path`` opened for reading, only if it is a regular file of at most ``max_bytes``: a FIFO would
    block forever and ``/dev/zero`` never ends. Without ``follow``, a symbolic link is refused (a results
    folder never holds one: what a link points at is not ours to read). ConfigError names the file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as err:
        rule = "is a symbolic link; a results folder holds none" if not follow and Path(path).is_symlink() \
            else f"cannot read: {err.strerror}"
        raise ConfigError(rule, source=str(path)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"is not a regular file (a {_kind(info.st_mode)}); give a {what}", source=str(path))
        if info.st_size > max_bytes:
            raise ConfigError(f"is {info.st_size:,} bytes, over the limit of {max_bytes:,} for a {what} "
                              "(docs/limits.md)", source=str(path))
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_input(path: str | os.PathLike, *, max_bytes: int = MAX_INPUT_BYTES, follow: bool = True,
               what: str = "file") -> bytes:
    """The bytes of ``path`` (``open_input``'s checks); a file that grew past ``max_bytes`` is refused too."""
    with open_input(path, max_bytes=max_bytes, follow=follow, what=what) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"is over the limit of {max_bytes:,} bytes for a {what} (docs/limits.md)",
                          source=str(path))
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "link")):
        if test(mode):
            return name
    return "special file"


def expand_user(path: str, key: str, source: str) -> Path:
    """``~`` and ``~user`` expanded; a user without a home is a ConfigError, not a RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise ConfigError("names a home folder (~) that cannot be found", key=key, value=path,
                          source=source) from None


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
        try:
            os.replace(tmp_path, path)
        except OSError as err:  # name the file the caller asked for, not our temporary one
            raise OSError(err.errno, err.strerror, str(path)) from None
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


def read_json(path: str | os.PathLike, *, follow: bool = True) -> dict:
    """A JSON file (``read_input``'s checks); JSON nested too deeply to parse is a ValueError."""
    data = read_input(path, follow=follow, what="JSON file")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def update_manifest(folder: str | os.PathLike, **fields: object) -> dict:
    """Merge ``fields`` into ``folder/manifest.json`` (created when absent), atomically."""
    path = Path(folder) / MANIFEST
    manifest = read_json(path, follow=False) if os.path.lexists(path) else {}
    manifest.update(fields)
    write_json(path, manifest)
    return manifest
