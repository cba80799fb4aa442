"""Bad input that used to be accepted and ignored: one line on stderr, exit 2, nothing written."""

import pytest
from click.testing import CliRunner

from palsgd.cli import main

SIM = ["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--steps", "20"]
RUN = ["run", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--steps", "20"]


def _refused(argv, needle, out=None):
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, (argv, result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("palsgd: error: ") and needle in lines[0], result.output
    if out is not None:
        assert not out.exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--set", "algorithm.name=nope"], "algorithm.name = 'nope': is not a parameter"),
    (["--set", "algorithm.palsgd.name=ddp"], "algorithm.palsgd.name = 'ddp': does not apply to palsgd"),
    (["--set", "algorithm.ddp.p=0.1"], "algorithm.ddp.p = 0.1: does not apply to ddp"),
    (["--set", "algorithm.local_sgd.outer_lr=0.5"], "algorithm.local_sgd.outer_lr = 0.5: does not apply"),
    (["--set", "algorithm.ddp.sync_every=5"], "algorithm.ddp.sync_every = 5: does not apply"),
    (["--algorithms", ""], "--algorithms = '': name at least one algorithm"),
    (["--algorithms", " , "], "name at least one algorithm"),
])
def test_simulate_refuses(tmp_path, args, needle):
    _refused([*SIM, *args, "--out", str(tmp_path / "o")], needle, tmp_path / "o")


def test_name_in_an_experiment_file_is_refused(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text("[algorithm]\nname = 'nope'\n")
    _refused([*SIM, str(exp)], f"{exp}: algorithm.name = 'nope'")


def test_empty_or_wrong_kind_of_preset_file_is_refused(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    _refused([*SIM[:3], "--cluster", str(empty), "--steps", "20"], f"{empty}: is not a cluster file")
    _refused(["simulate", "--workload", str(empty), "--steps", "20"], "is not a workload file")
    cluster = tmp_path / "cluster.toml"
    cluster.write_text("[cluster]\nnodes = 1\ngpus_per_node = 2\n")
    _refused(["simulate", "--workload", str(cluster), "--steps", "20"], f"{cluster}: is not a workload file")


@pytest.mark.parametrize(("args", "needle"), [
    (["--vary", "cluster.nodes=1,2", "--vary", "cluster.nodes=4,8"], "cluster.nodes: given twice"),
    (["--vary", "algorithm.name=ddp,nope"], "algorithm.name"),
    (["--vary", "cluster.nodes=1,2", "--jobs", "-3"], "--jobs = -3: must be a finite number > 0"),
])
def test_sweep_refuses(tmp_path, args, needle):
    _refused(["sweep", *SIM[1:], *args, "--out", str(tmp_path / "o")], needle, tmp_path / "o")


@pytest.mark.parametrize(("args", "needle"), [
    (["--timeout-s", "0"], "--timeout-s = 0.0: must be a finite number > 0"),
    (["--timeout-s", "-1"], "--timeout-s = -1.0"),
    (["--timeout-s", "nan"], "--timeout-s = nan"),
    (["--inject-fault", "rank=0,step=20,kind=crash"], "step must be < the run's 20 steps"),
    (["--inject-fault", "rank=0,step=3,kind=slow,factor=nan"], "factor must be a finite number"),
    (["--inject-fault", "rank=0,step=3,kind=slow,factor=inf"], "factor must be a finite number"),
    (["--inject-fault", ""], "--inject-fault"),
    (["--emulate-network", ""], "rate is required"),
])
def test_run_refuses_before_writing(tmp_path, args, needle):
    _refused([*RUN, *args, "--out", str(tmp_path / "o")], needle, tmp_path / "o")


@pytest.mark.parametrize("loss", ["nan", "inf", "-inf"])
def test_time_to_target_refuses_a_loss_that_is_not_finite(tmp_path, loss):
    curves = tmp_path / "c.csv"
    curves.write_text("algorithm,step,loss\nddp,0,4.0\n")
    _refused(["time-to-target", str(curves), "--loss", loss, "--workload", "gpt-tiny"], "--loss")


@pytest.mark.parametrize("command", [
    [*SIM, "--report"], [*RUN, "--out", "{tmp}/run", "--report"], ["explore", "--workload", "gpt-tiny", "-o"],
    ["report", "{tmp}/none", "-o"], ["calibrate", "--workload", "gpt-tiny", "--out"]])
def test_an_output_under_a_file_is_refused_before_the_work(tmp_path, command):
    """A page or profile written at the end: a path it cannot take is named at the start (it used to be
    found after the work, as a bare "File exists")."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command] + [str(blocker / "page.html")]
    _refused(argv, f"{blocker / 'page.html'}': cannot be made: {blocker} is a file", tmp_path / "run")


SPARSE = ["--algorithms", "ddp,sparseloco"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--set", "algorithm.sparseloco.topk_density=0"], "algorithm.sparseloco.topk_density = 0.0: must be in (0, 1]"),
    (["--set", "algorithm.sparseloco.topk_density=1.5"], "topk_density = 1.5: must be in (0, 1]"),
    (["--set", "algorithm.sparseloco.error_decay=-0.1"], "error_decay = -0.1: must be in [0, 1]"),
    (["--set", "algorithm.sparseloco.payload_dtype=int3"], "payload_dtype = 'int3'"),
    (["--set", "algorithm.sparseloco.payload_dtype=fp4"], "sparseloco sends values as one of fp32, bf16, int2"),
    (["--set", "algorithm.payload_dtype=int2"], "int2 is SparseLoCo's alone"),
    (["--set", "algorithm.ddp.topk_density=0.1"], "does not apply to ddp"),
    (["--set", "algorithm.sparseloco.per_tensor_allreduce=true"], "does not apply to sparseloco"),
])
@pytest.mark.parametrize("command", [SIM, RUN])
def test_bad_sparseloco_settings_are_refused_before_any_launch(tmp_path, command, args, needle):
    _refused([*command, *SPARSE, *args, "--out", str(tmp_path / "o")], needle, tmp_path / "o")


@pytest.mark.parametrize(("args", "needle"), [
    (["--set", "algorithm.streaming_diloco.fragment_sync_delay=6"],
     "fragment_sync_delay = 6: must be in [0, sync_every / fragments = 5]"),
    (["--set", "algorithm.streaming_diloco.eager_outer=1"], "eager_outer"),
    (["--set", "algorithm.diloco.eager_outer=true"], "does not apply to diloco"),
])
@pytest.mark.parametrize("command", [SIM, RUN])
def test_a_delay_beyond_a_round_is_refused_before_any_launch(tmp_path, command, args, needle):
    streaming = ["--algorithms", "ddp,diloco,streaming_diloco", "--set", "algorithm.sync_every=10",
                 "--set", "algorithm.warmup_steps=0", "--set", "algorithm.streaming_diloco.fragments=2"]
    _refused([*command, *streaming, *args, "--out", str(tmp_path / "o")], needle, tmp_path / "o")
