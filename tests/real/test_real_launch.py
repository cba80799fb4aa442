"""run_real end to end through torchrun on 2 gloo ranks: training, tables, faults, resume."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palsgd.core.errors import ConfigError
from palsgd.core.faults import FaultSpec
from palsgd.harness.commands.targets import time_to_target
from palsgd.harness.machinery import store
from palsgd.harness.machinery.launch import RunFailed, run_real
from palsgd.harness.machinery.rank_files import read_heartbeats
from palsgd.sim.engine import simulate


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.slow
def test_every_algorithm_lowers_the_held_out_loss(tiny, tmp_path):
    exp = tiny(["ddp", "local_sgd", "diloco", "palsgd"], steps=30, train={"eval_every": 30})
    result = run_real(exp, tmp_path, nproc_per_node=2)
    assert result.status == "complete"
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    steps = pd.read_parquet(tmp_path / "steps.parquet")
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs["algorithm"]) == ["ddp", "local_sgd", "diloco", "palsgd"]
    assert (runs["workers"] == 2).all() and (runs["steps"] == 30).all()
    for name, g in metrics.groupby("algorithm"):
        first = g[g["step"] == 0]["loss"].mean()  # the initial model's loss, ~ln(257) = 5.55
        final = g["eval_loss"].dropna()
        assert len(final) == 2 and final.iloc[0] == final.iloc[1], name  # mean over ranks, the same on both
        assert final.iloc[0] < first - 0.5, name
    assert set(steps["source"]) == {"real"}
    # 2 warm-up DDP steps + syncs (W = 2, H = 3): Local SGD after steps 2, 5, ..., 29 (PyTorch's averager:
    # 10), DiLoCo and PALSGD after H local steps, steps 4, 7, ..., 28 (9).
    syncs = runs.set_index("algorithm")["syncs"]
    assert syncs["local_sgd"] == 2 + 10 and syncs["diloco"] == syncs["palsgd"] == 2 + 9
    manifest = store.read_manifest(tmp_path)
    assert manifest["status"] == "complete" and manifest["launcher_pid"] == os.getpid()
    assert manifest["algorithms"]["palsgd"] == {"status": "complete", "last_step": 29}
    # Time-to-target from the measured curves: the one evaluation (after step 29) reaches the worst final loss.
    target = metrics["eval_loss"].max()
    table = time_to_target(tmp_path, target)
    real = table[table["source"] == "real"].set_index("algorithm")
    assert (real["step_at_target"] == 29).all()
    ends = metrics[metrics["step"] == 29].groupby("algorithm")["end_s"].mean()
    assert real["time_to_target_s"].to_dict() == pytest.approx(ends.to_dict())
    assert set(table["source"]) == {"real", "sim"} and (tmp_path / "targets.csv").exists()


def test_world_size_must_match_the_cluster(tiny, tmp_path):
    with pytest.raises(ConfigError, match="real world size"):
        run_real(tiny(["ddp"], workers=4), tmp_path, nproc_per_node=2)


def test_fault_text_is_validated():
    assert FaultSpec.parse("rank=1,step=5,kind=slow,factor=2") == FaultSpec(1, 5, "slow", 2.0)
    for bad in ("rank=1,step=5", "rank=x,step=5,kind=crash", "rank=1,step=5,kind=melt", "oops"):
        with pytest.raises(ConfigError):
            FaultSpec.parse(bad)


@pytest.mark.parametrize("kind", ["crash", "hang"])
def test_dead_or_hung_rank_is_detected_and_the_group_torn_down(tiny, tmp_path, kind):
    exp = tiny(["local_sgd"], steps=40, train={"checkpoint_every": 5})  # rank files flushed at checkpoints
    fault = FaultSpec.parse(f"rank=1,step=20,kind={kind}")
    with pytest.raises(RunFailed) as info:
        run_real(exp, tmp_path, nproc_per_node=2, fault=fault, timeout_s=6.0)
    failure = info.value.failure
    assert failure["kind"] == kind and failure["rank"] == 1 and failure["step"] <= 20
    manifest = store.read_manifest(tmp_path)
    assert manifest["status"] == "failed" and manifest["failure"]["kind"] == kind
    beats = read_heartbeats(tmp_path / "ranks" / "local_sgd")
    assert len(beats) == 2 and not any(_alive(b["pid"]) for b in beats.values())  # no orphans
    steps = pd.read_parquet(tmp_path / "steps.parquet")  # partial results kept
    assert 14 <= steps["step"].max() <= 20  # flushed at the checkpoint of step 15 or later


def test_slow_rank_is_reported(tiny, tmp_path):
    exp = tiny(["local_sgd"], steps=16)
    result = run_real(exp, tmp_path, nproc_per_node=2, fault=FaultSpec.parse("rank=0,step=0,kind=slow,factor=6"))
    assert [s["rank"] for s in result.slow_ranks] == [0]
    assert store.read_manifest(tmp_path)["slow_ranks"][0]["compute_ratio"] > 2


@pytest.mark.slow
def test_sparseloco_sends_through_torchrun_the_bytes_the_simulator_predicts(tiny, tmp_path):
    # DDP warm-up buckets, DiLoCo's dense all-reduces, SparseLoCo's all-gathered messages: same bytes.
    exp = tiny(["diloco", "sparseloco"], steps=12)
    measured = run_real(exp, tmp_path, nproc_per_node=2).runs.set_index("algorithm")
    predicted = simulate(exp.replace(repeats=1)).runs.set_index("algorithm")
    columns = ["bytes_sent_per_worker", "syncs"]
    pd.testing.assert_frame_equal(measured[columns], predicted.loc[measured.index, columns])
    assert measured.loc["sparseloco", "bytes_sent_per_worker"] < measured.loc["diloco", "bytes_sent_per_worker"]


@pytest.mark.slow
# sparseloco: its error buffer is saved too; streaming_diloco with tau = H and eager updates: an all-reduce
# in flight at every checkpoint after the first sync, saved with the worker's own share
@pytest.mark.parametrize(("name", "extra"), [
    ("palsgd", {}), ("sparseloco", {}),
    ("streaming_diloco", {"streaming_diloco": {"fragment_sync_delay": 3, "eager_outer": True}})])
def test_resumed_run_takes_the_same_steps_as_an_uninterrupted_one(tiny, tmp_path, name, extra):
    exp = tiny([name], steps=16, train={"checkpoint_every": 4, "eval_every": 8}, p=0.3, **extra)
    run_real(exp, tmp_path / "whole", nproc_per_node=2)
    with pytest.raises(RunFailed):
        run_real(exp, tmp_path / "cut", nproc_per_node=2, fault=FaultSpec.parse("rank=0,step=10,kind=crash"))
    assert store.read_manifest(tmp_path / "cut")["algorithms"][name]["status"] == "failed"
    run_real(exp, tmp_path / "cut", nproc_per_node=2, resume=True)
    whole = pd.read_csv(tmp_path / "whole" / "metrics.csv").sort_values(["worker", "step"])
    cut = pd.read_csv(tmp_path / "cut" / "metrics.csv").sort_values(["worker", "step"])
    assert list(cut["step"]) == list(whole["step"])
    np.testing.assert_array_equal(cut["loss"].to_numpy(), whole["loss"].to_numpy())
    np.testing.assert_array_equal(cut["eval_loss"].to_numpy(), whole["eval_loss"].to_numpy())
    assert store.read_manifest(tmp_path / "cut")["status"] == "complete"


@pytest.mark.netns
def test_one_agent_per_rank_in_emulated_network_namespaces(tiny, tmp_path):
    netem = pytest.importorskip("palsgd.harness.machinery.netem")
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("needs root, ip and tc")
    exp = tiny(["local_sgd"], steps=10)
    exp = exp.replace(cluster=dataclasses.replace(exp.cluster, nodes=2, gpus_per_node=1))
    with netem.EmulatedNetwork(2, netem.NetemSpec.parse("rate=1gbit")) as net:
        result = run_real(exp, tmp_path, nproc_per_node=1, network=net, timeout_s=60)
    assert result.status == "complete"
    assert list(result.runs["workers"]) == [2] and result.runs["bytes_sent_per_worker"].iloc[0] > 0
