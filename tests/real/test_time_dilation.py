"""Time-dilated emulation (``--time-dilation K``): the arithmetic of slowing every emulated resource down K
times and dividing what is measured by K, and the refusal where nothing emulated could be slowed down."""

import pandas as pd
import pytest
from click.testing import CliRunner

from palsgd.cli import main
from palsgd.core import schema
from palsgd.core.config import load
from palsgd.core.errors import ConfigError
from palsgd.harness.machinery import dilation
from palsgd.harness.machinery.calibrate import undilate_times
from palsgd.harness.machinery.netem import NetemSpec
from palsgd.harness.machinery.rank_files import merge
from palsgd.real.emulated_compute import emulate
from palsgd.real.models import build_model
from palsgd.real.optim import build_optimizer


def _transfer_s(rate_mbit, delay_ms, size_bytes):
    return size_bytes * 8 / (rate_mbit * 1e6) + delay_ms / 1e3


def test_a_dilated_spec_has_every_rate_divided_and_every_time_multiplied():
    spec = NetemSpec.parse("nodes=4,rate=1gbit,delay=5ms,jitter=1ms,intra_rate=10gbit,intra_delay=100us,"
                           "groups=2,wan_rate=200mbit,wan_delay=20ms")
    slow = spec.dilated(4)
    assert (slow.rate_mbit, slow.intra_rate_mbit, slow.wan_rate_mbit) == (250, 2500, 50)
    assert (slow.delay_ms, slow.jitter_ms, slow.intra_delay_ms, slow.wan_delay_ms) == (20, 4, 0.4, 80)
    assert (slow.nodes, slow.groups) == (spec.nodes, spec.groups)
    # a message over any link takes K times as long: divided by K it is the undilated link's time
    for rate, delay in (("rate_mbit", "delay_ms"), ("wan_rate_mbit", "wan_delay_ms")):
        fast_s = _transfer_s(getattr(spec, rate), getattr(spec, delay), 4 << 20)
        assert _transfer_s(getattr(slow, rate), getattr(slow, delay), 4 << 20) / 4 == pytest.approx(fast_s)
    assert spec.dilated(1) is spec


def _rank_steps(worker, scale):
    rows = [("real", "local_sgd", 0, worker, step, phase, scale * (t0 + step), scale * (t1 + step), nbytes)
            for step in range(3)
            for phase, t0, t1, nbytes in (("compute", 0.0, 0.6, 0.0), ("allreduce", 0.6, 0.9 + 0.05 * worker, 8e6))]
    return pd.DataFrame(rows, columns=list(schema.STEP_COLUMNS))


def _write_ranks(folder, scale):
    ranks = folder / "ranks" / "local_sgd"
    ranks.mkdir(parents=True)
    for worker in (0, 1):
        _rank_steps(worker, scale).to_parquet(ranks / f"rank{worker}.steps.parquet")
        pd.DataFrame([("real", "local_sgd", 0, worker, 2, scale * 3.0, 0.0, 0.0, float("nan"))],
                     columns=list(schema.METRIC_COLUMNS)).to_csv(ranks / f"rank{worker}.metrics.csv", index=False)


def test_merged_tables_of_a_dilated_run_are_those_of_the_undilated_one(tmp_path):
    _write_ranks(tmp_path / "plain", 1.0)
    _write_ranks(tmp_path / "dilated", 3.0)
    steps, metrics = merge(tmp_path / "plain", ["local_sgd"])
    slow_steps, slow_metrics = merge(tmp_path / "dilated", ["local_sgd"], dilation=3.0)
    pd.testing.assert_frame_equal(slow_steps, steps)
    pd.testing.assert_frame_equal(slow_metrics, metrics)
    runs = schema.summarize_steps(slow_steps)
    assert runs["step_time_mean_s"].iloc[0] == pytest.approx(schema.summarize_steps(steps)["step_time_mean_s"].iloc[0])
    undivided, _ = merge(tmp_path / "dilated", ["local_sgd"])
    assert undivided["end_s"].max() == pytest.approx(3 * steps["end_s"].max())  # the factor does matter


def test_collective_times_are_divided_by_the_factor():
    table = pd.DataFrame({"size_bytes": [4096, 1 << 20], "ranks": 2, "time_s": [0.02, 0.4], "p10_s": [0.01, 0.3],
                          "p90_s": [0.03, 0.5]})
    out = undilate_times(table, 4.0)
    assert list(out["time_s"]) == [0.005, 0.1] and list(out["p90_s"]) == [0.0075, 0.125]
    assert list(out["size_bytes"]) == [4096, 1 << 20]


def test_emulated_compute_sleeps_k_times_its_modelled_times():
    exp = load(workload="gpt-tiny", overrides=['train.compute="emulated"', "cluster.compute.step_time_s=0.01",
                                               "cluster.compute.optimizer_time_s=0.002"])

    def build(k):
        model = build_model(exp.workload.model)
        return emulate(model, build_optimizer(model.parameters(), exp.train), exp, 0, 4, k)

    (emu, opt), (slow, slow_opt) = build(1.0), build(3.0)
    assert slow.micro_batch_s == pytest.approx(3 * emu.micro_batch_s)
    assert slow_opt.step_s == pytest.approx(3 * opt.step_s) and opt.step_s == pytest.approx(0.002)
    assert slow.device_s == pytest.approx({k: 3 * v for k, v in emu.device_s.items()})


@pytest.mark.parametrize(("factor", "compute", "network", "needle"), [
    (2.0, False, True, "applies only with both"),
    (2.0, True, False, "applies only with both"),
    (0.5, True, True, "finite number >= 1"),
    (float("inf"), True, True, "finite number >= 1"),
])
def test_dilation_is_refused_where_it_would_mean_nothing(factor, compute, network, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        dilation.check(factor, emulated_compute=compute, emulated_network=network)
    assert err.value.key == "--time-dilation"


def test_no_dilation_needs_no_emulation():
    assert dilation.check(1, emulated_compute=False, emulated_network=False) == 1.0


@pytest.mark.parametrize("argv", [
    ["run", "--workload", "gpt-tiny", "--steps", "20", "--time-dilation", "2"],
    ["run", "--workload", "gpt-tiny", "--steps", "20", "--time-dilation", "2", "--emulate-compute"],
    ["calibrate", "--workload", "gpt-tiny", "--time-dilation", "2", "--emulate-compute"],
    ["validate", "--suite", "cpu", "--time-dilation", "2"],
])
def test_the_commands_refuse_it_in_one_line_before_any_work(tmp_path, argv):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [*argv, "--out", str(out / "p.toml" if argv[0] == "calibrate" else out)])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--time-dilation" in lines[0] and "applies only with both" in lines[0], lines
    assert not out.exists()


def test_the_report_states_the_dilation():
    from palsgd.reports.assumptions import provenance

    assert provenance({"kind": "run", "time_dilation": 2.0})["time_dilation"] == 2.0
    assert "time_dilation" not in provenance({"kind": "run"})
