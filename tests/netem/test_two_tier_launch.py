"""The launcher on emulated nodes: one torchrun agent per node with its ranks, the layout checked against
the experiment's cluster (nodes x gpus_per_node)."""

import pytest

from palsgd.core.config import from_dict
from palsgd.core.errors import ConfigError
from palsgd.harness.machinery.launch import run_real
from palsgd.harness.machinery.netem import EmulatedNetwork, NetemSpec


def _experiment(nodes, gpus_per_node, steps=6):
    """A 1-layer byte-level GPT on the offline Shakespeare text: seconds per run on CPU."""
    return from_dict({
        "workload": {"name": "tiny", "batch_per_worker": 4,
                     "model": {"family": "gpt_neo", "hidden": 16, "layers": 1, "heads": 2, "vocab": 257,
                               "seq_len": 16},
                     "data": {"source": "shakespeare"}},
        "cluster": {"nodes": nodes, "gpus_per_node": gpus_per_node},
        "train": {"optimizer": "adamw", "lr": 3e-3, "eval_batches": 2, "threads_per_rank": 1},
        "algorithm": {"sync_every": 3, "warmup_steps": 2},
        "algorithms": ["local_sgd"], "budget": {"steps": steps}})


def test_layout_must_match_the_experiment(tmp_path):
    net = EmulatedNetwork(4, NetemSpec.parse("nodes=2,rate=1gbit"))  # not entered: nothing is built
    with pytest.raises(ConfigError, match="2 x 2"):
        run_real(_experiment(1, 4), tmp_path / "run", nproc_per_node=4, network=net)


def test_ranks_must_split_over_the_nodes():
    with pytest.raises(ConfigError) as err:
        EmulatedNetwork(3, NetemSpec.parse("nodes=2,rate=1gbit"))
    assert err.value.key == "--emulate-network"


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.usefixtures("netns_ok")
def test_two_nodes_of_two_ranks(tmp_path):
    """About 30 s: 4 gloo ranks, 2 per emulated node, one torchrun agent per node."""
    with EmulatedNetwork(4, NetemSpec.parse("nodes=2,rate=1gbit,delay=1ms")) as net:
        result = run_real(_experiment(2, 2), tmp_path / "run", nproc_per_node=4, network=net, timeout_s=120)
    assert result.status == "complete"
    assert list(result.runs["workers"]) == [4]
