"""Checkpoints carry a sha256; a resumed run skips damaged ones and all ranks agree on the newest intact."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from palsgd.core.faults import FaultSpec
from palsgd.harness.machinery.launch import RunFailed, run_real
from palsgd.real import checkpoint


def _save(tmp_path, step: int):
    return checkpoint.save(tmp_path, "ddp", 0, step, {"next_step": step, "w": torch.arange(1000.0)})


def test_a_damaged_checkpoint_is_named_and_skipped(tmp_path, capsys):
    _save(tmp_path, 4)
    newest = _save(tmp_path, 8)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, the file still the same size
    newest.write_bytes(bytes(data))
    assert checkpoint.intact_steps(tmp_path, "ddp", 0) == [4]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and str(newest) in lines[0] and "sha256 differs" in lines[0]


def test_a_checkpoint_without_its_checksum_does_not_count(tmp_path, capsys):
    _save(tmp_path, 4)
    checkpoint.checksum_path(_save(tmp_path, 8)).unlink()  # as if the writer died between the two files
    assert checkpoint.intact_steps(tmp_path, "ddp", 0) == [4]
    assert "no readable sha256" in capsys.readouterr().err


def test_only_the_last_checkpoints_and_their_checksums_are_kept(tmp_path):
    for step in (4, 8, 12):
        _save(tmp_path, step)
    assert sorted(f.name for f in checkpoint.folder(tmp_path, "ddp").iterdir()) == [
        "rank0.step00000008.pt", "rank0.step00000008.pt.json", "rank0.step00000012.pt", "rank0.step00000012.pt.json"]


def _agree(holdings: list[list[int]]) -> list[int]:
    """``newest_common`` on one thread per rank, with a min-reduction across them."""
    offers: dict[int, int] = {}
    barrier = threading.Barrier(len(holdings))
    agreed: dict[int, int] = {}

    def rank(r: int):
        def min_over_ranks(offer: int) -> int:
            offers[r] = offer
            barrier.wait()
            smallest = min(offers.values())
            barrier.wait()  # everyone has read this round's offers before the next round writes
            return smallest
        agreed[r] = checkpoint.newest_common(holdings[r], min_over_ranks)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(holdings))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return [agreed[r] for r in range(len(holdings))]


def test_ranks_agree_on_the_newest_checkpoint_they_all_hold_intact():
    assert _agree([[4, 8], [4, 8]]) == [8, 8]
    assert _agree([[4, 8], [4]]) == [4, 4]  # rank 1's step 8 is damaged (or it died before writing it)
    assert _agree([[4, 8], [8], [4, 8]]) == [8, 8, 8]
    assert _agree([[8], [4]]) == [-1, -1]  # no step held intact by both: start over
    assert _agree([[], [4]]) == [-1, -1]


@pytest.mark.slow
def test_resume_falls_back_past_a_damaged_checkpoint(tiny, tmp_path):
    exp = tiny(["local_sgd"], steps=16, train={"checkpoint_every": 4})
    run_real(exp, tmp_path / "whole", nproc_per_node=2)
    with pytest.raises(RunFailed):
        run_real(exp, tmp_path / "cut", nproc_per_node=2, fault=FaultSpec.parse("rank=0,step=10,kind=crash"))
    damaged = checkpoint.path(tmp_path / "cut", "local_sgd", 1, 8)
    damaged.write_bytes(damaged.read_bytes()[:-100])  # truncated: rank 1 holds only step 4 intact
    run_real(exp, tmp_path / "cut", nproc_per_node=2, resume=True)
    log = (tmp_path / "cut" / "logs" / "local_sgd.node0.log").read_text()
    assert f"damaged checkpoint {damaged}" in log
    whole = pd.read_csv(tmp_path / "whole" / "metrics.csv").sort_values(["worker", "step"])
    cut = pd.read_csv(tmp_path / "cut" / "metrics.csv").sort_values(["worker", "step"])
    assert list(cut["step"]) == list(whole["step"])
    np.testing.assert_array_equal(cut["loss"].to_numpy(), whole["loss"].to_numpy())
