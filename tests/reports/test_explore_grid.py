"""The explore grid: values around the user's own, only the fields the algorithms use; each point what
``palsgd simulate`` prints for it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from palsgd.core.config import load
from palsgd.harness.commands import explore


def test_axes_surround_the_users_point():
    exp = load(workload="gpt-neo-125m", cluster="a100-4x8-ib100",
               overrides=["cluster.inter_node.bandwidth_gbps=40", "algorithm.sync_every=64"])
    axes = dict(explore.axes(exp))
    assert axes["cluster.inter_node.bandwidth_gbps"] == [4.0, 12.0, 40.0, 120.0, 400.0]
    assert axes["cluster.nodes"] == [2, 4, 8]
    assert axes["algorithm.sync_every"] == [32, 64, 128]
    assert 0.2 in axes["algorithm.p"] and all(0 < p < 1 for p in axes["algorithm.p"])


def test_sparseloco_varies_its_top_k_density_up_to_1():
    exp = load(workload="gpt-neo-8m", algorithms=["ddp", "sparseloco"],
               overrides=["algorithm.sparseloco.topk_density=0.6"])
    assert dict(explore.axes(exp))["algorithm.topk_density"] == [0.3, 0.6, 1.0]


def test_streaming_diloco_varies_its_sync_delay_up_to_a_whole_round_at_every_h():
    def axes(tau, **kw):
        exp = load(workload="gpt-neo-8m", algorithms=["ddp", "streaming_diloco"],
                   overrides=["algorithm.sync_every=8", "algorithm.warmup_steps=0",
                              f"algorithm.streaming_diloco.fragment_sync_delay={tau}"])
        return dict(explore.axes(exp, **kw))
    # No delay: H 4, 8, 16 and the delays none and a whole round at H = 4; a whole round at H = 8 leaves H
    # 8 and 16 (a smaller H would refuse the user's own delay, as it refused the whole page before).
    assert (axes(0)["algorithm.sync_every"], axes(0)["algorithm.streaming_diloco.fragment_sync_delay"]) == \
        ([4, 8, 16], [0, 4])
    assert (axes(8)["algorithm.sync_every"], axes(8)["algorithm.streaming_diloco.fragment_sync_delay"]) == \
        ([8, 16], [0, 8])
    # The sensitivity varies one field at a time: the delay up to a whole round at the user's H.
    assert axes(0, sliced=True)["algorithm.streaming_diloco.fragment_sync_delay"] == [0, 8]
    assert "algorithm.streaming_diloco.fragment_sync_delay" not in axes_of(["ddp", "diloco"])


def axes_of(algorithms):
    return [k for k, _ in explore.axes(load(workload="gpt-neo-8m", algorithms=algorithms))]


def test_fields_no_algorithm_uses_are_not_varied():
    exp = load(workload="gpt-neo-8m", algorithms=["ddp", "local_sgd"], overrides=["cluster.nodes=1"])
    keys = [k for k, _ in explore.axes(exp)]
    assert "algorithm.p" not in keys and "algorithm.sync_every" in keys
    assert "algorithm.topk_density" not in keys
    assert dict(explore.axes(exp))["cluster.nodes"] == [1, 2]
    ddp = load(workload="gpt-neo-8m", algorithms=["ddp"])
    assert "algorithm.sync_every" not in [k for k, _ in explore.axes(ddp)]


@pytest.mark.slow
def test_explore_command_writes_one_offline_page(tmp_path):
    page = tmp_path / "explore.html"
    r = subprocess.run([sys.executable, "-m", "palsgd.cli", "explore", "--workload", "gpt-neo-8m", "--algorithms",
                        "ddp,local_sgd", "--set", "cluster.nodes=1", "-o", str(page)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"?https?:|<(link|iframe)\b", html)
    data = json.loads(re.search(r'<script type="application/json" id="grid-data">(.*?)</script>', html, re.S)[1])
    sizes = [len(a["values"]) for a in data["axes"]]
    assert [a["key"] for a in data["axes"]] == [k for k, _ in explore.axes(
        load(workload="gpt-neo-8m", algorithms=["ddp", "local_sgd"], overrides=["cluster.nodes=1"]))]
    assert len(data["cells"]) == sizes[0] * sizes[1] * sizes[2] * sizes[3] * sizes[4]
    assert all(cell is not None for cell in data["cells"])  # every point was simulated
    assert f"({len(data['cells'])} simulated points)" in r.stdout


def test_replica_groups_are_an_axis_when_the_experiment_uses_them():
    flat = load(workload="gpt-neo-8m", algorithms=["ddp", "diloco"])
    assert "algorithm.replica_group" not in dict(explore.axes(flat))
    grouped = load(workload="gpt-neo-8m", algorithms=["ddp", "diloco"], overrides=['algorithm.replica_group="node"'])
    axes = explore.axes(grouped)
    assert dict(axes)["algorithm.replica_group"] == ["worker", "node"]
    assert explore.own_values(grouped, axes)["algorithm.replica_group"] == 8
    # Every value tiles every point of the nodes axis; the table records the workers per replica.
    grid = [(point, exp) for point, exp in (explore.sweep.points(grouped, [
        ("cluster.nodes", dict(axes)["cluster.nodes"]), ("algorithm.replica_group", ["worker", "node"])]))]
    assert sorted({p["algorithm.replica_group"] for p, _ in grid}) == [1, 8]
    assert all(e.group_size(e.algorithm("diloco")) == p["algorithm.replica_group"] for p, e in grid)


@pytest.mark.parametrize("jitter_cv, rel", [(0.0, 1e-9), (0.1, 5e-3)])
def test_each_point_is_what_simulate_prints_for_it(jitter_cv, rel):
    """A point is the user's whole run with its changes (a window of the first steps weighed the DDP
    warm-up more than the run does: 4.11x against simulate's 18.15x for Local SGD on a100-8x1-eth10).
    Here DDP and Streaming DiLoCo (fragment_sync_delay > 0) are extrapolated from their first periods,
    Local SGD and PALSGD take the fast path: equal up to rounding without jitter, within 0.5 % with it."""
    from palsgd.core.config import with_changes
    from palsgd.harness.commands.simulate import simulate_to_folder

    exp = load(workload="gpt-neo-8m", cluster="a100-8x1-eth10", steps=12000,
               algorithms=["ddp", "local_sgd", "palsgd", "streaming_diloco"],
               overrides=["algorithm.warmup_steps=100", "algorithm.fragment_sync_delay=1",
                          f"cluster.variability.jitter_cv={jitter_cv}"])
    grid = explore.explore(exp, jobs=1, grid_axes=[("cluster.inter_node.bandwidth_gbps", [3.0, 10.0]),
                                                   ("algorithm.sync_every", [50, 100])])
    table = grid.table.set_index(["cluster.inter_node.bandwidth_gbps", "algorithm.sync_every", "algorithm"])
    engines = table["engine"].to_dict()
    assert engines[(3.0, 50, "local_sgd")] == engines[(3.0, 50, "palsgd")] == "fast engine"
    # DDP with Streaming DiLoCo: 12000 - 100 (warm-up) - 50 (settling) leaves 11,850, so A = 150, + 400 measured
    assert engines[(3.0, 50, "ddp")] == engines[(3.0, 50, "streaming_diloco")] == "exact engine, 550 steps extrapolated"
    for bandwidth, h in ((3.0, 50), (10.0, 100)):
        point = with_changes(exp, [("test", {"cluster": {"inter_node": {"bandwidth_gbps": bandwidth}},
                                             "algorithm": {"sync_every": h}})])
        printed = simulate_to_folder(point).runs.set_index("algorithm")
        rows = table.loc[(bandwidth, h)]
        for column in ("wall_clock_s", "speedup_vs_ddp"):
            assert rows[column].to_dict() == pytest.approx(printed[column].to_dict(), rel=rel), column
