"""The model zoo: exact parameter counts of every preset, layouts, FLOPs, causality, determinism."""

from __future__ import annotations

import pytest
import torch

from palsgd.core import presets
from palsgd.core.config import load
from palsgd.core.errors import ConfigError
from palsgd.core.model_facts import model_facts
from palsgd.core.workload import ModelSpec
from palsgd.real.models import build_model, compute_loss, count_params, count_tensors
from palsgd.sim.costs import step_costs

TINY_GPT = ModelSpec(hidden=32, layers=2, heads=4, vocab=256, seq_len=16)
TINY_RESNET = ModelSpec(family="resnet", variant="cifar", depth=8, width=4, num_classes=10, image_size=8,
                        in_channels=1)


TINY_PRESETS = ("gpt-tiny", "resnet-tiny")


@pytest.mark.parametrize("name", presets.names("workload"))
def test_every_workload_preset_derives_the_facts_of_its_built_model(name):
    wl = load(workload=name).workload
    # Tiny models for real (a real forward pass counts the MACs); big ones on the meta device: no
    # memory, no init cost, the 125M model builds in milliseconds.
    with torch.device("cpu" if name in TINY_PRESETS else "meta"):
        model = build_model(wl.model)
    facts = model_facts(wl.model)
    assert facts.param_numels == tuple(p.numel() for p in model.parameters())
    assert facts.buffer_numels == tuple(b.numel() for b in model.buffers() if b.is_floating_point())
    assert (wl.params, wl.tensors) == (count_params(model), count_tensors(model))
    assert wl.flops_per_sample == independent_flops(model, wl.model)


def independent_flops(model: torch.nn.Module, spec: ModelSpec) -> float:
    """GPT: T (6N + 12 layers T hidden) with N counted on the built model (Kaplan et al. 2020 plus
    attention). ResNet: 6 x the MACs of every conv and linear layer, counted by forward hooks."""
    if spec.family == "gpt_neo":
        t = spec.seq_len
        return t * (6 * count_params(model) + 12 * len(model.h) * t * model.ln_f.normalized_shape[0])
    macs = 0

    def count(module, _inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size, device=device))
    for hook in hooks:
        hook.remove()
    return 6.0 * macs


@pytest.mark.parametrize("spec", [
    TINY_RESNET,
    ModelSpec(family="resnet", variant="resnet18", num_classes=7, image_size=33, in_channels=2),
    ModelSpec(hidden=48, layers=3, heads=4, vocab=97, seq_len=20, positions=32),
])
def test_odd_shapes_derive_the_built_model_facts(spec):
    with torch.device("meta"):
        model = build_model(spec)
    facts = model_facts(spec)
    assert facts.param_numels == tuple(p.numel() for p in model.parameters())
    assert facts.buffer_numels == tuple(b.numel() for b in model.buffers() if b.is_floating_point())
    assert facts.flops_per_sample == independent_flops(model, spec)


def test_simulator_sends_the_bytes_of_the_model_that_run_builds():
    exp = load(workload="gpt-tiny", overrides=["workload.model.hidden=256"])
    sim_payload_bytes = step_costs(exp, exp.algorithm("local_sgd")).payload_bytes
    assert sim_payload_bytes == 4 * count_params(build_model(exp.workload.model)) == 4 * 1_660_416


def test_gpt_neo_8m_count_by_hand():
    # wte 50257*128 + wpe 300*128 + 8 layers * (12*128^2 + 10*128) + ln_f 2*128
    spec = ModelSpec(hidden=128, layers=8, heads=8, vocab=50257, seq_len=300)
    with torch.device("meta"):
        assert count_params(build_model(spec)) == 8_054_656


def test_gpt_neo_125m_has_1024_positions_and_300_token_samples():
    spec = ModelSpec(hidden=768, layers=12, heads=12, vocab=50257, seq_len=300, positions=1024)
    with torch.device("meta"):
        model = build_model(spec)
    assert count_params(model) == 124_412_160
    assert model.wpe.num_embeddings == 1024
    # 300 * (6 N + 12 * layers * T * hidden), by hand
    assert model_facts(spec).flops_per_sample == 300 * (6 * 124_412_160 + 12 * 12 * 300 * 768)


