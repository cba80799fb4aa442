"""A real time-dilated run: 2 gloo ranks on emulated accelerators behind an emulated link, 2x slower; the
step table it stores is on the emulated cluster's clock (what was measured divided by 2)."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from palsgd.cli import main

COMPUTE_S = 0.1
STEPS = 8


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.usefixtures("netns_ok")
def test_a_dilated_run_stores_the_modelled_compute(tmp_path):
    """About 30-60 s. Each rank sleeps 2 x 0.1 s per step; divided by 2 the stored compute phase is the
    modelled 0.1 s plus the host's share halved. Without the division it would be 0.2 s."""
    out = tmp_path / "run"
    argv = ["run", "--workload", "gpt-tiny", "--algorithms", "local_sgd", "--steps", str(STEPS),
            "--nproc-per-node", "2", "--emulate-compute", "--emulate-network", "rate=1gbit,delay=1ms",
            "--time-dilation", "2", "--timeout-s", "120", "--out", str(out),
            "--set", f"cluster.compute.step_time_s={COMPUTE_S}", "--set", "cluster.compute.optimizer_time_s=0.005",
            "--set", "cluster.variability.jitter_cv=0", "--set", "cluster.variability.slow_workers=0",
            "--set", "cluster.variability.straggler_prob=0", "--set", "algorithm.warmup_steps=0"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "time dilation 2x" in result.output
    assert json.loads((out / "manifest.json").read_text())["time_dilation"] == 2.0
    steps = pd.read_parquet(out / "steps.parquet")
    compute = steps[steps["phase"] == "compute"]
    median_s = float((compute["end_s"] - compute["start_s"]).median())
    assert COMPUTE_S * 0.98 <= median_s <= COMPUTE_S * 1.4, median_s
