"""Per-rank checkpoints: everything needed to continue a run so that it takes exactly the same steps.

Each rank saves its own state (local models differ between syncs): model x_k, inner optimizer, the
algorithm's extra state (global model z, outer momentum, grad scaler), RNG states, data position,
the next step and the run clock. Files are ``<out>/checkpoints/<algorithm>/rank<r>.step<NNNNNNNN>.pt``,
written with ``torch.save`` to a temporary file and moved into place with ``os.replace`` (a killed
writer leaves the previous checkpoint intact). The last ``KEEP`` are kept, so that ranks killed a
moment apart still share one complete checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

KEEP = 2
_NAME = re.compile(r"rank(\d+)\.step(\d+)\.pt$")


def folder(out: Path, algorithm: str) -> Path:
    return Path(out) / "checkpoints" / algorithm


def path(out: Path, algorithm: str, rank: int, step: int) -> Path:
    return folder(out, algorithm) / f"rank{rank}.step{step:08d}.pt"


def steps_saved(out: Path, algorithm: str, rank: int) -> list[int]:
    """Steps (the next step to take) of this rank's complete checkpoints, ascending."""
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
    """Write ``state`` atomically as the checkpoint taken before ``step``; drop all but the last KEEP."""
    target = path(out, algorithm, rank, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in steps_saved(out, algorithm, rank)[:-KEEP]:
        path(out, algorithm, rank, old).unlink(missing_ok=True)
    return target


def load(out: Path, algorithm: str, rank: int, step: int, device: torch.device) -> dict:
    # weights_only=False: the file holds RNG states and numpy objects we wrote ourselves.
    return torch.load(path(out, algorithm, rank, step), map_location=device, weights_only=False)
