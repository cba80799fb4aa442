"""What a buildable model is, without building it: tensor sizes and FLOPs, one truth for sim and real.

The layouts mirror ``real/models.py`` tensor for tensor, in registration order, so that
``param_numels`` is ``[p.numel() for p in model.parameters()]`` of the built model and
``buffer_numels`` the floating-point entries of ``model.buffers()`` (BatchNorm's running mean and
variance; its ``num_batches_tracked`` is an integer, never averaged, only broadcast by DDP:
``int_buffer_numels``).
``tests/real_models/test_models.py`` builds every preset's model and checks both, and the FLOPs
against an independent count.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # workload.py derives its facts from here: no import at run time
    from .workload import ModelSpec


@dataclass(frozen=True)
class ModelFacts:
    param_numels: tuple[int, ...]
    """Trainable parameters, in ``model.parameters()`` order of ``real/models.py``."""
    buffer_numels: tuple[int, ...]
    """Floating-point buffers (BatchNorm running mean and variance), in ``model.buffers()`` order."""
    flops_per_sample: float
    """Forward + backward FLOPs of one sample."""
    param_ndims: tuple[int, ...]
    """Dimensions of each trainable parameter, in ``param_numels`` order (the optimizer's groups and the
    flat buffer's order follow from them: ``core.buckets.flat_order``)."""
    int_buffer_numels: tuple[int, ...] = ()
    """Integer buffers (BatchNorm's ``num_batches_tracked``): never averaged, but DDP broadcasts them."""

    @property
    def params(self) -> int:
        return sum(self.param_numels)

    @property
    def tensors(self) -> int:
        return len(self.param_numels)


MAX_TENSORS = 100_000
"""The most parameter tensors a model may have: its layout is a tuple per tensor, and every sync walks it.
GPT-3 175B has 96 layers, about 1,250 tensors in this layout (Brown et al. 2020, table 2.1)."""
MAX_PARAMS = 10**15
"""The most parameters: 4 PB of fp32 weights, beyond the memory of any cluster a run could use."""


@functools.lru_cache(maxsize=64)
def model_facts(spec: ModelSpec) -> ModelFacts | None:
    """The facts of ``spec``'s model; None for ``family = "custom"`` (nothing to build). A model over
    MAX_TENSORS tensors is refused before its layout is built, one over MAX_PARAMS parameters after."""
    if spec.family == "custom":
        return None
    key, tensors = _tensor_count(spec)
    if tensors > MAX_TENSORS:
        raise ConfigError(f"gives a model of {tensors:,} parameter tensors, over the limit of {MAX_TENSORS:,} "
                          "(docs/limits.md)", key=key, value=getattr(spec, key.rpartition(".")[2]))
    facts = _gpt_neo(spec) if spec.family == "gpt_neo" else _resnet(spec)
    if facts.params > MAX_PARAMS:
        raise ConfigError(f"has {facts.params:.3g} parameters, over the limit of {MAX_PARAMS:.0e} "
                          f"(docs/limits.md): {spec.describe()}", key="model")
    return facts


def _tensor_count(spec: ModelSpec) -> tuple[str, int]:
    """(the field that sets it, the parameter tensors of the layout below), counted without building it."""
    if spec.family == "gpt_neo":
        return "model.layers", 13 * spec.layers + 4
    if spec.variant == "cifar":  # per block two convs and two BatchNorms of two tensors; stem and fc
        return "model.depth", 3 * ((spec.depth - 2) // 6) * 6 + 5
    return "model.variant", 200  # torchvision's fixed layouts: ResNet-50 has 161


# ---------------------------------------------------------------------------------------------
# GPT-Neo


def _gpt_neo(spec: ModelSpec) -> ModelFacts:
    """FLOPs per token: 6N (two FLOPs per multiply-add, times three for forward + backward; Kaplan et
    al. 2020, eq. 2.1, with the embeddings kept in N) plus attention scores and their weighted sum,
    12 * layers * T * hidden (the nanoGPT ``estimate_mfu`` form); times T tokens:
    T * (6N + 12 * layers * T * hidden)."""
    h = spec.hidden
    block = (h, h,                 # ln_1 weight, bias
             h * h, h * h, h * h,  # q, k, v projections (no bias)
             h * h, h,             # out_proj weight, bias
             h, h,                 # ln_2 weight, bias
             4 * h * h, 4 * h,     # c_fc weight, bias
             4 * h * h, h)         # c_proj weight, bias
    # The LM head is tied with wte: one tensor, counted once.
    params = (spec.vocab * h, spec.n_positions * h, *block * spec.layers, h, h)
    ndims = (2, 2, *(1, 1, 2, 2, 2, 2, 1, 1, 1, 2, 1, 2, 1) * spec.layers, 1, 1)
    t = spec.seq_len
    flops = t * (6 * sum(params) + 12 * spec.layers * t * h)
    return ModelFacts(params, (), float(flops), ndims)


# ---------------------------------------------------------------------------------------------
# ResNet


class _Layout:
    """Walks a ResNet in ``real/models.py`` registration order, collecting tensor sizes and MACs."""

    def __init__(self, spec: ModelSpec):
        self.params: list[int] = []
        self.ndims: list[int] = []
        self.buffers: list[int] = []
        self.int_buffers: list[int] = []
        self.macs = 0
        self.size = spec.image_size  # height = width of the current feature map

    def conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        """Bias-free conv; MACs = out_h * out_w * c_out * c_in * k * k."""
        self.size = (self.size + 2 * padding - kernel) // stride + 1
        self.params.append(c_out * c_in * kernel * kernel)
        self.ndims.append(4)
        self.macs += self.size * self.size * c_out * c_in * kernel * kernel

    def batch_norm(self, channels: int) -> None:
        self.params += [channels, channels]   # weight, bias
        self.ndims += [1, 1]
        self.buffers += [channels, channels]  # running mean, running var
        self.int_buffers.append(1)            # num_batches_tracked

    def block(self, c_in: int, planes: int, stride: int, bottleneck: bool, shortcut_conv: bool) -> int:
        """One residual block; returns its output channels. The shortcut reads the block's input."""
        size_in = self.size
        if bottleneck:  # 1x1 reduce, 3x3 with the stride (v1.5), 1x1 expand by 4
            out = 4 * planes
            self.conv(c_in, planes, 1)
            self.batch_norm(planes)
            self.conv(planes, planes, 3, stride, 1)
            self.batch_norm(planes)
            self.conv(planes, out, 1)
            self.batch_norm(out)
        else:  # two 3x3
            out = planes
            self.conv(c_in, planes, 3, stride, 1)
            self.batch_norm(planes)
            self.conv(planes, planes, 3, 1, 1)
            self.batch_norm(planes)
        if shortcut_conv and (stride != 1 or c_in != out):
            size_out, self.size = self.size, size_in
            self.conv(c_in, out, 1, stride)  # lands on size_out: (s - 1) // stride + 1 either way
            self.batch_norm(out)
            self.size = size_out
        return out


def _resnet(spec: ModelSpec) -> ModelFacts:
    """FLOPs: 6 x the multiply-adds of every convolution and the fc layer (two FLOPs per multiply-add,
    backward twice the forward; BatchNorm, ReLU and pooling are under 1% of ResNet-50's, He et al. 2016
    table 1 counts the same way)."""
    net = _Layout(spec)
    cifar = spec.variant == "cifar"
    if cifar:  # 3x3 stem, no pooling; option-A shortcuts (stride and zero padding) have no tensors
        n = (spec.depth - 2) // 6
        widths, counts, bottleneck = [spec.width, 2 * spec.width, 4 * spec.width], [n] * 3, False
        net.conv(spec.in_channels, spec.width, 3, 1, 1)
    else:  # torchvision: 7x7 stride-2 stem, 3x3 stride-2 max pool
        bottleneck = spec.variant == "resnet50"
        widths, counts = [64, 128, 256, 512], [3, 4, 6, 3] if bottleneck else [2, 2, 2, 2]
        net.conv(spec.in_channels, 64, 7, 2, 3)
    net.batch_norm(widths[0])
    if not cifar:
        net.size = (net.size + 2 - 3) // 2 + 1
    channels = widths[0]
    for stage, (planes, count) in enumerate(zip(widths, counts, strict=True)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            channels = net.block(channels, planes, stride, bottleneck, shortcut_conv=not cifar)
    # Global average pooling, then fc with bias.
    net.params += [spec.num_classes * channels, spec.num_classes]
    net.ndims += [2, 1]
    net.macs += channels * spec.num_classes
    return ModelFacts(tuple(net.params), tuple(net.buffers), 6.0 * net.macs, tuple(net.ndims),
                      tuple(net.int_buffers))