def test_custom_model_is_not_buildable():
    with pytest.raises(ConfigError, match=r"workload\.model\.family = 'custom'"):
        build_model(ModelSpec(family="custom"))


def test_gpt_layout_biases_and_tied_head():
    model = build_model(TINY_GPT)
    names = {n for n, _ in model.named_parameters()}
    assert "h.0.attn.q_proj.weight" in names and "h.0.attn.q_proj.bias" not in names
    assert {"h.0.attn.out_proj.bias", "h.0.c_fc.bias", "h.0.c_proj.bias", "ln_f.weight"} <= names
    assert not any("lm_head" in n for n in names)  # tied: the logits use wte.weight
    x = torch.randint(0, 256, (2, 16))
    logits = model(x)
    assert logits.shape == (2, 16, 256)
    manual = torch.nn.functional.linear(model.ln_f(_hidden(model, x)), model.wte.weight)
    torch.testing.assert_close(logits, manual)


def _hidden(model, x):
    h = model.wte(x) + model.wpe(torch.arange(x.shape[1]))
    for block in model.h:
        h = block(h)
    return h


def test_gpt_is_causal():
    model = build_model(TINY_GPT)
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 256
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_init_is_deterministic_from_the_torch_seed_and_normal_002():
    torch.manual_seed(5)
    a = build_model(TINY_GPT)
    torch.manual_seed(5)
    b = build_model(TINY_GPT)
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q)
    big = build_model(ModelSpec(hidden=256, layers=1, heads=4, vocab=512, seq_len=8))
    assert big.h[0].c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(big.h[0].c_fc.bias) == 0


def test_gpt_rejects_sequences_longer_than_its_positions():
    with pytest.raises(ValueError, match="positions"):
        build_model(TINY_GPT)(torch.zeros(1, 17, dtype=torch.long))


def test_loss_of_uniform_logits_is_log_vocab_and_ignores_padding():
    model = build_model(TINY_GPT)
    torch.nn.init.zeros_(model.wte.weight)  # zero logits everywhere
    x = torch.randint(0, 256, (2, 16))
    targets = x.clone()
    targets[:, 8:] = -100
    assert compute_loss(model, (x, targets)).item() == pytest.approx(torch.log(torch.tensor(256.0)).item())


@pytest.mark.parametrize(("variant", "params", "tensors"), [
    ("resnet50", 25_557_032, 161),   # torchvision resnet50
    ("resnet18", 11_689_512, 62),    # torchvision resnet18
])
def test_torchvision_resnets(variant, params, tensors):
    spec = ModelSpec(family="resnet", variant=variant)
    with torch.device("meta"):
        model = build_model(spec)
    assert (count_params(model), count_tensors(model)) == (params, tensors)
    # 6 x MACs; He et al. 2016 table 1: 3.8 / 1.8 GFLOPs (multiply-adds); torchvision: 4.09 / 1.81 GMAC
    gmac = {"resnet50": 4.09, "resnet18": 1.81}[variant]
    assert model_facts(spec).flops_per_sample / 6 / 1e9 == pytest.approx(gmac, rel=0.01)


def test_cifar_resnet20_by_hand():
    # He et al. 2016 sec. 4.2: ResNet-20 has 0.27 M parameters. Option-A shortcuts have none.
    spec = ModelSpec(family="resnet", variant="cifar", depth=20, width=16, num_classes=10, image_size=32)
    convs = 3 * 9 * 16 + 6 * 16 * 9 * 16 + (16 * 9 * 32 + 5 * 32 * 9 * 32) + (32 * 9 * 64 + 5 * 64 * 9 * 64)
    bns = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    assert count_params(build_model(spec)) == convs + bns + 64 * 10 + 10 == 269_722


def test_resnet_forward_shapes_and_batchnorm_buffers():
    model = build_model(TINY_RESNET)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    buffers = dict(model.named_buffers())
    assert "bn1.running_mean" in buffers and "layer1.0.bn1.running_var" in buffers
    small18 = build_model(ModelSpec(family="resnet", variant="resnet18", num_classes=7, image_size=32))
    assert small18(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    loss = compute_loss(model, (torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 9])))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
