"""Per-rank checkpoints: everything needed to continue a run so that it takes exactly the same steps.

Each rank saves its own state (local models differ between syncs): model x_k, inner optimizer, the
algorithm's extra state (global model z, outer momentum, grad scaler), RNG states, data position,
the next step and the run clock. Files are ``<out>/checkpoints/<algorithm>/rank<r>.step<NNNNNNNN>.pt``,
written with ``torch.save`` to a temporary file and moved into place with ``os.replace`` (a killed
writer leaves the previous checkpoint intact). The last ``KEEP`` are kept, so that ranks killed a
moment apart still share one complete checkpoint.

Beside each file, ``<name>.pt.json`` records its sha256, written once the file is in place: a checkpoint
counts only when its bytes still hash to it (a disk or copy that damaged it, a writer killed before the
record), and a resumed run falls back to the newest checkpoint that every rank holds intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

KEEP = 2
_NAME = re.compile(r"rank(\d+)\.step(\d+)\.pt$")


def folder(out: Path, algorithm: str) -> Path:
    return Path(out) / "checkpoints" / algorithm


def path(out: Path, algorithm: str, rank: int, step: int) -> Path:
    return folder(out, algorithm) / f"rank{rank}.step{step:08d}.pt"


def checksum_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".json")


def steps_saved(out: Path, algorithm: str, rank: int) -> list[int]:
    """Steps (the next step to take) of this rank's checkpoint files, ascending, intact or not."""
    found = []
    for f in folder(out, algorithm).glob(f"rank{rank}.step*.pt"):
        m = _NAME.search(f.name)
        if m and int(m.group(1)) == rank:
            found.append(int(m.group(2)))
    return sorted(found)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(out: Path, algorithm: str, rank: int, step: int, state: dict) -> Path:
    """Write ``state`` atomically as the checkpoint taken before ``step``, then its checksum; drop all
    but the last KEEP."""
    target = path(out, algorithm, rank, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, lambda f: torch.save(state, f))
    record = json.dumps({"sha256": _sha256(target)}).encode()
    _write_atomically(checksum_path(target), lambda f: f.write(record))
    for old in steps_saved(out, algorithm, rank)[:-KEEP]:
        path(out, algorithm, rank, old).unlink(missing_ok=True)
        checksum_path(path(out, algorithm, rank, old)).unlink(missing_ok=True)
    return target


def _write_atomically(target: Path, write: Callable) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint file, or None when its bytes hash to the sha256 recorded for it."""
    try:
        recorded = json.loads(checksum_path(checkpoint).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable sha256 record beside it (its writer may have been killed)"
    try:
        actual = _sha256(checkpoint)
    except OSError as err:
        return f"unreadable: {err.strerror}"
    return None if actual == recorded else "its sha256 differs from the one recorded when it was written"


def intact_steps(out: Path, algorithm: str, rank: int) -> list[int]:
    """Steps of this rank's intact checkpoints, ascending; each damaged one is named in a line on stderr."""
    intact = []
    for step in steps_saved(out, algorithm, rank):
        problem = damage(path(out, algorithm, rank, step))
        if problem is None:
            intact.append(step)
        else:
            # "[algorithm] " as in the progress lines, which the launcher shows on the terminal.
            print(f"[{algorithm}] rank {rank}: skipping damaged checkpoint {path(out, algorithm, rank, step)}: "
                  f"{problem}", file=sys.stderr, flush=True)
    return intact


def newest_common(mine: list[int], min_over_ranks: Callable[[int], int]) -> int:
    """The newest step in every rank's ``mine`` (-1 when there is none). Each round every rank offers its
    newest step at or before the bound, and the smallest offer becomes the bound, until no rank lowers
    it; all ranks see the same minima, so they stop in the same round."""
    bound: float = math.inf
    while True:
        offer = max((s for s in mine if s <= bound), default=-1)
        agreed = min_over_ranks(offer)
        if agreed == bound or agreed < 0:
            return agreed
        bound = agreed


def load(out: Path, algorithm: str, rank: int, step: int, device: torch.device) -> dict:
    # weights_only=False: the file holds RNG states and numpy objects we wrote ourselves.
    return torch.load(path(out, algorithm, rank, step), map_location=device, weights_only=False)
