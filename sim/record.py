"""Where the engine writes what every worker did: phase totals always, step-table rows on request.

Every row goes through ``Recorder.rows`` or ``Recorder.grid``, which add it to the per-(worker,
phase) totals and, when recording, keep it; so the totals of a run that keeps no rows are the
totals ``schema.phase_totals`` computes from the rows of the same run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.schema import PHASES, STEP_COLUMNS

PHASE_INDEX = {name: i for i, name in enumerate(PHASES)}
_PHASE_NAMES = np.array(PHASES, dtype=object)
_PHASE_RANK = np.argsort(np.argsort(PHASES))  # alphabetical rank of each phase


class Recorder:
    def __init__(self, workers: int, record: bool):
        self.workers, self.record = workers, record
        shape = (len(PHASES), workers)
        self.duration = np.zeros(shape)
        self.bytes = np.zeros(shape)
        self.count = np.zeros(shape, dtype=np.int64)
        self.end_s = 0.0
        self.last_step = -1
        self._kept: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def rows(self, phase: str, workers, steps, start, end, nbytes=0.0) -> None:
        """One row per element of the 1-D arrays (scalars broadcast)."""
        workers = np.atleast_1d(np.asarray(workers, dtype=np.int64))
        n = len(workers)
        if n == 0:
            return
        start = np.broadcast_to(np.asarray(start, dtype=float), (n,))
        end = np.broadcast_to(np.asarray(end, dtype=float), (n,))
        steps = np.broadcast_to(np.asarray(steps, dtype=np.int64), (n,))
        nbytes = np.broadcast_to(np.asarray(nbytes, dtype=float), (n,))
        p = PHASE_INDEX[phase]
        self.duration[p] += np.bincount(workers, end - start, self.workers)
        self.bytes[p] += np.bincount(workers, nbytes, self.workers)
        self.count[p] += np.bincount(workers, minlength=self.workers)
        self._extent(end.max(), steps.max())
        if self.record:
            self._kept.append((np.full(n, p, np.int8), workers, steps.copy(), start.copy(), end.copy(), nbytes.copy()))

    def grid(self, phase: str, first_step: int, start: np.ndarray, length, mask=None, nbytes=0.0) -> None:
        """Rows for a [workers, steps] block starting at ``first_step``; ``length`` and ``nbytes``
        broadcast to the block, ``mask`` (bool [workers, steps]) keeps only some cells."""
        shape = start.shape
        length = np.broadcast_to(np.asarray(length, dtype=float), shape)
        if mask is None:
            mask = np.ones(shape, dtype=bool)
        if not mask.any():
            return
        p = PHASE_INDEX[phase]
        self.duration[p] += np.where(mask, length, 0.0).sum(axis=1)
        if np.any(nbytes):
            self.bytes[p] += np.where(mask, nbytes, 0.0).sum(axis=1)
        self.count[p] += np.count_nonzero(mask, axis=1)
        last = int(np.flatnonzero(mask.any(axis=0))[-1])
        self._extent(np.where(mask, start + length, -np.inf).max(), first_step + last)
        if self.record:
            w, t = np.nonzero(mask)
            s = start[w, t]
            b = np.broadcast_to(np.asarray(nbytes, dtype=float), shape)[w, t]
            self._kept.append((np.full(len(w), p, np.int8), w, first_step + t, s, s + length[w, t], b))

    def _extent(self, end: float, step: int) -> None:
        self.end_s = max(self.end_s, float(end))
        self.last_step = max(self.last_step, int(step))

    def totals(self) -> dict[str, np.ndarray]:
        """Per-(worker, phase) totals as columns, rows only where the phase occurred, ordered by
        worker then phase name (as ``schema.phase_totals`` orders them)."""
        p, w = np.nonzero(self.count)
        order = np.lexsort((_PHASE_RANK[p], w))
        p, w = p[order], w[order]
        return {"worker": w.astype(np.int64), "phase": _PHASE_NAMES[p], "duration_s": self.duration[p, w],
                "bytes": self.bytes[p, w], "count": self.count[p, w]}

    def steps(self, source: str, algorithm: str, run: int) -> pd.DataFrame | None:
        """The step table of this run, rows ordered by worker, start time and phase; None when not
        recording."""
        if not self.record:
            return None
        if not self._kept:
            return pd.DataFrame({c: [] for c in STEP_COLUMNS})
        p, w, t, s, e, b = (np.concatenate([k[i] for k in self._kept]) for i in range(6))
        order = np.lexsort((p, s, w))
        return pd.DataFrame({
            "source": source, "algorithm": algorithm, "run": run, "worker": w[order], "step": t[order],
            "phase": np.array(PHASES, dtype=object)[p[order]], "start_s": s[order], "end_s": e[order],
            "bytes": b[order],
        })[list(STEP_COLUMNS)]
