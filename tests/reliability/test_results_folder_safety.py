"""A results folder is written by one command at a time, and --resume only continues the same run."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from palsgd.cli import main
from palsgd.core import config
from palsgd.core.errors import ConfigError
from palsgd.core.results import read_table
from palsgd.harness.machinery import store

RUN = ["run", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--nproc-per-node", "2"]
HOLD = """
import sys, time
from palsgd.harness.machinery import store
store.prepare(sys.argv[1], job="holder-job")
print("locked", flush=True)
time.sleep(60)
"""


def _invoke(argv):
    result = CliRunner().invoke(main, argv)
    lines = result.output.strip().splitlines()
    return result.exit_code, lines


def test_second_command_on_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "d"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, lines = _invoke(["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--steps", "20",
                               "--out", str(out)])
        assert code == 2 and len(lines) == 1, lines
        assert "is in use by another palsgd command" in lines[0] and "holder-job" in lines[0]
        assert json.loads((out / store.LOCK).read_text())["pid"] == holder.pid
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock goes with its holder, even a killed one
    code, lines = _invoke(["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--steps", "20",
                           "--out", str(out)])
    assert code == 0, lines


def _run_folder(folder, steps):
    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo", steps=steps,
                      overrides=["cluster.nodes=1", "cluster.gpus_per_node=2"])
    store.prepare(folder)
    store.start(folder, "run", exp)
    store.finish(folder, "failed")
    store.unlock(folder)  # as if written by an earlier command


def test_resume_refuses_a_folder_of_another_kind(tmp_path):
    sim = tmp_path / "sim"
    code, _ = _invoke(["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--steps", "20",
                       "--out", str(sim)])
    assert code == 0
    before = sorted(p.name for p in sim.iterdir())
    code, lines = _invoke([*RUN, "--steps", "20", "--resume", "--out", str(sim)])
    assert code == 2 and len(lines) == 1 and "is a simulate folder; --resume continues a run folder" in lines[0]
    assert sorted(p.name for p in sim.iterdir()) == before
    assert store.read_manifest(sim)["kind"] == "simulate"


def test_resume_names_the_key_that_differs(tmp_path):
    folder = tmp_path / "r"
    _run_folder(folder, steps=40)
    code, lines = _invoke([*RUN, "--steps", "50", "--resume", "--out", str(folder)])
    assert code == 2 and len(lines) == 1, lines
    assert "budget.steps: this command gives 50, the run to resume has 40" in lines[0]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--resume", "--overwrite"], "--overwrite: --resume continues the results in --out"),
    (["--resume"], "holds no results to resume"),
])
def test_resume_needs_a_run_and_no_overwrite(tmp_path, extra, needle):
    code, lines = _invoke([*RUN, "--steps", "20", *extra, "--out", str(tmp_path / "none")])
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "none").exists()


def test_a_table_cut_mid_row_is_refused_not_rendered(tmp_path):
    folder = tmp_path / "sim"
    code, _ = _invoke(["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--steps", "20",
                       "--out", str(folder)])
    assert code == 0
    runs = folder / "runs.csv"
    runs.write_text(runs.read_text()[:-7])
    with pytest.raises(ConfigError, match="truncated: its last row is incomplete"):
        read_table(folder, "runs.csv")
    code, _ = _invoke(["report", str(folder), "-o", str(tmp_path / "r.html")])
    assert code == 0 and "runs.csv could not be read and is left out (truncated" in (tmp_path / "r.html").read_text()
