"""The report of a run with ``sync_every = "balanced"`` shows each worker's local steps and barrier waits."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from palsgd.core import io
from palsgd.core.config import load
from palsgd.harness.commands import explore
from palsgd.reports import explore as explore_page
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


def test_the_explore_grid_ends_the_h_axis_with_balanced_on_a_cluster_of_mixed_speeds():
    exp = load(workload="gpt-neo-8m", algorithms=["ddp", "diloco"],
               overrides=["algorithm.sync_every=16", "cluster.variability.slow_workers=1",
                          "cluster.variability.slow_factor=1.5"])
    grid_axes = explore.axes(exp)
    assert dict(grid_axes)["algorithm.sync_every"] == [8, 16, 32, "balanced"]
    # the sensitivity's curves run along numbers: "balanced" is a value of the explore page alone
    assert dict(explore.axes(exp, sliced=True))["algorithm.sync_every"] == [4, 8, 16, 32, 64]
    uniform = load(workload="gpt-neo-8m", algorithms=["ddp", "diloco"], overrides=["algorithm.sync_every=16"])
    assert "balanced" not in dict(explore.axes(uniform))["algorithm.sync_every"]


def test_the_explore_page_orders_numbers_then_words():
    table = pd.DataFrame({"algorithm.sync_every": ["balanced", 16, 8, "balanced", 16, 8],
                          "cluster.nodes": [1, 1, 1, 2, 2, 2], "algorithm": "diloco", "run": 0,
                          **{c: 1.0 for c in ("speedup_vs_ddp", "wall_clock_s", "steps")}})
    for _, column, _, _ in explore_page.CATEGORIES:
        table[column] = 0.0
    axes = explore_page.payload(table, ["algorithm.sync_every", "cluster.nodes"], {"algorithm.sync_every": 8})["axes"]
    assert axes[0]["values"] == [8, 16, "balanced"] and axes[0]["start"] == 0  # the user's own H
