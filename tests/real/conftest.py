"""Helpers for tests/real: spawn a few gloo ranks on CPU, build tiny experiments."""

from __future__ import annotations

import tempfile

import pytest

from palsgd.core.config import from_dict


def tiny_experiment(algorithms, *, steps=12, workers=2, train=None, **algo):
    """A 2-layer byte-level GPT on the offline Shakespeare text; seconds per run on CPU."""
    return from_dict({
        "workload": {"name": "tiny", "batch_per_worker": 4,
                     "model": {"family": "gpt_neo", "hidden": 16, "layers": 1, "heads": 2, "vocab": 257,
                               "seq_len": 16},
                     "data": {"source": "shakespeare"}},
        "cluster": {"nodes": 1, "gpus_per_node": workers},
        "train": {"optimizer": "adamw", "lr": 3e-3, "eval_batches": 2, "threads_per_rank": 1, **(train or {})},
        "algorithm": {"sync_every": 3, "warmup_steps": 2, **algo},
        "algorithms": list(algorithms), "budget": {"steps": steps}})


@pytest.fixture
def tmp_out():
    with tempfile.TemporaryDirectory() as d:
        yield d


@pytest.fixture
def tiny():
    return tiny_experiment
