"""Issue 26's eleven ways in, each once: one line naming the file or key, exit status 2, before any work or
launch, and nothing outside --out written, followed or removed. Each test failed before its fix (a
traceback, an out-of-memory kill, a hang, a file overwritten, or a folder left saying "running")."""

import json
import os
import resource
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from palsgd.cli import main
from palsgd.core import config, io
from palsgd.core.errors import ConfigError
from palsgd.harness.commands import simulate as job
from palsgd.harness.machinery import store, sweep
from palsgd.harness.machinery.netem import NetemSpec
from palsgd.sim import bounds

WHERE = ["--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo"]


def _refused(argv) -> str:
    """The one line of a refused command (exit status 2, no traceback)."""
    result = CliRunner().invoke(main, argv)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, (argv, result.output, result.exception)
    for held in list(store._held):  # the CLI holds its locks until the process ends; this one goes on
        store.unlock(held)
    return lines[0]


def _limited():
    """A child that cannot take the machine down if a regression reads without bound."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_row1_only_regular_files_are_read(tmp_path, kind):
    path = "/dev/zero" if kind == "device" else tmp_path / "exp.toml"
    if kind == "fifo":
        os.mkfifo(path)
    done = subprocess.run([sys.executable, "-m", "palsgd.cli", "simulate", str(path)], capture_output=True,
                          text=True, timeout=120, preexec_fn=_limited)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"palsgd: error: {path}: is not a regular file (a " \
                                  f"{'character device' if kind == 'device' else 'FIFO'}); give a TOML file"


def test_row1_a_file_over_the_size_bound_is_refused_unread(tmp_path):
    path = tmp_path / "exp.toml"
    with open(path, "wb") as f:
        f.truncate(io.MAX_INPUT_BYTES + 1)  # sparse: nothing is written
    assert "over the limit of 16,777,216" in _refused(["simulate", str(path)])


def test_row2_deeply_nested_toml(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert _refused(["simulate", str(path)]) == f"palsgd: error: {path}: not valid TOML: arrays or tables nested " \
                                                "too deeply"
    assert "nested too deeply" in _refused(["simulate", *WHERE, "--set", "seed=" + "[" * 5000 + "]" * 5000])


def test_row3_a_home_folder_that_does_not_exist(tmp_path):
    assert "--workload" in _refused(["simulate", "--workload", "~nosuchuser"])
    path = tmp_path / "exp.toml"
    path.write_text('workload = "~nosuchuser/w.toml"\n')
    line = _refused(["simulate", str(path)])
    assert line.startswith(f"palsgd: error: {path}: workload = '~nosuchuser/w.toml'") and "home folder" in line


@pytest.mark.parametrize("key, value", [("cluster.variability.jitter_cv", "1e200"),
                                        ("cluster.inter_node.bandwidth_gbps", "5e-324"),
                                        ("cluster.compute.peak_tflops", "1" + "0" * 400)])
def test_row4_numbers_that_would_overflow(key, value):
    line = _refused(["simulate", *WHERE, "--steps", "20", "--set", f"{key}={value}"])
    assert key in line and ("magnitude" in line or "finite" in line), line


def test_row5_a_model_too_large_to_lay_out_is_refused_before_it_is():
    line = _refused(["simulate", *WHERE, "--steps", "20", "--set", "workload.model.layers=1000000000000"])
    assert "workload.model.layers" in line and "over the limit of 100,000" in line
    line = _refused(["simulate", "--workload", "resnet-tiny", "--steps", "20", "--set",
                     "workload.model.depth=6000000000000000002"])
    assert "workload.model.depth" in line
    huge = ["--set", "workload.model.hidden=100000000", "--set", "workload.model.heads=1"]
    assert "parameters, over the limit" in _refused(["simulate", *WHERE, "--steps", "20", *huge])


def test_row6_a_damaged_sweep_part_is_refused_on_resume(tmp_path):
    out = tmp_path / "o"
    argv = ["sweep", *WHERE, "--steps", "20", "--vary", "cluster.nodes=1,2,3", "--jobs", "1", "--out", str(out)]
    assert CliRunner().invoke(main, argv).exit_code == 0
    store.unlock(out)
    part = sorted((out / "points").iterdir())[0]
    part.write_bytes(b"garbage")
    manifest = (out / "manifest.json").read_bytes()
    assert _refused([*argv, "--resume"]).startswith(f"palsgd: error: {part}: unreadable table")
    assert (out / "manifest.json").read_bytes() == manifest  # refused before the folder changed
    pd.DataFrame({"x": [1]}).to_parquet(part)  # a parquet file, but not a part of this sweep
    assert "is not a part of this sweep" in _refused([*argv, "--resume"])


@pytest.mark.parametrize("text", ["rate=1e99gbit", "rate=10000gbit", "rate=1gbit,delay=300s",
                                  "nodes=2,rate=1gbit,intra_rate=1e9gbit", "rate=1mbit,delay=275s"])
def test_row7_emulated_links_tc_would_refuse(text):
    with pytest.raises(ConfigError, match="tc's limit"):
        NetemSpec.parse(text)


def test_row7_links_tc_takes_are_accepted():
    for text in ("rate=3000gbit", "rate=10gbit,delay=1s", "rate=1mbit,delay=274s"):
        NetemSpec.parse(text)


def test_row8_the_timeline_of_an_out_folder_is_bounded_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(bounds, "RECORD_LIMIT", 1000)  # the step table is not kept: a timeline is written
    monkeypatch.setattr(bounds, "TIMELINE_WORKER_STEPS", 8000)
    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo", steps=400,
                      overrides=["cluster.gpus_per_node=16", "algorithm.sync_every=8"])
    job.simulate_to_folder(exp, out=tmp_path / "o")
    timeline = pd.read_parquet(tmp_path / "o" / io.TIMELINE)
    worker_steps = (timeline.groupby("algorithm")["step"].max() + 1).sum() * exp.workers
    assert 0 < worker_steps <= 8000
    without = bounds.estimate(exp, record_steps=False, keep_totals=True)
    with_out = bounds.estimate(exp, record_steps=False, keep_totals=True, out=True)
    assert with_out.kept_bytes - without.kept_bytes >= worker_steps * bounds.RECORDED_BYTES_PER_WORKER_STEP


def test_row9_a_planted_lock_link_is_not_written_through(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / store.LOCK).symlink_to(precious)
    line = _refused(["simulate", *WHERE, "--steps", "20", "--out", str(out)])
    assert ".palsgd.lock" in line and "symbolic link" in line
    assert precious.read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == [store.LOCK]


def test_row9_a_link_or_fifo_anywhere_in_out_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "o"
    (out / "ranks").mkdir(parents=True)
    (out / "ranks" / "ddp").symlink_to(elsewhere)
    assert "a symbolic link" in _refused(["simulate", *WHERE, "--steps", "20", "--out", str(out)])
    (out / "ranks" / "ddp").unlink()
    os.mkfifo(out / "points")
    assert "not a regular file or folder" in _refused(["simulate", *WHERE, "--steps", "20", "--out", str(out)])
    assert list(elsewhere.iterdir()) == []


def test_row10_a_grid_is_checked_whole_before_any_work(tmp_path):
    out = tmp_path / "o"
    line = _refused(["sweep", *WHERE, "--steps", "20", "--vary", "cluster.nodes=1..1000000000000000000:x10",
                     "--jobs", "1", "--out", str(out)])
    assert "cluster.nodes = 1000000000000000000" in line and "memory" in line
    assert not out.exists()


def test_row10_a_sweep_stopped_by_any_error_is_not_left_running(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("a bug in the simulator")

    monkeypatch.setattr(sweep, "_simulate_chunk", fail)
    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo", steps=20)
    with pytest.raises(RuntimeError):
        job.sweep_to_folder(exp, ["cluster.nodes=1,2"], jobs=1, out=tmp_path / "o", overwrite=False)
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("argv", [
    ["simulate", *WHERE, "--steps", "20", "--seed", str(2**64)],
    ["simulate", *WHERE, "--steps", "20", "--seed", str(2**63 - 1), "--repeats", "2"],
    ["simulate", *WHERE, "--steps", "20", "--set", "seed=-1"],
    ["sweep", *WHERE, "--steps", "20", "--seed", str(2**64), "--vary", "cluster.nodes=1,2"],
    ["sweep", *WHERE, "--steps", "20", "--vary", f"seed=0,{2**63}"],
    ["run", *WHERE, "--steps", "20", "--seed", str(2**63), "--out", "never-made"],
    ["calibrate", *WHERE, "--seed", str(2**63), "--out", "never-made.toml"],
    ["explore", *WHERE, "--seed", str(2**63), "-o", "never-made.html"],
])
def test_row11_one_seed_range_for_every_command(argv):
    line = _refused(argv)
    assert "seed" in line and "2**63" in line, line
    assert not os.path.lexists("never-made") and not os.path.lexists("never-made.toml")


def test_row11_the_largest_seed_is_taken():
    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo", steps=20, seed=2**63 - 2,
                      overrides=["repeats=2"])
    assert exp.seed + exp.repeats - 1 == 2**63 - 1
