"""`palsgd simulate / sweep / presets` as a user runs them: real processes, exit codes, files."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

SMALL = ["--workload", "gpt-neo-8m", "--cluster", "a100-4x8-ib100", "--steps", "400"]


def palsgd(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "palsgd.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_json_prints_rows_and_nothing_else():
    r = palsgd("simulate", *SMALL, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["algorithm"] for row in rows] == ["ddp", "local_sgd", "diloco", "palsgd"]
    for key in ("workers", "steps", "wall_clock_s", "step_time_mean_s", "compute_s", "comm_exposed_s", "wait_s",
                "bytes_sent_per_worker", "speedup_vs_ddp"):
        assert key in rows[0]
    assert rows[0]["speedup_vs_ddp"] == 1.0 and rows[0]["workers"] == 32 and rows[0]["steps"] == 400


def test_table_and_results_folder(tmp_path):
    out = tmp_path / "res"
    r = palsgd("simulate", *SMALL, "--out", str(out), "--set", "cluster.inter_node.bandwidth_gbps=10")
    assert r.returncode == 0, r.stderr
    assert "palsgd" in r.stdout and "vs DDP" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "simulate" and manifest["status"] == "complete"
    assert manifest["experiment"]["cluster"]["inter_node"]["bandwidth_gbps"] == 10.0
    runs = pd.read_csv(out / "runs.csv")
    steps = pd.read_parquet(out / "steps.parquet")
    assert set(runs.algorithm) == {"ddp", "local_sgd", "diloco", "palsgd"}
    assert steps.step.max() == 399
    assert json.loads((out / "trace.json").read_text())["traceEvents"]
    # a second run into the same folder is refused, the first results stay
    again = palsgd("simulate", *SMALL, "--out", str(out))
    assert again.returncode == 2 and "already holds results" in again.stderr
    assert pd.read_csv(out / "runs.csv").equals(runs)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "cluster.bogus=1"], "cluster.bogus: unknown key"),
        (["--set", "cluster.inter_node.bandwidth_gbps=-5"], "cluster.inter_node.bandwidth_gbps = -5.0: must be > 0"),
        (["--set", "algorithm.palsgd.p=1.5"], "algorithm.palsgd.p = 1.5: must be in [0, 1)"),
        (["--set", "algorithm.sync_every=0"], "algorithm.sync_every = 0: must be >= 1"),
        (["--workload", "gpt-neo-9000"], "unknown workload preset"),
        (["--cluster", "nope.toml"], "cluster file not found"),
        (["--algorithms", "ddp,sgd"], "unknown algorithm"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "never"
    r = palsgd("simulate", "--steps", "400", *args, "--out", str(out))
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_experiment_file_names_the_file(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text("[algorithm]\np = 2\n")
    r = palsgd("simulate", str(f))
    assert r.returncode == 2 and r.stderr.startswith(f"palsgd: error: {f}: algorithm.p = 2")


def test_sweep_reports_a_crossover(tmp_path):
    r = palsgd("sweep", *SMALL, "--algorithms", "ddp,local_sgd", "--set", "cluster.variability.jitter_cv=0",
               "--vary", "cluster.inter_node.bandwidth_gbps=1,10,100,1000,10000,100000", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "s" / "sweep.csv")
    assert "cluster.inter_node.bandwidth_gbps" in table.columns
    local = table[table.algorithm == "local_sgd"].sort_values("cluster.inter_node.bandwidth_gbps")
    # Never increases; once both sides are latency-bound (> 10 Tb/s) the ratio is flat to ~1e-5.
    assert (local.speedup_vs_ddp.diff().dropna() <= 1e-4).all()
    assert local.speedup_vs_ddp.iloc[0] > 3 > 1.1 > local.speedup_vs_ddp.iloc[-1]
    assert "crossover" in r.stdout


def test_bad_vary_is_exit_2():
    r = palsgd("sweep", *SMALL, "--vary", "cluster.nodes=abc..")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_presets_lists_sources():
    r = palsgd("presets")
    assert r.returncode == 0
    for name in ("gpt-neo-8m", "gpt-neo-125m", "resnet50-imagenet", "a100-4x8-ib100", "cpu-2core-gloo",
                 "gpt-tiny-2rank"):
        assert name in r.stdout
    # the derived facts, not the (no longer typed) preset values: GPT-Neo-125M with a tied LM head
    assert "params 124,412,160," in r.stdout and "params 0," not in r.stdout


def test_unwritable_paths_are_one_line_exit_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = palsgd("simulate", *SMALL, "--out", str(blocker / "sub"))
    assert r.returncode == 2 and "Not a directory" in r.stderr and "Traceback" not in r.stderr


def test_simulate_says_how_replica_groups_train():
    from palsgd.core.config import load
    from palsgd.harness.commands.simulate import group_lines

    exp = load(algorithms=["ddp", "diloco", "palsgd"], overrides=['algorithm.diloco.replica_group="node"'])
    assert group_lines(exp) == ["diloco: 4 replicas of a node each: DDP inside a replica, diloco across them "
                                "(each rank syncs with the same rank of the other replicas)"]
    from palsgd.reports.assumptions import algorithm_table

    table = algorithm_table(exp.to_dict())
    row = next(r for r in table.rows if r[0].text == "replica_group")
    assert [c.text for c in row[1:]] == ["–", "node", "worker"]
