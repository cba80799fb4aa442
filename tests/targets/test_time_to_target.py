"""Time-to-target: the step where a loss curve reaches the target, and its predicted wall-clock."""

import math

import pandas as pd
import pytest

from palsgd.core import config
from palsgd.core.errors import ConfigError
from palsgd.harness.commands.targets import step_at_target, time_to_target
from palsgd.harness.machinery import store
from palsgd.sim.engine import simulate


def test_step_at_target_interpolates_between_evaluations():
    curve = pd.DataFrame({"step": [0, 10, 20], "loss": [4.0, 3.0, 2.0]})
    assert step_at_target(curve, 2.5) == 15.0  # halfway from 3.0 at step 10 to 2.0 at step 20
    assert step_at_target(curve, 4.5) == 0.0
    assert math.isnan(step_at_target(curve, 1.0))


def test_user_curves_on_a_simulated_cluster(tmp_path):
    curves = pd.DataFrame({"algorithm": ["ddp"] * 3 + ["local_sgd"] * 3, "step": [0, 20, 40] * 2,
                           "loss": [4.0, 3.0, 2.0, 4.0, 3.5, 3.0]})
    path = tmp_path / "curves.csv"
    curves.to_csv(path, index=False)
    table = time_to_target(path, 3.0, workload="gpt-tiny", cluster="cpu-2core-gloo")
    assert set(table["source"]) == {"sim"}
    rows = table.set_index("algorithm")
    assert rows.loc["ddp", "step_at_target"] == 20 and rows.loc["local_sgd", "step_at_target"] == 40
    # the predicted time is the simulated wall-clock at the end of that step
    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo")
    steps = simulate(exp, record_steps=True).steps
    ddp_end = steps[(steps.algorithm == "ddp") & (steps.step == 20)]["end_s"].max()
    assert rows.loc["ddp", "time_to_target_s"] == pytest.approx(ddp_end)
    assert rows.loc["ddp", "speedup_to_target"] == 1.0
    assert rows.loc["local_sgd", "speedup_to_target"] == pytest.approx(
        rows.loc["ddp", "time_to_target_s"] / rows.loc["local_sgd", "time_to_target_s"])


def test_only_run_folders_or_curves(tmp_path):
    folder = tmp_path / "sim"
    store.start(folder, "simulate", config.load(workload="gpt-tiny", cluster="cpu-2core-gloo"))
    with pytest.raises(ConfigError, match="needs the folder of a `palsgd run`"):
        time_to_target(folder, 3.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="needs columns algorithm, step, loss"):
        time_to_target(bad, 3.0)


@pytest.mark.parametrize(("rows", "needle"), [
    ("ddp,0,4.0\nsgd,10,3.0\n", "algorithm = 'sgd': must be one of"),
    ("ddp,0,4.0\nddp,-10,3.0\n", "step = '-10': must be a number >= 0 (line 3)"),
    ("ddp,zero,4.0\n", "step = 'zero': must be a number >= 0 (line 2)"),
    ("ddp,0,low\n", "loss = 'low': must be a finite number"),
    ("ddp,0,inf\n", "loss = 'inf': must be a finite number"),
])
def test_bad_rows_of_user_curves_are_named(tmp_path, rows, needle):
    path = tmp_path / "curves.csv"
    path.write_text("algorithm,step,loss\n" + rows)
    with pytest.raises(ConfigError) as err:
        time_to_target(path, 3.0, workload="gpt-tiny", cluster="cpu-2core-gloo")
    assert needle in str(err.value) and str(path) in str(err.value)
