"""`time-to-target --export`: a convergence description from run folders, and reading it back."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from palsgd.core import config, convergence, io, schema
from palsgd.core.config import AlgorithmSpec
from palsgd.core.errors import ConfigError
from palsgd.harness.commands.convergence_export import export
from palsgd.harness.commands.targets import format_targets, time_to_target
from palsgd.harness.machinery import store

# Steps each algorithm needs to fall from 4.0 to the target 3.0 in the fake runs, by H.
STEPS_AT_TARGET = {"ddp": {4: 20, 16: 20, 32: 20}, "local_sgd": {4: 30, 16: 40, 32: 45},
                   "palsgd": {4: 25, 16: 50, 32: 55}}


def _fake_run(folder, sync_every, *, workers=2, batch=16):
    """A `palsgd run` folder whose held-out loss falls linearly, reaching 3.0 at STEPS_AT_TARGET."""
    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo", algorithms=list(STEPS_AT_TARGET),
                      steps=60, overrides=[f"algorithm.sync_every={sync_every}", f"cluster.gpus_per_node={workers}",
                                           f"workload.batch_per_worker={batch}"])
    store.start(folder, "run", exp)
    rows = []
    for algorithm, by_h in STEPS_AT_TARGET.items():
        for step in range(0, 61, 5):
            loss = 4.0 - step / by_h[sync_every]
            rows += [(("real", algorithm, 0, w, step, 0.1 * step, loss, 1e-3, loss)) for w in range(workers)]
    store.write_table(folder, io.METRICS, pd.DataFrame(rows, columns=list(schema.METRIC_COLUMNS)))
    store.finish(folder)
    return folder


def test_runs_with_different_h_give_a_function_of_h(tmp_path):
    folders = [_fake_run(tmp_path / f"h{h}", h) for h in (4, 16)]
    conv, notes = export(folders, 3.0)
    assert notes == [] and conv.ddp_steps == 20 and conv.ddp_workers == 2 and conv.target_loss == 3.0
    assert {(p.algorithm, p.sync_every, p.workers, p.p) for p in conv.points} == {
        ("local_sgd", 4, None, None), ("local_sgd", 16, None, None),
        ("palsgd", 4, None, None), ("palsgd", 16, None, None)}
    local = AlgorithmSpec(name="local_sgd", sync_every=16)
    assert conv.lookup(local, 2).steps_vs_ddp == pytest.approx(40 / 20)
    mid = conv.lookup(AlgorithmSpec(name="palsgd", sync_every=8), 2).steps_vs_ddp
    assert mid == pytest.approx(np.mean([25 / 20, 50 / 20]))  # halfway in log H
    assert conv.lookup(AlgorithmSpec(name="palsgd", sync_every=32), 2).steps_vs_ddp is None
    assert all(str(tmp_path) in p.source for p in conv.points)


def test_export_and_reimport_give_the_same_numbers(tmp_path):
    folders = [_fake_run(tmp_path / f"h{h}", h) for h in (4, 16)]
    conv, _ = export(folders, 3.0)
    path = tmp_path / "convergence.toml"
    path.write_text(conv.to_toml())
    back = convergence.load(path)
    assert back == conv
    for h in (4, 6, 11, 16):
        spec = AlgorithmSpec(name="palsgd", sync_every=h)
        assert back.lookup(spec, 2) == conv.lookup(spec, 2)


def test_cli_exports_and_refuses_folders_of_other_workloads(tmp_path):
    a = _fake_run(tmp_path / "a", 4)
    out = tmp_path / "conv.toml"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = [sys.executable, "-m", "palsgd.cli", "time-to-target"]
    r = subprocess.run([*cli, str(a), "--loss", "3.0", "--export", str(out), "--json"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ddp_steps"] == 20
    local = convergence.load(out).lookup(AlgorithmSpec(name="local_sgd", sync_every=123), 64)
    assert local.steps_vs_ddp == 1.5 and "assumed independent of H" in local.why

    other = tmp_path / "other"
    exp = config.load(workload="resnet-tiny", cluster="cpu-2core-gloo", steps=60)
    store.start(other, "run", exp)
    with pytest.raises(ConfigError, match="trains another workload"):
        export([a, other], 3.0)
    r = subprocess.run([*cli, str(a), str(other), "--loss", "3.0", "--export", str(out)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "trains another workload" in r.stderr and "Traceback" not in r.stderr


def test_ddp_must_reach_the_target(tmp_path):
    with pytest.raises(ConfigError, match=r"DDP does not reach loss 0\.5"):
        export([_fake_run(tmp_path / "a", 4)], 0.5)


def test_a_description_predicts_another_run(tmp_path):
    """`time-to-target RUN --convergence FILE`: the steps come from the description (DDP's steps x each
    algorithm's ratio), the times from the simulator, the error from the run."""
    conv, _ = export([_fake_run(tmp_path / "h4", 4)], 3.0)
    same = time_to_target(tmp_path / "h4", 3.0, described=conv).set_index(["source", "algorithm"])
    for algorithm, steps in STEPS_AT_TARGET.items():  # on its own run, the description is the curve
        assert same.loc[("convergence", algorithm), "step_at_target"] == pytest.approx(steps[4])
        assert same.loc[("convergence", algorithm), "time_to_target_s"] == pytest.approx(
            same.loc[("sim", algorithm), "time_to_target_s"])
        measured = same.loc[("real", algorithm), "time_to_target_s"]
        assert measured == pytest.approx(0.1 * steps[4])  # the fake run's clock
        assert same.loc[("convergence", algorithm), "error_vs_measured"] == pytest.approx(
            same.loc[("convergence", algorithm), "time_to_target_s"] / measured - 1)

    by_h, _ = export([tmp_path / "h4", _fake_run(tmp_path / "h16", 16)], 3.0)
    other = time_to_target(_fake_run(tmp_path / "w4h32", 32, workers=4), 3.0, described=by_h)
    rows = other[other["source"] == "convergence"].set_index("algorithm")
    # H = 32 lies outside the measured 4-16: no value, and the row says why
    assert math.isnan(rows.loc["palsgd", "time_to_target_s"])
    assert "sync_every = 32 is outside the measured range" in rows.loc["palsgd", "assumption"]
    assert rows.loc["ddp", "step_at_target"] == 20 and "assumed to hold on 4" in rows.loc["ddp", "assumption"]
    assert "palsgd     no prediction (see below)" in format_targets(other)
    with pytest.raises(ConfigError, match=r"for a loss of 3, not 2\.5"):
        time_to_target(tmp_path / "h4", 2.5, described=conv)


def test_cli_predicts_from_a_description(tmp_path):
    run = _fake_run(tmp_path / "a", 4)
    out = tmp_path / "conv.toml"
    export_cmd = [sys.executable, "-m", "palsgd.cli", "time-to-target", str(run), "--loss", "3.0"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    assert subprocess.run([*export_cmd, "--export", str(out)], env=env, timeout=120).returncode == 0
    r = subprocess.run([*export_cmd, "--convergence", str(out)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "predicted (steps from the convergence description)" in r.stdout and "vs measured" in r.stdout
    r = subprocess.run([*export_cmd, "--convergence", str(out), "--export", str(out)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "not both" in r.stderr


def test_the_batch_may_be_split_over_more_workers_at_the_same_global_batch(tmp_path):
    two = _fake_run(tmp_path / "2x16", 4)
    conv, _ = export([two, _fake_run(tmp_path / "4x8", 4, workers=4, batch=8)], 3.0)
    assert {p.workers for p in conv.points} == {2, 4} and "4 workers x 8 samples" in conv.points[-1].source
    export([two, _fake_run(tmp_path / "4x16", 4, workers=4)], 3.0)  # the same workers' batch: also one training
    with pytest.raises(ConfigError, match=r"global batch of 16 samples per step, .* with 32"):
        export([two, _fake_run(tmp_path / "4x4", 4, workers=4, batch=4)], 3.0)
