"""`palsgd run --emulate-network nodes=K`: the experiment's cluster becomes K nodes; data is not needed
with emulated compute."""

import dataclasses

import pytest

from palsgd.core.config import load
from palsgd.core.errors import ConfigError
from palsgd.harness.machinery.netem import NetemSpec
from palsgd.harness.machinery.pipeline import on_emulated_nodes
from palsgd.real import preflight


def test_ranks_are_split_over_the_emulated_nodes():
    exp = load(workload="gpt-tiny", overrides=["cluster.nodes=1", "cluster.gpus_per_node=4"])
    out = on_emulated_nodes(exp, NetemSpec.parse("nodes=2,rate=1gbit,delay=5ms"), 4)
    assert (out.cluster.nodes, out.cluster.gpus_per_node, out.workers) == (2, 2, 4)
    assert on_emulated_nodes(exp, NetemSpec.parse("rate=1gbit"), 4) is exp
    with pytest.raises(ConfigError, match="split evenly"):
        on_emulated_nodes(exp, NetemSpec.parse("nodes=3,rate=1gbit"), 4)


def test_preflight_of_emulated_compute_reads_no_data():
    # TinyStories is not on this machine: real compute would fail to open it, emulated compute never reads it.
    exp = load(workload="gpt-neo-8m", overrides=['train.compute="emulated"', "cluster.gpus_per_node=2",
                                                  "cluster.nodes=1", "workload.data.path=/nonexistent"])
    assert preflight.check(exp, 2).startswith("preflight:")
    with pytest.raises(ConfigError):
        preflight.check(exp.replace(train=dataclasses.replace(exp.train, compute="real")), 2)
