"""A diverging run stops at the first non-finite loss: status "diverged" and the step, for the CLI's one line."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from palsgd.harness import store
from palsgd.harness.launch import RunFailed, run_real


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
    assert metrics["step"].max() < step < 29  # stopped early, with no row of the diverged step
    assert metrics["loss"].notna().all()  # nothing non-finite for time-to-target to trip over
