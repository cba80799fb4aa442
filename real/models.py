"""The models the real harness trains: the GPT-Neo family and the ResNet family, in plain torch.

No torchvision and no transformers (torchvision from PyPI does not import beside the CPU torch wheel),
so both families are written here, parameter for parameter in the layout of their reference:

- GPT-Neo (Black et al. 2021; Hugging Face ``GPTNeoForCausalLM``): token embedding tied with the LM
  head, learned positions, pre-LayerNorm blocks with bias-free q/k/v projections. GPT-Neo alternates
  global and local (window 256) attention; every layer here attends globally (causal), which is the
  same computation for the paper's 300-token samples up to the window, and costs the same parameters.
- ResNet-50/18 (He et al. 2016, arXiv 1512.03385) in torchvision's layout (stride in the 3x3 conv,
  "ResNet v1.5"), and the CIFAR ResNet of the same paper's section 4.2 (depth 6n + 2, three stages,
  identity shortcuts padded with zeros: "option A").

Models know nothing of ranks or devices; the algorithms move and average them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..core.workload import ModelSpec

# ---------------------------------------------------------------------------------------------
# GPT-Neo


class SelfAttention(nn.Module):
    """Causal multi-head attention: q, k, v without bias, out_proj with bias (GPT-Neo layout)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        # [B, T, h] -> [B, heads, T, h / heads]
        q, k, v = (proj(x).view(b, t, self.heads, h // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, h))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); MLP h -> 4h -> h."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden)
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.c_proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        # GPT-Neo's "gelu_new" is the tanh approximation.
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPTNeo(nn.Module):
    """Token ids [B, T] -> next-token logits [B, T, vocab]. Dropout 0 (the timing is what matters)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.wte = nn.Embedding(spec.vocab, spec.hidden)
        self.wpe = nn.Embedding(spec.n_positions, spec.hidden)
        self.h = nn.ModuleList(Block(spec.hidden, spec.heads) for _ in range(spec.layers))
        self.ln_f = nn.LayerNorm(spec.hidden)
        self.apply(_init_gpt)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.wpe.num_embeddings:
            raise ValueError(f"sequence of {t} tokens is longer than the {self.wpe.num_embeddings} positions")
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        # LM head tied with the token embedding: one [vocab, hidden] matrix, counted once.
        return F.linear(self.ln_f(x), self.wte.weight)


def _init_gpt(module: nn.Module) -> None:
    """Normal(0, 0.02) weights, zero biases (GPT-2 / GPT-Neo ``initializer_range``)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------
# ResNet


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNet)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, shortcut: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's v1.5), 1x1 expand by 4 (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, shortcut: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class PadShortcut(nn.Module):
    """CIFAR ResNet "option A": subsample by the stride, pad the new channels with zeros; no parameters."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        # F.pad pads the last dims first: (W, W, H, H, C_before, C_after).
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class ResNet(nn.Module):
    """Images [B, C, H, W] -> class logits [B, classes]: stem, stages of blocks, global pool, fc.

    Module names follow torchvision (conv1, bn1, layer1..layer4, fc), so its state dicts load.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        cifar = spec.variant == "cifar"
        if cifar:  # 3x3 stem, no pooling: small images keep their resolution (He et al. 2016, 4.2)
            n = (spec.depth - 2) // 6
            block, counts, strides = BasicBlock, [n] * 3, [1, 2, 2]
            widths = [spec.width, 2 * spec.width, 4 * spec.width]
            self.conv1 = nn.Conv2d(spec.in_channels, spec.width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            block = Bottleneck if spec.variant == "resnet50" else BasicBlock
            counts = [3, 4, 6, 3] if spec.variant == "resnet50" else [2, 2, 2, 2]
            widths, strides = [64, 128, 256, 512], [1, 2, 2, 2]
            self.conv1 = nn.Conv2d(spec.in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = widths[0]
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layers = len(counts)
        for i, (w, c, s) in enumerate(zip(widths, counts, strides, strict=True)):
            self.add_module(f"layer{i + 1}", self._stage(block, w, c, s, cifar))
        self.fc = nn.Linear(self.inplanes, spec.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init, as torchvision
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, block: type, planes: int, count: int, stride: int, cifar: bool) -> nn.Sequential:
        blocks = []
        for i in range(count):
            s = stride if i == 0 else 1
            out = planes * block.expansion
            shortcut = None
            if cifar and (s != 1 or self.inplanes != out):
                shortcut = PadShortcut(s, out - self.inplanes)
            elif s != 1 or self.inplanes != out:
                shortcut = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, s, bias=False), nn.BatchNorm2d(out))
            blocks.append(block(self.inplanes, planes, s, shortcut))
            self.inplanes = out
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(self.layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------------------------
# The API the algorithms and the worker use


def build_model(spec: ModelSpec) -> nn.Module:
    """The model of ``spec``, initialised from the current torch seed (seed before calling).

    Under ``with torch.device("meta"):`` it builds without memory, to count parameters of big models.
    Its tensor sizes and FLOPs are ``core.model_facts.model_facts(spec)``, which the simulator charges.
    """
    if spec.family == "gpt_neo":
        return GPTNeo(spec)
    if spec.family == "resnet":
        return ResNet(spec)
    raise ConfigError("there is no model to build: a custom model is for the simulator only",
                      key="workload.model.family", value=spec.family)


def compute_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy: GPT logits [B, T, V] vs next tokens [B, T]; ResNet logits [B, C] vs labels [B]."""
    inputs, targets = batch
    logits = model(inputs)
    # Under autocast, cross_entropy runs in fp32 by itself (it is on autocast's fp32 list).
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


def count_params(model: nn.Module) -> int:
    """Trainable parameters N; the tied LM head is one tensor and counts once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_tensors(model: nn.Module) -> int:
    """Parameter tensors: the all-reduce calls when each tensor is sent on its own."""
    return sum(1 for p in model.parameters() if p.requires_grad)


__all__ = ["GPTNeo", "ResNet", "build_model", "compute_loss", "count_params", "count_tensors"]
