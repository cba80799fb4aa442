"""Workload facts derived from the model (no torch here; tests/real_models builds the models)."""

from __future__ import annotations

import pytest

from palsgd.core.config import from_dict, load, with_changes
from palsgd.core.errors import ConfigError
from palsgd.core.model_facts import model_facts
from palsgd.core.workload import ModelSpec, WorkloadSpec


def test_gpt_neo_8m_by_hand():
    facts = model_facts(ModelSpec(hidden=128, layers=8, heads=8, vocab=50257, seq_len=300))
    # wte + wpe + 8 layers x (12 h^2 + 10 h) + ln_f; 13 tensors per layer + wte, wpe, ln_f weight and bias
    assert facts.params == 50257 * 128 + 300 * 128 + 8 * (12 * 128 ** 2 + 10 * 128) + 2 * 128 == 8_054_656
    assert facts.tensors == 8 * 13 + 4
    assert facts.buffer_numels == ()
    assert facts.flops_per_sample == 300 * (6 * 8_054_656 + 12 * 8 * 300 * 128)


def test_cifar_resnet20_by_hand():
    # He et al. 2016 sec. 4.2: ResNet-20 has 0.27 M parameters; option-A shortcuts have none.
    facts = model_facts(ModelSpec(family="resnet", variant="cifar", depth=20, width=16, num_classes=10,
                                  image_size=32))
    convs = 3 * 9 * 16 + 6 * 16 * 9 * 16 + (16 * 9 * 32 + 5 * 32 * 9 * 32) + (32 * 9 * 64 + 5 * 64 * 9 * 64)
    bns = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    assert facts.params == convs + bns + 64 * 10 + 10 == 269_722
    assert facts.tensors == 19 + 2 * 19 + 2
    assert sum(facts.buffer_numels) == bns and len(facts.buffer_numels) == 2 * 19
    # MACs: each stage's convs at its resolution (32, 16, 8), plus the fc layer
    macs = (32 * 32 * (3 * 9 * 16 + 6 * 16 * 9 * 16) + 16 * 16 * (16 * 9 * 32 + 5 * 32 * 9 * 32)
            + 8 * 8 * (32 * 9 * 64 + 5 * 64 * 9 * 64) + 64 * 10)
    assert facts.flops_per_sample == 6 * macs


def test_torchvision_resnets_and_custom():
    assert model_facts(ModelSpec(family="resnet", variant="resnet50")).params == 25_557_032
    assert model_facts(ModelSpec(family="resnet", variant="resnet18")).tensors == 62
    assert model_facts(ModelSpec(family="custom")) is None


def test_a_changed_model_changes_params_tensors_and_flops():
    base = load(workload="gpt-tiny").workload
    wl = load(workload="gpt-tiny", overrides=["workload.model.hidden=256", "workload.model.layers=3"]).workload
    facts = model_facts(wl.model)
    assert (wl.params, wl.tensors, wl.flops_per_sample) == (facts.params, facts.tensors, facts.flops_per_sample)
    assert wl.params == 256 * 256 + 64 * 256 + 3 * (12 * 256 ** 2 + 10 * 256) + 2 * 256
    assert wl.params > 3 * base.params and wl.tensors == 3 * 13 + 4


def test_a_given_value_that_disagrees_names_both_numbers():
    with pytest.raises(ConfigError) as err:
        load(workload="gpt-tiny", overrides=["workload.params=436992", "workload.model.hidden=256"])
    msg = str(err.value)
    assert "--set: workload.params = 436992" in msg
    assert "hidden 256" in msg and "1,660,416 parameters" in msg and "remove the key or fix the model" in msg


def test_a_given_value_that_agrees_is_accepted():
    wl = load(workload="gpt-tiny", overrides=["workload.params=436992", "workload.tensors=30"]).workload
    assert (wl.params, wl.tensors) == (436_992, 30)


def test_custom_model_keeps_typed_values_and_requires_them():
    wl = WorkloadSpec(params=1000, tensors=3, flops_per_sample=5e6, model=ModelSpec(family="custom"))
    assert (wl.params, wl.tensors, wl.flops_per_sample) == (1000, 3, 5e6)
    with pytest.raises(ConfigError, match=r"workload.flops_per_sample: is required .*custom"):
        load(workload="gpt-tiny", overrides=["workload.model.family=custom", "workload.params=1000",
                                             "workload.tensors=3"])


def test_round_trip_and_sweep_over_the_model():
    exp = load(workload="gpt-tiny")
    assert from_dict(exp.to_dict()) == exp  # manifests store to_dict() with the derived facts
    wider = with_changes(exp, [("--vary", {"workload": {"model": {"hidden": 64}}})])
    assert wider.workload.params == model_facts(wider.workload.model).params < exp.workload.params
    custom = load(workload="gpt-tiny", overrides=["workload.model.family=custom", "workload.params=1000",
                                                  "workload.tensors=3", "workload.flops_per_sample=1e6"])
    again = with_changes(custom, [("--vary", {"workload": {"batch_per_worker": 2}})])
    assert (again.workload.params, again.workload.tensors) == (1000, 3)


def test_the_facts_are_derived_once_with_the_workload(monkeypatch):
    """The workload carries its model's facts; the simulator's costs read them and build nothing again."""
    from palsgd.core import config, workload
    from palsgd.sim import costs

    exp = config.load(workload="gpt-tiny", steps=20, algorithms=["ddp", "streaming_diloco"],
                      overrides=["algorithm.streaming_diloco.fragments=2"])
    assert exp.workload.facts is not None and exp.workload.facts.param_numels
    assert "facts" not in exp.workload.inputs() and "facts" not in exp.to_dict()["workload"]
    calls = []
    monkeypatch.setattr(workload, "model_facts", lambda spec: calls.append(spec))
    for spec in exp.algorithms:
        costs.step_costs(exp, spec)
    assert calls == []
