"""A diverging run stops at the first non-finite loss: status "diverged" and the step, for the CLI's one line."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from palsgd.harness.commands.targets import time_to_target
from palsgd.harness.machinery import store
from palsgd.harness.machinery.launch import RunFailed, run_real


@pytest.mark.slow
def test_a_diverging_run_stops_with_status_diverged(tiny, tmp_path):
    exp = tiny(["ddp"], steps=30, train={"lr": 1e6})
    with pytest.raises(RunFailed) as info:
        run_real(exp, tmp_path, nproc_per_node=2, timeout_s=60.0)
    err = info.value
    assert err.status == "diverged"  # the CLI prints "palsgd: run diverged: <this>" and exits 1
    assert re.fullmatch(r"ddp at step \d+: loss is (nan|inf)", str(err)), str(err)
    step = err.failure["step"]
    manifest = store.read_manifest(tmp_path)
    assert manifest["status"] == "diverged"
    assert manifest["failure"]["kind"] == "diverged" and manifest["failure"]["step"] == step
    assert manifest["algorithms"]["ddp"]["status"] == "diverged"
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["step"].max() == step < 29  # stopped early; the diverged step's row is kept
    assert metrics[metrics["step"] < step]["loss"].map(math.isfinite).all()
    # Time-to-target reads the curve up to the divergence, not its NaN: a target the first step reached.
    table = time_to_target(tmp_path, float(metrics[metrics["step"] == 0]["loss"].max()))
    assert (table[table["source"] == "real"]["step_at_target"] == 0).all()
