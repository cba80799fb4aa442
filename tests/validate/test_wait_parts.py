"""benchmarks/wait_parts.py: a DDP wait split into what the compute durations explain and the start skew."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "wait_parts.py"


def _module():
    spec = importlib.util.spec_from_file_location("wait_parts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_wait_is_durations_plus_the_skew_of_leaving_the_last_allreduce():
    """Two workers, two steps. Step 0: both start at 0, worker 1 computes 0.3 s longer. Step 1: worker 0
    leaves step 0's all-reduce 0.1 s late, both compute 1 s, so worker 1 waits 0.1 s with equal durations."""
    rows = []
    for worker, (c0, start1) in enumerate(((1.0, 2.1), (1.3, 2.0))):
        rows += [(worker, 0, "compute", 0.0, c0), (worker, 0, "allreduce", 1.3, start1),
                 (worker, 1, "compute", start1, start1 + 1.0), (worker, 1, "allreduce", 3.1, 3.5)]
    steps = pd.DataFrame(rows, columns=["worker", "step", "phase", "start_s", "end_s"])
    waits = pd.DataFrame([(0, 0, "wait", 1.0, 1.3), (1, 1, "wait", 3.0, 3.1)], columns=steps.columns)
    got = _module().parts(pd.concat([steps, waits], ignore_index=True))
    assert got["wait_measured_s"] == pytest.approx(0.2)  # (0.3 + 0.1) / 2 workers
    assert got["from_durations_s"] == pytest.approx(0.15)  # only step 0's 0.3 s, over 2 workers
    assert got["start_skew_s"] == pytest.approx(0.05)
    assert got["allreduce_end_spread_ms"] == pytest.approx(50.0)  # median of 100 ms and 0 ms
