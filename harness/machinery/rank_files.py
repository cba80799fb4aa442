"""What the ranks of a real run left in ``OUT/ranks/<algorithm>/``, read by the launcher: heartbeats while
it runs; then, once every rank's files are there (on a shared file system they may arrive late), the merged
step and metrics tables, the steps they reach, and the ranks that were slow."""

from __future__ import annotations

import json
import time
from io import StringIO
from pathlib import Path

import pandas as pd

from ...core import io, schema
from ...core.errors import ConfigError
from .dilation import undilate

SLOW_SKEW = 1.5
"""A rank whose mean compute time exceeds the median rank's by this factor is reported as slow."""
SHARED_FS_WAIT_S = 60.0
"""How long a launcher waits for the other nodes' files to show in ``--out`` (a shared file system may
cache a folder's listing that long); ``timeout_s`` caps it."""
RANK_FILES = ("steps.parquet", "metrics.csv")


def read_heartbeats(folder: Path) -> dict[int, dict]:
    beats = {}
    for f in folder.glob("rank*.progress.json"):
        try:
            beat = json.loads(io.read_input(f, follow=False, what="heartbeat"))
            beats[int(beat["rank"])] = beat
        except (OSError, ValueError, KeyError, ConfigError):
            continue  # being replaced right now, or not a file of ours
    return beats


def merge(out: Path, names: list[str], groups: dict[str, tuple[int, int]] | None = None,
          dilation: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate the per-rank files of ``names`` into one step table and one metrics table, on the
    emulated cluster's clock: times measured under time dilation are divided by it here, the one place
    where the ranks' files become the run's tables (``dilation.py``).

    A DDP step has no barrier of its own: a fast rank's exposed all-reduce also times its wait for the
    slowest rank's gradients. Carved out as ``wait`` here (``schema.split_ddp_wait``), where every rank's
    rows first meet on the common clock, so that the real table compares with the simulator's; ``groups``:
    the algorithms whose local DDP steps span a replica group only (``core.groups.ddp_spans``)."""
    steps, metrics = [], []
    for name in names:
        folder = out / "ranks" / name
        steps += [_read_rank_parquet(f) for f in sorted(folder.glob("rank*.steps.parquet"))]
        metrics += [read_rank_csv(f) for f in sorted(folder.glob("rank*.metrics.csv"))]
    steps = [undilate(s, dilation) for s in steps if len(s)]
    steps_df = schema.split_ddp_wait(pd.concat(steps, ignore_index=True), groups) if steps else schema.empty_steps()
    metrics_df = undilate(pd.concat(metrics, ignore_index=True), dilation) if metrics else \
        pd.DataFrame(columns=list(schema.METRIC_COLUMNS))
    return steps_df, metrics_df


def _read_rank_parquet(path: Path) -> pd.DataFrame:
    """A rank's step table: a regular file of ours (no link followed), of at most a table's size."""
    with io.open_input(path, max_bytes=io.MAX_TABLE_BYTES, follow=False, what="rank's step table") as f:
        return pd.read_parquet(f)


def read_rank_csv(path: Path) -> pd.DataFrame:
    """A rank's CSV without the row it was writing when it died (a row ends with its newline): a partial
    row would read as a step with missing values. A regular file of ours only (no link followed)."""
    text = io.read_input(path, max_bytes=io.MAX_TABLE_BYTES, follow=False, what="rank's metrics").decode(
        errors="replace")
    complete = text[:text.rfind("\n") + 1]
    if "\n" not in complete:  # not even the header made it
        return pd.DataFrame(columns=list(schema.METRIC_COLUMNS))
    return pd.read_csv(StringIO(complete))


def kept_last_steps(steps: pd.DataFrame, names: list[str]) -> dict[str, int]:
    """Per algorithm, the last step that every rank's kept rows reach (-1: none)."""
    last = {}
    for name in names:
        rows = steps[steps["algorithm"] == name]
        last[name] = int(rows.groupby("worker")["step"].max().min()) if len(rows) else -1
    return last


def slow_ranks(steps: pd.DataFrame) -> list[dict]:
    """Ranks whose median compute phase exceeds the median of the other ranks' by SLOW_SKEW, with the ratio
    (against the others, not all ranks: with two ranks a median that includes the slow one hides it)."""
    out = []
    compute = steps[steps["phase"] == "compute"]
    for name, g in compute.groupby("algorithm"):
        per_rank = (g["end_s"] - g["start_s"]).groupby(g["worker"]).median()  # robust to spikes
        for rank, mean in per_rank.items():
            others = float(per_rank.drop(rank).median()) if len(per_rank) > 1 else 0.0
            if others > 0 and mean / others >= SLOW_SKEW:
                out.append({"algorithm": name, "rank": int(rank), "compute_ratio": round(mean / others, 2)})
    return out


def missing_ranks(out: Path, names: list[str], world: int) -> dict[str, list[int]]:
    """Per algorithm, the ranks whose files are not in ``out`` (empty when every rank's are)."""
    missing = {}
    for name in names:
        folder = out / "ranks" / name
        lost = [r for r in range(world) if not all((folder / f"rank{r}.{f}").exists() for f in RANK_FILES)]
        if lost:
            missing[name] = lost
    return missing


def _wait_until(done, wait_s: float) -> bool:
    """Poll ``done()`` for up to ``wait_s``; whether it came true."""
    deadline = time.monotonic() + wait_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def missing_ranks_failure(out: Path, names: list[str], world: int, wait_s: float) -> dict | None:
    """The lead's check before merging: every rank of every algorithm wrote its files to ``out``. Ranks
    another node hosted are missing when ``out`` is a folder of each node's own (no shared file system)."""
    if _wait_until(lambda: not missing_ranks(out, names, world), wait_s):
        return None
    missing = missing_ranks(out, names, world)
    lost = ", ".join(f"{name} ranks {ranks}" for name, ranks in missing.items())
    return {"algorithm": next(iter(missing)), "kind": "missing ranks", "rank": None, "step": None,
            "message": f"no files from {lost} of {world} in {out} after {wait_s:g} s: --out must be a "
                       "folder on a file system all nodes share"}


def missing_lead_failure(out: Path, names: list[str], wait_s: float) -> dict | None:
    """The other nodes' check: the lead's manifest is in ``out``, so the lead sees what they wrote."""
    if _wait_until(lambda: (out / io.MANIFEST).exists(), wait_s):
        return None
    return {"algorithm": ", ".join(names), "kind": "not shared", "rank": None, "step": None,
            "message": f"{out} holds no manifest from the launcher with --node-rank 0 after {wait_s:g} s: "
                       "--out must be a folder on a file system all nodes share"}
