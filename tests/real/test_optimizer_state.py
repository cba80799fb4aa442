"""The optimizer state a warm-up syncs: the count both sides take from core (OPTIMIZER_STATE_TENSORS) is
what torch's optimizers keep, and what the simulator charges follows the optimizer, not a typed number."""

import pytest
import torch

from palsgd.core import config
from palsgd.core.errors import ConfigError
from palsgd.core.workload import OPTIMIZER_STATE_TENSORS, TrainSpec
from palsgd.real.optim import build_optimizer
from palsgd.sim.costs import step_costs


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_STATE_TENSORS))
def test_the_count_is_what_the_torch_optimizer_keeps(optimizer):
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model.parameters(), TrainSpec(optimizer=optimizer))
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    for p in model.parameters():  # real/algorithms/base.py optimizer_state() takes exactly these
        state = [v for v in opt.state[p].values() if torch.is_tensor(v) and v.shape == p.shape]
        assert len(state) == OPTIMIZER_STATE_TENSORS[optimizer]


def test_the_simulator_charges_the_optimizer_s_state():
    """Plain SGD has no state to sync: its warm-up costs nothing extra; AdamW's two tensors do."""
    sets = ["algorithm.warmup_steps=10", "algorithm.warmup_syncs_optimizer_state=true"]
    extra = {}
    for optimizer in ("sgd", "adamw"):
        exp = config.load(workload="gpt-tiny", steps=40, algorithms=["local_sgd"],
                          overrides=[*sets, f'train.optimizer="{optimizer}"'])
        extra[optimizer] = step_costs(exp, exp.algorithms[0]).warmup_extra_s
    assert extra["sgd"] == 0 and extra["adamw"] > 0


def test_an_old_typed_value_loads_when_it_agrees_and_is_named_when_not():
    exp = config.load(workload="gpt-tiny", overrides=["workload.optimizer_state_tensors=2"])
    assert exp.train.optimizer == "adamw" and exp.train.optimizer_state_tensors == 2
    with pytest.raises(ConfigError, match=r"optimizer_state_tensors.*derived from train.optimizer"):
        config.load(workload="gpt-tiny", overrides=["workload.optimizer_state_tensors=1"])
