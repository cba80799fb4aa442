"""`palsgd validate --trace`: replay of real DDP traces (tests/data/traces) and of a hand-made step."""

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from palsgd.cli import main
from palsgd.core.cluster import ClusterSpec, LinkSpec, TransportSpec
from palsgd.harness.commands.trace_validate import predict_step
from palsgd.harness.machinery.compare import COMPARISON_COLUMNS
from palsgd.harness.machinery.kineto_trace import Collective, Step

TRACES = Path(__file__).parent.parent / "data" / "traces"
A100X2 = TRACES / "a100x2_ddp_rank0.json.gz"
A100X8 = TRACES / "a100x8_rank3.json.gz"
MIB = 1 << 20


def test_replay_of_a_hand_made_step():
    # 2 ranks, no latency, B = 2 MiB/s: a bucket of S bytes takes 2(n-1)/n · S/B = S/(2 MiB) s.
    cluster = ClusterSpec(nodes=1, gpus_per_node=2, allreduce="ring", intra_node=LinkSpec(2 * MIB * 8 / 1e9, 0.0),
                          transport=TransportSpec(base_latency_us=0.0))
    step = Step("ProfilerStep#0", step_s=2.0, compute_s=1.0, optimizer_s=0.1,
                collectives=(Collective("allreduce", MIB, 0.7, 0.3), Collective("allreduce", MIB, 1.0, 0.3)),
                allreduce_exposed_s=0.3, broadcast_exposed_s=0.0, other_comm_exposed_s=0.0)
    # Two 1 MiB buckets, 0.5 s each; bucket 0 ready at 1/3 + 2/3·0.5 = 2/3 of c, runs 2/3..7/6; bucket 1
    # ready at 1, runs 7/6..5/3. Exposed 2/3 s. rest = 2 - 1 - 0.1 - 0.3 = 0.6; predicted step
    # 0.6 + 5/3 + 0.1 = 2.3667.
    got = predict_step(step, cluster)
    assert got["allreduce_s"] == pytest.approx((1.0, 0.6))
    assert got["allreduce_exposed_s"] == pytest.approx((2 / 3, 0.3))
    assert got["step_time_mean_s"] == pytest.approx((0.6 + 5 / 3 + 0.1, 2.0))


def _run(tmp_path, *args):
    result = CliRunner().invoke(main, ["validate", *args, "--out", str(tmp_path)])
    return result


def test_comparison_csv_of_two_real_traces_under_a_preset(tmp_path):
    result = _run(tmp_path, "--trace", str(A100X2), "--trace", str(A100X8), "--cluster", "a100-1x8-nvlink")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert tuple(table.columns) == COMPARISON_COLUMNS
    assert list(table["case"].unique()) == ["a100x2_ddp_rank0", "a100x8_rank3"]
    assert set(table["metric"]) == {"step_time_mean_s", "allreduce_s", "allreduce_exposed_s"}
    assert (table["network"] == "profile a100-1x8-nvlink").all() and list(table["ranks"].unique()) == [2, 8]
    step = table[table["metric"] == "step_time_mean_s"].set_index("case")
    # measured: the mean of the ProfilerStep ranges (222.44, 219.73, 224.94 ms)
    assert step.loc["a100x2_ddp_rank0", "measured"] == pytest.approx((222.442 + 219.727 + 224.936) / 3e3, rel=1e-4)
    err = 100 * (table["predicted"] - table["measured"]) / table["measured"]
    assert err.to_numpy() == pytest.approx(table["error_pct"].to_numpy())
    assert "network from other evidence" in result.output


def test_a_network_fitted_from_the_trace_itself_is_not_counted_toward_the_target(tmp_path):
    result = _run(tmp_path, "--trace", str(A100X2))
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "comparison.csv")["network"]) == {"fitted from this trace"}
    assert "network from other evidence" not in result.output


def test_a_network_fitted_from_another_trace(tmp_path):
    result = _run(tmp_path, "--trace", str(A100X2), "--network-trace", str(A100X8))
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "comparison.csv")["network"]) == {"fitted from trace a100x8_rank3"}


@pytest.mark.parametrize("name, says", [("v100x2_nosizes_rank1.json.gz", "carry no sizes"),
                                        ("a100x16_sendrecv_rank0.json.gz", "no NCCL all-reduce kernels")])
def test_a_trace_without_what_the_replay_needs_is_one_line_and_exit_2(tmp_path, name, says):
    result = _run(tmp_path / "out", "--trace", str(TRACES / name), "--cluster", "a100-1x8-nvlink")
    assert result.exit_code == 2 and says in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "comparison.csv").exists()


def test_a_trace_that_is_not_a_regular_file_is_named_so(tmp_path):
    result = CliRunner().invoke(main, ["validate", "--trace", "/dev/null", "--out", str(tmp_path / "v")])
    assert result.exit_code == 2 and "/dev/null: is not a regular file or a folder of traces" in result.output
    assert not (tmp_path / "v").exists()
