"""Sensitivity in every single answer: speedups vs inter-node bandwidth, H and nodes around the user's point."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from palsgd.cli import main
from palsgd.core import config, convergence
from palsgd.harness.commands import sensitivity
from palsgd.harness.commands.simulate import simulate_to_folder
from palsgd.reports import figures
from palsgd.reports.render import render_report

CONV = convergence.from_dict({"target_loss": 3.0, "ddp_steps": 500.0, "source": "hand-made", "points": [
    {"algorithm": "palsgd", "steps_vs_ddp": 3.0, "source": "hand-made"}]})


@pytest.fixture(scope="module")
def exp():
    base = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "palsgd"], steps=400)
    return convergence.with_convergence(base, CONV)


@pytest.fixture(scope="module")
def around(exp):
    return sensitivity.sensitivity(exp)


def test_each_key_is_varied_around_the_users_point_which_is_marked(exp, around):
    table = around.table
    values = {k: sorted(g["value"].unique()) for k, g in table.groupby("key")}
    assert values["cluster.inter_node.bandwidth_gbps"] == [1, 3, 10, 30, 100]  # 0.1x-10x the cluster's 10 Gb/s
    assert values["cluster.nodes"] == [2, 4, 8, 16, 32]
    assert values["algorithm.sync_every"] == [25, 50, 100, 200]  # H = 400 does not fit the 400 steps: said
    assert any("algorithm.sync_every = 400 left out" in n for n in around.notes)
    own = table[table["user_point"]]
    assert set(zip(own["key"], own["value"], strict=True)) == {
        ("cluster.inter_node.bandwidth_gbps", 10), ("cluster.nodes", 8), ("algorithm.sync_every", 100)}
    pal = table[table["algorithm"] == "palsgd"]
    assert pal["speedup_to_target_vs_ddp"].to_numpy() == pytest.approx(pal["speedup_vs_ddp"].to_numpy() / 3.0)


def test_crossovers_of_the_speedup_to_the_target_are_found(around):
    bandwidth = around.table[(around.table["key"] == "cluster.inter_node.bandwidth_gbps")
                             & (around.table["algorithm"] == "palsgd")].set_index("value")
    assert bandwidth.loc[10, "speedup_to_target_vs_ddp"] > 1 > bandwidth.loc[30, "speedup_to_target_vs_ddp"]
    cross = around.crossovers
    found = cross[(cross["key"] == "cluster.inter_node.bandwidth_gbps") & (cross["speedup"] == "to target")]
    assert len(found) == 1 and 10 < found["value"].iloc[0] < 30 and found["direction"].iloc[0] == "falls behind"
    assert not len(cross[cross["speedup"] == "same steps"])


def test_plain_simulate_stays_fast_and_report_and_json_carry_the_sensitivity(exp, tmp_path):
    assert simulate_to_folder(exp).sensitivity is None  # a few seconds more: only when asked for
    out, report = tmp_path / "res", tmp_path / "r.html"
    result = simulate_to_folder(exp, out=out, report=report)
    render_report(result.folders, report)
    assert len(pd.read_csv(out / "sensitivity.csv")) and len(pd.read_csv(out / "sensitivity_crossovers.csv"))
    html = report.read_text()
    assert "Sensitivity around this point" in html and "to target" in html
    svg = figures.sensitivity(pd.read_csv(out / "sensitivity.csv"), pd.read_csv(out / "sensitivity_crossovers.csv"))
    assert svg is not None and "<svg" in svg and "panel could not be drawn" not in html
    result = CliRunner().invoke(main, ["simulate", "--workload", "gpt-neo-8m", "--cluster", "a100-8x1-eth10",
                                       "--steps", "400", "--algorithms", "ddp,palsgd", "--json",
                                       "--sensitivity"])
    assert result.exit_code == 0, result.output
    rows = {row["algorithm"]: row for row in json.loads(result.output)}
    points = rows["palsgd"]["sensitivity"]["points"]
    assert {p["key"] for p in points} == {"cluster.inter_node.bandwidth_gbps", "cluster.nodes",
                                          "algorithm.sync_every"}
    assert sum(p["user_point"] for p in points) == 3 and all(p["speedup_to_target_vs_ddp"] is None for p in points)


def test_each_point_is_what_simulate_answers_for_it():
    """A point of the sensitivity is the user's whole run with one change: its wall-clock and speedup are
    those of ``palsgd simulate`` of that point, warm-up included (a window of the first steps weighed the
    DDP warm-up more than the run does: 4.11x against simulate's 18.15x for Local SGD on a100-8x1-eth10)."""
    exp = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "local_sgd"],
                      steps=1200, overrides=["algorithm.warmup_steps=100", "algorithm.sync_every=50"])
    table = sensitivity.sensitivity(exp).table
    for key, value in (("cluster.inter_node.bandwidth_gbps", 3.0), ("algorithm.sync_every", 100)):
        change: dict = {}
        config.set_path(change, key.split("."), value)
        point = config.with_changes(exp, [("test", change)])
        printed = simulate_to_folder(point).runs.set_index("algorithm")
        rows = table[(table["key"] == key) & (table["value"] == value)].set_index("algorithm")
        assert rows["speedup_vs_ddp"].to_dict() == pytest.approx(printed["speedup_vs_ddp"].to_dict(), rel=1e-12)


def test_a_point_is_one_row_per_algorithm_the_mean_over_seeds():
    """With repeats, a point's row is the mean of simulate's runs of that point (what its summary prints),
    not a row per run: with a row per run, --json repeated points x repeats entries in every one of its
    repeats x algorithms rows (100,000 repeats grew past 19 GB)."""
    exp = config.load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", algorithms=["ddp", "local_sgd"],
                      steps=300, overrides=["algorithm.sync_every=20", "cluster.variability.jitter_cv=0.1",
                                            "repeats=3"])
    table = sensitivity.sensitivity(exp).table
    assert not table.duplicated(["key", "value", "algorithm"]).any()
    change: dict = {}
    config.set_path(change, ["algorithm", "sync_every"], 40)
    printed = simulate_to_folder(config.with_changes(exp, [("test", change)])).runs
    assert printed.groupby("algorithm").size().eq(3).all()
    rows = table[(table["key"] == "algorithm.sync_every") & (table["value"] == 40)].set_index("algorithm")
    mean = printed.groupby("algorithm")["speedup_vs_ddp"].mean()
    assert rows["speedup_vs_ddp"].to_dict() == pytest.approx(mean.to_dict(), rel=1e-12)


def test_json_carries_the_sensitivity_only_when_asked():
    args = ["simulate", "--workload", "gpt-tiny", "--cluster", "cpu-2core-gloo", "--steps", "40", "--json"]
    rows = json.loads(CliRunner().invoke(main, args).output)
    assert rows and not any("sensitivity" in row for row in rows)
