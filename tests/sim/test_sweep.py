"""Sweeps: parsing, the grid, the table, crossovers, and monotone speedups over bandwidth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from palsgd.core.config import load, with_changes
from palsgd.core.errors import ConfigError
from palsgd.harness.machinery.sweep import crossovers, parse_vary, sweep


def test_parse_vary_lists_and_ranges():
    assert parse_vary("cluster.inter_node.bandwidth_gbps=1,10,100,400") == (
        "cluster.inter_node.bandwidth_gbps", [1, 10, 100, 400])
    assert parse_vary("cluster.nodes=1..4") == ("cluster.nodes", [1, 2, 3, 4])
    assert parse_vary("cluster.nodes=1..64:x2")[1] == [1, 2, 4, 8, 16, 32, 64]
    assert parse_vary("cluster.nodes=1..64:8")[1] == [1, 9, 17, 25, 33, 41, 49, 57]
    assert parse_vary("cluster.allreduce=ring,tree")[1] == ["ring", "tree"]


@pytest.mark.parametrize("text", ["nodes", "cluster.nodes=", "=1,2", "cluster.nodes=4..1", "cluster.nodes=1..8:x1",
                                  "cluster.nodes=a..b", "cluster.nodes=1,,2", "a..b=1"])
def test_parse_vary_rejects_bad_text(text):
    with pytest.raises(ConfigError):
        parse_vary(text)


def test_sweep_validates_every_point():
    base = load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=300)
    with pytest.raises(ConfigError, match=r"cluster\.nodes"):
        sweep(base, [("cluster.nodes", [4, 0])], jobs=1)


def test_speedups_never_increase_with_bandwidth_and_crossovers_are_found():
    base = load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=300,
                overrides=["cluster.variability.jitter_cv=0.0"])
    bandwidths = [1, 10, 100, 400, 1600, 6400]
    res = sweep(base, [("cluster.inter_node.bandwidth_gbps", bandwidths)], jobs=2)
    key = "cluster.inter_node.bandwidth_gbps"
    assert list(res.table.columns[:1]) == [key]
    assert len(res.table) == len(bandwidths) * 4
    for algo, g in res.table.groupby("algorithm"):
        sp = g.sort_values(key)["speedup_vs_ddp"].to_numpy()
        assert (np.diff(sp) <= 1e-9).all(), algo
    assert res.crossovers.empty or set(res.crossovers["direction"]) <= {"overtakes", "falls behind"}


def test_two_key_grid_has_one_row_per_point_algorithm_run():
    base = load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=200, algorithms=["ddp", "local_sgd"])
    res = sweep(base, [("cluster.nodes", [1, 2]), ("algorithm.sync_every", [10, 50])], jobs=1)
    assert len(res.table) == 2 * 2 * 2
    assert {"cluster.nodes", "algorithm.sync_every", "speedup_vs_ddp"} <= set(res.table.columns)


def test_crossover_interpolates_in_log_space_when_values_span_a_decade():
    table = pd.DataFrame({"bw": [1, 100, 1, 100], "algorithm": ["ddp", "ddp", "local_sgd", "local_sgd"],
                          "speedup_vs_ddp": [1.0, 1.0, 2.0, 0.5]})
    out = crossovers(table, ["bw"])
    # log10 bw goes 0 -> 2 while speedup - 1 goes 1 -> -0.5: crossing at 2/3 of the way, 10^(4/3).
    assert out.iloc[0]["value"] == pytest.approx(10 ** (4 / 3))
    assert out.iloc[0]["direction"] == "falls behind"
    lin = crossovers(table.assign(bw=[1, 4, 1, 4]), ["bw"])
    assert lin.iloc[0]["value"] == pytest.approx(3.0)


def test_replica_group_is_a_numeric_sweep_axis():
    base = load(workload="gpt-neo-8m", algorithms=["ddp", "diloco"], steps=40,
                overrides=["algorithm.warmup_steps=0", "algorithm.sync_every=10"])
    result = sweep(base, [parse_vary("algorithm.replica_group=worker,2,node")], jobs=1)
    table = result.table
    # recorded as workers per replica: worker 1, node the 8 GPUs of a node
    assert sorted(table["algorithm.replica_group"].unique()) == [1, 2, 8]
    ddp = table[table["algorithm"] == "ddp"].set_index("algorithm.replica_group")["wall_clock_s"]
    assert ddp.nunique() == 1  # DDP has no replica groups
    diloco = table[table["algorithm"] == "diloco"].set_index("algorithm.replica_group")["wall_clock_s"]
    assert diloco.nunique() == 3
    with pytest.raises(ConfigError, match="replica_group"):
        sweep(base, [parse_vary("algorithm.replica_group=worker,3")], jobs=1)


def test_a_whole_round_of_delay_and_eager_outer_are_sweep_axes():
    base = load(workload="gpt-neo-8m", algorithms=["ddp", "streaming_diloco"], steps=40,
                overrides=["algorithm.warmup_steps=0", "algorithm.sync_every=8",
                           "cluster.inter_node.bandwidth_gbps=10"])
    result = sweep(base, [parse_vary("algorithm.streaming_diloco.fragment_sync_delay=0,8"),
                          parse_vary("algorithm.streaming_diloco.eager_outer=false,true")], jobs=1)
    rows = result.table[result.table["algorithm"] == "streaming_diloco"]
    exposed = rows.groupby(["algorithm.streaming_diloco.fragment_sync_delay",
                            "algorithm.streaming_diloco.eager_outer"])["comm_exposed_s"].mean()
    assert len(exposed) == 4
    # tau = H hides the all-reduce under the next round (it fits at 10 Gbit/s); eager updates change the
    # rule, not the timing.
    assert exposed[(8, False)] < 0.1 * exposed[(0, False)]
    assert exposed[(8, True)] == exposed[(8, False)] and exposed[(0, True)] == exposed[(0, False)]


def test_noisy_small_points_give_the_exact_engines_runs():
    """Points small enough to draw every step take the fast path in a sweep (``fast.equals_exact``), built
    in the worker process (``sweep._Points``): each run is the exact engine's run of the same seed."""
    from palsgd.sim import fast
    from palsgd.sim.engine import simulate

    base = load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=60, algorithms=["ddp", "local_sgd", "palsgd"],
                overrides=["cluster.nodes=1", "algorithm.sync_every=6", "algorithm.warmup_steps=3", "repeats=2",
                           "cluster.variability.jitter_cv=0.1", "cluster.variability.straggler_prob=0.05",
                           "cluster.failures.mtbf_s=30", "cluster.failures.restart_s=0.5"])
    assert fast.equals_exact(base)
    bandwidths = [10.0, 100.0]
    table = sweep(base, [("cluster.intra_node.bandwidth_gbps", bandwidths)], jobs=2).table
    for value in bandwidths:
        exp = with_changes(base, [("test", {"cluster": {"intra_node": {"bandwidth_gbps": value}}})])
        keys = ["algorithm", "run"]
        exact = simulate(exp, record_steps=False, keep_totals=False, engine="exact").runs.sort_values(keys)
        got = table[table["cluster.intra_node.bandwidth_gbps"] == value].sort_values(keys)
        assert (got["failure_s"] > 0).any()
        np.testing.assert_allclose(got["wall_clock_s"], exact["wall_clock_s"], rtol=1e-9)
        np.testing.assert_allclose(got["failure_s"], exact["failure_s"], rtol=1e-9)
