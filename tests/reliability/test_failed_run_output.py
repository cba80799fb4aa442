"""A failed real run: one summary line on the terminal (tracebacks in the log), manifest and tables agree,
no torchrun temporary folder left behind."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from palsgd.core.results import read_manifest
from palsgd.harness.machinery.rank_files import kept_last_steps, read_rank_csv


@pytest.mark.slow
def test_crashed_run_prints_a_summary_not_tracebacks(tmp_path):
    out = tmp_path / "run"
    system_tmp = tmp_path / "tmp"  # the command's /tmp: other tests' torchrun folders stay out of it
    system_tmp.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": str(system_tmp)}
    done = subprocess.run(
        [sys.executable, "-m", "palsgd.cli", "run", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo",
         "--algorithms", "ddp", "--steps", "30", "--set", "train.checkpoint_every=4",
         "--inject-fault", "rank=1,step=10,kind=crash", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1, done.stderr
    terminal = done.stdout + done.stderr
    assert "Traceback" not in terminal and "palsgd: run failed: ddp: crash on rank 1" in terminal, terminal
    log = out / "logs" / "ddp.node0.log"
    assert str(log) in terminal and "Traceback" in log.read_text()
    assert not list(system_tmp.glob("torchelastic_*")) and not (out / "tmp").exists()
    steps = pd.read_parquet(out / "steps.parquet")
    manifest = read_manifest(out)
    assert manifest["algorithms"]["ddp"]["last_step"] == kept_last_steps(steps, ["ddp"])["ddp"] >= 0


def test_a_row_cut_by_a_dying_rank_is_dropped(tmp_path):
    path = tmp_path / "rank0.metrics.csv"
    path.write_text("source,algorithm,run,worker,step,end_s,loss,lr,eval_loss\n"
                    "real,ddp,0,0,0,0.5,4.1,0.001,\nreal,ddp,0,0,1,1.0,4.0,0.0")
    table = read_rank_csv(path)
    assert list(table["step"]) == [0]
    path.write_text("source,algorithm,ru")
    assert read_rank_csv(path).empty


def test_last_step_is_the_last_step_every_rank_kept():
    steps = pd.DataFrame({"algorithm": ["ddp"] * 5, "worker": [0, 0, 0, 1, 1], "step": [0, 1, 2, 0, 1]})
    assert kept_last_steps(steps, ["ddp", "palsgd"]) == {"ddp": 1, "palsgd": -1}
