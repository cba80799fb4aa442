"""Replica groups on 4 gloo ranks as 2 groups of 2 (group_scenarios.py): our algorithms bitwise equal to
a hand-written reference, and the simulator agreeing with the real ranks on the layout and the bytes."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from palsgd.core import config
from palsgd.core.groups import group_cluster, layout, sync_cluster
from palsgd.sim.engine import simulate

ALGORITHMS = ("local_sgd", "diloco", "palsgd")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("groups") / "results.pt"
    script = Path(__file__).with_name("group_scenarios.py")
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=480)
    return torch.load(out, weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALGORITHMS)
def test_groups_equal_the_hand_written_reference_bitwise(results, name):
    ours, reference = results[name], results[f"reference/{name}"]
    assert len(ours) == len(reference) == 8
    for step, (ranks, ref) in enumerate(zip(ours, reference, strict=True)):
        for rank, (a, b) in enumerate(zip(ranks, ref, strict=True)):
            assert torch.equal(a, b), (name, step, rank)
        assert torch.equal(ranks[0], ranks[1]) and torch.equal(ranks[2], ranks[3])  # DDP inside a group
    # The groups differ between syncs (their own data) and agree after one (H = 3: after steps 2 and 5,
    # or for Local SGD after steps 0, 3 and 6).
    synced = (0, 3, 6) if name == "local_sgd" else (2, 5)
    for step in range(8):
        assert torch.equal(ours[step][0], ours[step][2]) == (step in synced), (name, step)


def experiment():
    """What group_scenarios.py runs, as an experiment: 2 nodes x 2 ranks on gloo, a group per node, the
    74 parameters of its model in 4 tensors (all fit DDP's first bucket, as in the real run)."""
    return config.from_dict({
        "workload": {"params": 74, "tensors": 4, "model": {"family": "custom"}, "batch_per_worker": 8,
                     "flops_per_sample": 1.0},
        "cluster": {"nodes": 2, "gpus_per_node": 2, "transport": {"kind": "gloo"}},
        "algorithms": list(ALGORITHMS),
        "algorithm": {"sync_every": 3, "warmup_steps": 0, "replica_group": "node", "p": 0.4,
                      "skip_draws": "independent"},
        "budget": {"steps": 8},
    })


@pytest.mark.slow
def test_sim_and_real_agree_on_the_layout(results):
    exp = experiment()
    groups = layout("node", exp.cluster)
    for rank, (members, peers) in enumerate(results["layout"]):
        assert members == groups.members(groups.group(rank)) and peers == groups.peers(groups.position(rank))
    assert group_cluster(exp.cluster, groups.size).workers == len(results["layout"][0][0])
    assert sync_cluster(exp.cluster, groups.size).workers == len(results["layout"][0][1])


def communicated(rows) -> dict[tuple[int, int], float]:
    """Bytes each (worker, step) sent in its all-reduces, hidden or not."""
    out: dict[tuple[int, int], float] = defaultdict(float)
    for _source, _algorithm, _run, worker, step, phase, _start, _end, nbytes in rows:
        if phase in ("allreduce", "allreduce_hidden"):
            out[(int(worker), int(step))] += nbytes
    return dict(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALGORITHMS)
def test_sim_and_real_agree_on_the_bytes_of_every_step(results, name):
    sim = simulate(experiment(), record_steps=True).steps
    sim = sim[sim["algorithm"] == name]
    sim_rows = [(None, None, None, r.worker, r.step, r.phase, None, None, r.bytes) for r in sim.itertuples()]
    real = communicated([row for rank_rows in results[f"{name}/rows"] for row in rank_rows])
    expected = communicated(sim_rows)
    # 296 bytes of gradients or payload per rank and call: DDP steps inside a group (ring of 2) and
    # syncs across the groups (ring of 2), 2·(2-1)/2·296 each. PALSGD's pseudo-sync steps send nothing.
    for key in set(real) | set(expected):
        assert real.get(key, 0.0) == pytest.approx(expected.get(key, 0.0), rel=1e-12), (name, key)
    assert max(real.values()) == 2 * 296 and len(expected) >= 4 * 8 * (0.5 if name == "palsgd" else 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["diloco", "sparseloco"])  # sparseloco: its all-gather across the groups
def test_a_grouped_run_through_the_worker_sends_the_simulated_bytes(tiny, tmp_path, name):
    """``run_real`` on 4 gloo ranks, groups of 2: the worker builds the process groups itself; every
    (worker, step)'s bytes are what the simulator charges: warm-up DDP over 4 ranks, DDP inside the
    groups, syncs across them (the tiny GPT's real tensors, laid out by core/buckets.py on both sides)."""
    import pandas as pd

    from palsgd.core.config import with_changes
    from palsgd.harness.machinery.launch import run_real

    exp = tiny([name], steps=6, workers=4, replica_group=2)
    exp = with_changes(exp, [("test", {"cluster": {"transport": {"kind": "gloo"}}})])
    assert run_real(exp, tmp_path, nproc_per_node=4).status == "complete"
    real = pd.read_parquet(tmp_path / "steps.parquet")
    sim = simulate(exp, record_steps=True).steps

    def per_step(df):
        d = df[df["phase"].isin(["allreduce", "allreduce_hidden"])]
        return d.groupby(["worker", "step"])["bytes"].sum()

    both = pd.concat([per_step(real).rename("real"), per_step(sim).rename("sim")], axis=1)
    assert len(both) == 4 * 6 and not both.isna().any().any()
    assert both["real"].to_numpy() == pytest.approx(both["sim"].to_numpy(), rel=1e-9)
    # Three kinds of step: warm-up DDP over 4 ranks (2·3/4 of the gradients), DDP in a group of 2
    # (2·1/2), and a group step followed by a sync over 2 groups (twice that).
    gradients = both.loc[(0, 2), "real"]
    assert both.loc[(0, 0), "real"] == pytest.approx(1.5 * gradients)
    if name == "diloco":
        assert both.loc[(0, 4), "real"] == pytest.approx(2 * gradients)
    else:  # the group's DDP step, then one sparse message to the other group
        assert gradients < both.loc[(0, 4), "real"] < 1.1 * gradients
