"""Two `palsgd run` launchers standing for two nodes (c10d rendezvous on 127.0.0.1), as a cluster user runs
them: one shared --out holds every rank; a folder per node is one clear error, never a partial comparison."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from palsgd.core.errors import ConfigError
from palsgd.harness.machinery import store
from palsgd.harness.machinery.rank_files import missing_ranks_failure

from .launchers import finish, free_port, launch

NOT_SHARED = "--out must be a folder on a file system all nodes share"


def _wait_for_lock_holder(out, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = (out / store.LOCK).read_text() if (out / store.LOCK).exists() else ""
        if text:
            return json.loads(text)
        time.sleep(0.2)
    raise AssertionError("node 0 never locked --out")


@pytest.mark.slow
def test_one_shared_folder_holds_every_rank_and_refuses_another_job(tmp_path):
    out = tmp_path / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    lead = launch(out, node_rank=0, endpoint=endpoint)
    holder = _wait_for_lock_holder(out)
    assert holder["job"] == endpoint
    # A launcher of another job (another rendezvous) cannot write into the folder: one line, exit 2.
    intruder = launch(out, node_rank=1, endpoint=f"127.0.0.1:{free_port()}")
    code, output = finish(intruder)
    assert code == 2 and output.count("\n") == 1, output
    assert "--out" in output and "in use by another palsgd command" in output
    other = launch(out, node_rank=1, endpoint=endpoint)
    (lead_code, lead_out), (other_code, other_out) = finish(lead), finish(other)
    assert (lead_code, other_code) == (0, 0), lead_out + other_out
    assert "measured vs predicted" in lead_out and "measured vs predicted" not in other_out
    steps = pd.read_parquet(out / "steps.parquet")
    assert steps.groupby("algorithm")["worker"].unique().map(sorted).to_dict() == \
        {"ddp": [0, 1], "local_sgd": [0, 1]}
    manifest = store.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["world_size"] == 2


@pytest.mark.slow
def test_a_folder_per_node_fails_on_both_nodes_without_a_comparison(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    lead = launch(tmp_path / "node0", node_rank=0, endpoint=endpoint)
    other = launch(tmp_path / "node1", node_rank=1, endpoint=endpoint)
    (lead_code, lead_out), (other_code, other_out) = finish(lead), finish(other)
    assert lead_code != 0 and other_code != 0, lead_out + other_out
    for output in (lead_out, other_out):
        assert "measured vs predicted" not in output
        assert NOT_SHARED in output
    failure = store.read_manifest(tmp_path / "node0")["failure"]
    assert failure["kind"] == "missing ranks" and NOT_SHARED in failure["message"]
    # Each algorithm's rendezvous places the two agents anew: node 0 lacks whichever rank node 1 ran.
    assert "ddp ranks [" in failure["message"] and "local_sgd ranks [" in failure["message"]


def test_the_lead_waits_for_late_rank_files_then_names_the_missing_ones(tmp_path):
    folder = tmp_path / "ranks" / "ddp"
    folder.mkdir(parents=True)
    for f in ("rank0.steps.parquet", "rank0.metrics.csv", "rank1.steps.parquet"):
        (folder / f).touch()
    started = time.monotonic()
    failure = missing_ranks_failure(tmp_path, ["ddp"], world=2, wait_s=1.0)
    assert time.monotonic() - started >= 1.0
    assert failure["kind"] == "missing ranks" and "ddp ranks [1] of 2" in failure["message"]
    (folder / "rank1.metrics.csv").touch()
    assert missing_ranks_failure(tmp_path, ["ddp"], world=2, wait_s=1.0) is None


def test_the_out_lock_admits_the_launchers_of_one_job_only(tmp_path):
    store.lock(tmp_path, "10.0.0.1:29500 slurm:7")
    try:
        assert store.join(tmp_path, "10.0.0.1:29500 slurm:7") == tmp_path
        with pytest.raises(ConfigError, match="not by this job"):
            store.join(tmp_path, "10.0.0.1:29500 slurm:8")
    finally:
        store.unlock(tmp_path)
    store.join(tmp_path, "10.0.0.1:29500 slurm:8")  # nobody holds it any more
