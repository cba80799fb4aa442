"""The report of a run with ``sync_every = "balanced"`` shows each worker's local steps and barrier waits."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from palsgd.core import io
from palsgd.reports.render import render_report


def test_the_report_shows_the_slow_worker_s_fewer_steps_and_the_waits(tmp_path):
    out = tmp_path / "sim"
    subprocess.run([sys.executable, "-m", "palsgd.cli", "simulate", "--cluster", "cpu-4rank-gloo", "--workload",
                    "gpt-tiny", "--algorithms", "ddp,diloco", "--steps", "24", "--set", "algorithm.sync_every=8",
                    "--set", "algorithm.sync_every=balanced", "--set", "algorithm.warmup_steps=0",
                    "--set", "cluster.variability.slow_workers=1", "--set", "cluster.variability.slow_factor=2",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    steps = pd.read_parquet(out / io.STEPS)
    html = render_report([out], tmp_path / "report.html").read_text()
    assert "Balanced H per worker" in html and "balanced H: local steps and barrier waits per worker" in html
    computed = steps[(steps.algorithm == "diloco") & (steps.phase == "compute")].groupby("worker").size()
    assert list(computed) == [24, 24, 24, 12]  # H = 8, the last worker 2x slower: 4 of each 8 steps
    for n in computed:
        assert f'data-value="{float(n)}"' in html
