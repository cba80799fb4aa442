"""The experiment loader: layers, overrides, and errors that name file, key, value and rule."""

import typing

import pytest

from palsgd.core import config, presets
from palsgd.core.errors import ConfigError


def _error(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(**kwargs)
    return str(info.value)


def test_defaults_load_every_algorithm():
    exp = config.load()
    assert [a.name for a in exp.algorithms] == ["ddp", "local_sgd", "diloco", "palsgd"]
    assert exp.workload.name == presets.DEFAULT_WORKLOAD
    assert exp.cluster.name == presets.DEFAULT_CLUSTER


def test_every_preset_loads():
    for workload in presets.names("workload"):
        for cluster in presets.names("cluster"):
            exp = config.load(workload=workload, cluster=cluster, steps=1000,
                              overrides=["algorithm.warmup_steps=10", "algorithm.sync_every=10"])
            assert exp.workers == exp.cluster.nodes * exp.cluster.gpus_per_node


def test_override_reaches_nested_field_and_is_typed():
    exp = config.load(overrides=["cluster.inter_node.bandwidth_gbps=10", "algorithm.palsgd.p=0.3"])
    assert exp.cluster.inter_node.bandwidth_gbps == 10.0
    assert exp.algorithm("palsgd").p == 0.3
    assert exp.algorithm("diloco").p == exp.algorithm("local_sgd").p  # per-algorithm table only


def test_shared_algorithm_table_applies_to_all_that_use_the_key():
    exp = config.load(overrides=["algorithm.sync_every=50"])
    assert {a.sync_every for a in exp.algorithms if a.is_local} == {50}
    assert exp.algorithm("ddp").sync_every == config.AlgorithmSpec().sync_every  # DDP has no H


@pytest.mark.parametrize("override", ["algorithm.ddp.p=0.1", "algorithm.local_sgd.outer_lr=0.5",
                                      "algorithm.ddp.sync_every=5", "algorithm.diloco.eta=0.1"])
def test_key_of_another_algorithm_is_refused(override):
    with pytest.raises(ConfigError, match=r"does not apply to"):
        config.load(overrides=[override])


@pytest.mark.parametrize("override", ["algorithm.name=nope", "algorithm.palsgd.name=ddp"])
def test_name_in_an_algorithm_table_is_refused(override):
    with pytest.raises(ConfigError, match=r"algorithm\.(palsgd\.)?name"):
        config.load(overrides=[override])


def test_shared_key_of_no_chosen_algorithm_is_still_checked():
    with pytest.raises(ConfigError, match="must be in"):
        config.load(algorithms=["ddp"], overrides=["algorithm.p=5"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("cluster.inter_node.bandwidth_gbps=-1", "--set: cluster.inter_node.bandwidth_gbps = -1.0: must be > 0"),
        ("cluster.bogus=1", "--set: cluster.bogus: unknown key"),
        ("algorithm.palsgd.p=1", "--set: algorithm.palsgd.p = 1.0: must be in [0, 1)"),
        ("algorithm.p=-0.1", "--set: algorithm.p = -0.1: must be in [0, 1)"),
        ("algorithm.sync_every=0", "--set: algorithm.sync_every = 0: must be >= 1 (H)"),
        ("cluster.nodes=four", "--set: cluster.nodes = 'four': must be an integer"),
        ("cluster.nodes=2.5", "--set: cluster.nodes = 2.5: must be an integer"),
        ("cluster.transport.kind=mpi", "--set: cluster.transport.kind = 'mpi': must be one of: nccl, gloo"),
        ("nonsense", "--set: 'nonsense': expected KEY=VALUE"),
    ],
)
def test_bad_overrides_name_source_key_value_rule(override, expected):
    assert _error(overrides=[override]).startswith(expected)


def test_contradictions_are_rejected():
    assert "must be shorter than the run (50 steps)" in _error(steps=50, overrides=["algorithm.warmup_steps=50"])
    assert "must fit in the run after the warm-up" in _error(
        steps=50, overrides=["algorithm.warmup_steps=10", "algorithm.sync_every=41"])


def test_unknown_preset_lists_known_ones():
    message = _error(workload="nope")
    assert "--workload: workload = 'nope': unknown workload preset; known:" in message
    assert "gpt-neo-8m" in message


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "exp.toml"
    bad.write_text("[cluster]\nnodes = 0\n")
    assert _error(path=bad) == f"{bad}: cluster.nodes = 0: must be >= 1"
    bad.write_text("[cluster\n")
    assert _error(path=bad).startswith(f"{bad}: not valid TOML")
    assert _error(path=tmp_path / "missing.toml") == f"{tmp_path / 'missing.toml'}: file not found"


def test_experiment_file_layers_over_presets(tmp_path):
    f = tmp_path / "exp.toml"
    # `cluster = "name"` and a [cluster] table cannot both stand in TOML: the table takes `preset`.
    f.write_text('workload = "gpt-neo-8m"\nalgorithms = ["ddp", "palsgd"]\n'
                 'seed = 7\n[budget]\nsteps = 500\nepochs = 0\n[cluster]\npreset = "a100-4x8-ib100"\nnodes = 2\n'

                 "[algorithm.palsgd]\np = 0.1\n")
    exp = config.load(f)
    assert exp.workload.name == "gpt-neo-8m"
    assert exp.cluster.nodes == 2 and exp.workers == 16
    assert [a.name for a in exp.algorithms] == ["ddp", "palsgd"]
    assert exp.algorithm("palsgd").p == 0.1 and exp.seed == 7 and exp.nominal_steps == 500
    # the command line wins over the file
    assert config.load(f, steps=300, overrides=["cluster.nodes=3"]).cluster.nodes == 3


def test_round_trip_through_dict():
    exp = config.load(workload="resnet50-imagenet", overrides=["algorithm.palsgd.eta=0.25"])
    assert config.from_dict(exp.to_dict()) == exp


def test_epochs_budget_counts_steps_of_the_whole_cluster():
    exp = config.load(workload="gpt-neo-8m", epochs=1)
    assert exp.steps_per_epoch == 2_119_719 // (64 * 32)
    assert exp.nominal_steps == exp.steps_per_epoch


def test_steps_and_epochs_together_are_rejected():
    assert "exactly one of budget.steps and budget.epochs" in _error(overrides=["budget.steps=10"])


def test_every_algorithm_says_which_keys_apply_to_it():
    from palsgd.core.algorithms import ALGORITHMS, FACTS

    assert tuple(FACTS) == ALGORITHMS
    assert typing.get_args(typing.get_type_hints(config.AlgorithmSpec)["name"]) == ALGORITHMS
    fields = {f for f in config.AlgorithmSpec.__dataclass_fields__ if f != "name"}
    assert set().union(*(set(f.keys) for f in FACTS.values())) == fields  # no parameter applies to none


def test_bucket_mb_is_read_as_bucket_mib_and_both_names_are_refused(tmp_path):
    """``bucket_mib`` (MiB, as PyTorch's ``bucket_cap_mb``) was ``bucket_mb``: experiment files and results
    folders with the former name keep loading, with the same value."""
    load = config.load
    assert load(overrides=["algorithm.bucket_mb=60"]).algorithm("ddp").bucket_mib == 60.0
    old = load().to_dict()
    old["algorithm"]["ddp"] = {("bucket_mb" if k == "bucket_mib" else k): v for k, v in old["algorithm"]["ddp"].items()}
    old["algorithm"]["ddp"]["bucket_mb"] = 4.0
    assert config.from_dict(old).algorithm("ddp").bucket_mib == 4.0
    varied = config.with_changes(load(), [("--vary", {"algorithm": {"bucket_mb": 8.0}})])
    assert varied.algorithm("ddp").bucket_mib == 8.0
    path = tmp_path / "exp.toml"
    path.write_text("[algorithm]\nbucket_mb = 10\nbucket_mib = 20\n")
    with pytest.raises(ConfigError, match=r"algorithm\.bucket_mb.*former name of bucket_mib") as err:
        load(path)
    assert str(path) in str(err.value)
