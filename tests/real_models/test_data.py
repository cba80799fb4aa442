"""Data sources: determinism in (seed, rank, index), disjoint shards, epochs, every loader on tiny files."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch

from palsgd.core.errors import ConfigError
from palsgd.core.workload import DataSpec, ModelSpec, WorkloadSpec
from palsgd.real import data as data_mod
from palsgd.real.data import EOT, IGNORE, build_data
from palsgd.real.models import build_model, compute_loss

GPT = ModelSpec(hidden=16, layers=1, heads=2, vocab=300, seq_len=8)
IMG = ModelSpec(family="resnet", variant="cifar", depth=8, width=4, num_classes=10, image_size=8,
                in_channels=3)


def workload(model, source, path="", batch=4, eval_fraction=0.1, samples=0):
    return WorkloadSpec(model=model, data=DataSpec(source=source, path=str(path), eval_fraction=eval_fraction),
                        batch_per_worker=batch, dataset_samples=samples)


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(bytes(range(256)) * 4 + b"end")  # 1027 bytes -> (1027 - 1) // 8 = 128 windows
    return f


def test_text_windows_are_next_token_pairs(text_file):
    src = build_data(workload(GPT, "text", text_file), rank=0, world_size=1, seed=0)
    assert len(src.train) + len(src.held_out) == 128
    assert len(src.held_out) == round(128 * 0.1)
    x, y = src.train_batch(0)
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal((x[:, :1] + 1) % 256, y[:, :1])  # the bytes count up: next token = this + 1
    # the held-out set is the tail of the text, never trained on
    raw = text_file.read_bytes()
    ex, _ = src.eval_batches(1)[0]
    cut = len(src.train) * 8
    assert bytes(ex[0].tolist()) == raw[cut:cut + 8]


def test_batches_are_deterministic_and_resumable(text_file):
    wl = workload(GPT, "text", text_file)
    a = build_data(wl, rank=1, world_size=2, seed=7)
    late = [a.train_batch(i)[0] for i in (40, 3)]
    b = build_data(wl, rank=1, world_size=2, seed=7)  # a fresh process resuming at batch 40
    assert torch.equal(b.train_batch(40)[0], late[0]) and torch.equal(b.train_batch(3)[0], late[1])
    c = build_data(wl, rank=1, world_size=2, seed=8)
    assert not torch.equal(c.train_batch(3)[0], late[1])


def test_ranks_read_disjoint_shards_and_epochs_reshuffle(text_file):
    ranks = [build_data(workload(GPT, "text", text_file, batch=1), rank=r, world_size=3, seed=1)
             for r in range(3)]
    spe = ranks[0].samples_per_epoch
    assert spe == len(ranks[0].train) // 3 == 38

    def epoch(src, e):
        return torch.cat([src.sample_ids(i) for i in range(e * spe, (e + 1) * spe)])

    first = torch.cat([epoch(src, 0) for src in ranks])
    assert len(first.unique()) == 3 * spe  # no sample read twice in an epoch, by any rank
    again = epoch(ranks[0], 1)
    assert len(again.unique()) == spe and not torch.equal(again, epoch(ranks[0], 0))


def test_a_batch_may_cross_an_epoch_boundary(text_file):
    src = build_data(workload(GPT, "text", text_file, batch=7), rank=0, world_size=1, seed=0)
    spe = src.samples_per_epoch
    assert spe % 7 != 0
    ids = src.sample_ids(spe // 7)  # straddles the boundary
    assert len(ids) == 7 and len(ids.unique()) == 7
    assert torch.equal(ids[: spe % 7], src._permutation(0)[spe - spe % 7:])
    assert torch.equal(ids[spe % 7:], src._permutation(1)[: 7 - spe % 7])


def test_text_folder_and_missing_paths(tmp_path, text_file):
    (tmp_path / "more.txt").write_text("hello world " * 50)
    src = build_data(workload(GPT, "text", tmp_path), rank=0, world_size=1, seed=0)
    assert len(src.train) + len(src.held_out) == (1027 + 1 + 600 - 1) // 8
    with pytest.raises(ConfigError, match=r"nowhere\.txt"):
        build_data(workload(GPT, "text", tmp_path / "nowhere.txt"), rank=0, world_size=1, seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"workload\.data\.path.*no \.txt"):
        build_data(workload(GPT, "text", empty), rank=0, world_size=1, seed=0)



@pytest.mark.parametrize("source", ["text", "tinystories"])
def test_a_fifo_named_txt_in_a_data_folder_is_refused_unread(tmp_path, source):
    (tmp_path / "a.txt").write_text("hello world " * 50)
    os.mkfifo(tmp_path / "b.txt")  # opening it for reading would block the launch forever
    with pytest.raises(ConfigError, match=r"b\.txt.*not a regular file \(a FIFO\)"):
        build_data(workload(GPT, source, tmp_path), rank=0, world_size=1, seed=0)


def test_training_text_is_bounded_in_all(tmp_path, monkeypatch):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("x" * 600)
    monkeypatch.setattr(data_mod.io, "MAX_TEXT_BYTES", 1000)  # each file fits, both together do not
    with pytest.raises(ConfigError, match=r"b\.txt.*is 600 bytes, over the limit of 400 .*1,000 bytes for all files"):
        build_data(workload(GPT, "text", tmp_path), rank=0, world_size=1, seed=0)


def test_stories_that_are_not_utf8_are_named(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"Once upon a time\xff there was a cat.")
    with pytest.raises(ConfigError, match=r"train\.txt.*not UTF-8 text \(byte 16\)"):
        build_data(workload(GPT, "tinystories", tmp_path), rank=0, world_size=1, seed=0)

STORIES = ["Once upon a time there was a cat.", "Tom had a red ball. He liked it a lot and played all day long.",
           "The sun was hot.", "A dog ran.", "Lily saw a bird.", "Ben ate cake.", "It rained.", "The end came."]


def test_tinystories_file_gives_one_sample_per_story(tmp_path):
    f = tmp_path / "TinyStories-train.txt"
    f.write_text("\n<|endoftext|>\n".join(STORIES))
    wl = workload(dataclasses.replace(GPT, seq_len=20), "tinystories", f, batch=2, eval_fraction=0.25)
    src = build_data(wl, rank=0, world_size=1, seed=0)
    assert (len(src.train), len(src.held_out)) == (6, 2)
    x, y = src.held_out.get(torch.tensor([0, 1]))  # "It rained." and "The end came."
    story = STORIES[6].encode()
    assert x[0, :len(story)].tolist() == list(story) and (x[0, len(story):] == EOT).all()
    assert y[0, :len(story) - 1].tolist() == list(story[1:]) and (y[0, len(story) - 1:] == IGNORE).all()
    long = src.train.get(torch.tensor([1]))  # the long story is cut at T + 1 tokens
    assert long[0][0].tolist() == list(STORIES[1].encode()[:20])
    assert long[1][0].tolist() == list(STORIES[1].encode()[1:21])
    loss = compute_loss(build_model(wl.model), src.train_batch(0))
    assert torch.isfinite(loss)


def test_tinystories_folder_uses_its_valid_file(tmp_path):
    (tmp_path / "train.txt").write_text("<|endoftext|>".join(STORIES[:5]))
    (tmp_path / "TinyStories-valid.txt").write_text("<|endoftext|>".join(STORIES[5:]))
    src = build_data(workload(GPT, "tinystories", tmp_path), rank=0, world_size=1, seed=0)
    assert (len(src.train), len(src.held_out)) == (5, 3)


def test_tinystories_without_path_fails_clearly_offline(monkeypatch):
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "datasets" else real_find(n, *a))
    with pytest.raises(ConfigError, match=r"workload\.data\.path.*datasets.*local TinyStories"):
        build_data(workload(GPT, "tinystories"), rank=0, world_size=1, seed=0)


def test_byte_text_needs_a_byte_vocabulary(text_file):
    small = dataclasses.replace(GPT, vocab=100)
    with pytest.raises(ConfigError, match=r"workload\.model\.vocab"):
        build_data(workload(small, "text", text_file), rank=0, world_size=1, seed=0)
    with pytest.raises(ConfigError, match=r"workload\.data\.source.*token sequences.*resnet"):
        build_data(workload(IMG, "text", text_file), rank=0, world_size=1, seed=0)


def test_shakespeare_ships_offline():
    src = build_data(workload(dataclasses.replace(GPT, seq_len=64), "shakespeare", batch=2), rank=0,
                     world_size=1, seed=0)
    assert len(src.train) > 70_000  # 5.3 MB of plays / 64
    text = bytes(src.eval_batches(1)[0][0][0].tolist()).decode("utf-8", "replace")
    assert text.isprintable() or "\n" in text


def _write_cifar(root, per_batch=6):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(root / name, "wb") as f:
            pickle.dump(entry, f)


def test_cifar10_pickle_folder(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _write_cifar(root)
    wl = workload(dataclasses.replace(IMG, image_size=32), "cifar10", tmp_path)  # finds the sub-folder
    src = build_data(wl, rank=0, world_size=2, seed=0)
    assert (len(src.train), len(src.held_out), src.samples_per_epoch) == (30, 6, 15)
    x, y = src.train_batch(0)
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.long
    assert src.train.inputs.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # normalised per channel
    (root / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3"):
        build_data(wl, rank=0, world_size=1, seed=0)


def test_image_folder_decodes_resizes_and_labels(tmp_path):
    from PIL import Image

    for label, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / f"class{label}").mkdir()
        for i in range(5):
            Image.new("RGB", (20 + i, 12), colour).save(tmp_path / f"class{label}" / f"{i}.png")
    (tmp_path / "class1" / "notes.txt").write_text("not an image")
    wl = workload(IMG, "imagefolder", tmp_path, batch=3, eval_fraction=0.2)
    src = build_data(wl, rank=0, world_size=1, seed=0)
    assert (len(src.train), len(src.held_out)) == (8, 2)
    x, y = src.train.get(torch.arange(8))
    assert x.shape == (8, 3, 8, 8)
    red = x[:, 0].mean(dim=(1, 2)) > x[:, 2].mean(dim=(1, 2))
    assert torch.equal(red, y == 0)
    gray = build_data(workload(dataclasses.replace(IMG, in_channels=1), "imagefolder", tmp_path), rank=0,
                      world_size=1, seed=0)
    assert gray.train_batch(0)[0].shape == (4, 1, 8, 8)
    with pytest.raises(ConfigError, match="num_classes"):
        build_data(workload(dataclasses.replace(IMG, num_classes=1), "imagefolder", tmp_path), rank=0,
                   world_size=1, seed=0)
    with pytest.raises(ConfigError, match="image folder not found"):
        build_data(workload(IMG, "imagefolder", tmp_path / "nope"), rank=0, world_size=1, seed=0)


def test_digits_fit_the_model():
    model = dataclasses.replace(IMG, in_channels=1)
    src = build_data(workload(model, "digits", batch=8, eval_fraction=0.05), rank=0, world_size=1, seed=0)
    assert (len(src.train), len(src.held_out)) == (1797 - 90, 90)
    assert src.train_batch(0)[0].shape == (8, 1, 8, 8)
    big = build_data(workload(dataclasses.replace(IMG, image_size=16), "digits"), rank=0, world_size=1, seed=0)
    assert big.train_batch(0)[0].shape == (4, 3, 16, 16)


def test_synthetic_tokens_and_images():
    tok = build_data(workload(GPT, "synthetic", samples=100), rank=0, world_size=2, seed=0)
    x, y = tok.train_batch(3)
    assert x.shape == (4, 8) and int(x.max()) < GPT.vocab and torch.equal(x[:, 1:], y[:, :-1])
    assert tok.samples_per_epoch == 50
    assert not torch.equal(tok.train_batch(0)[0], build_data(
        workload(GPT, "synthetic", samples=100), rank=1, world_size=2, seed=0).train_batch(0)[0])
    img = build_data(workload(IMG, "synthetic"), rank=0, world_size=1, seed=0)
    x, y = img.train_batch(0)
    assert x.shape == (4, 3, 8, 8) and y.shape == (4,) and int(y.max()) < 10
    assert len(img.eval_batches(3)) == 3


def test_eval_batches_stop_at_the_held_out_size(text_file):
    src = build_data(workload(GPT, "text", text_file, batch=5), rank=0, world_size=1, seed=0)
    batches = src.eval_batches(100)
    assert sum(len(b[1]) for b in batches) == len(src.held_out) == 13
    assert [len(b[1]) for b in batches] == [5, 5, 3]


def test_mix_separates_seeds():
    assert len({data_mod.mix(s, e) for s in range(20) for e in range(20)}) == 400
