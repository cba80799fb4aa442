"""``sync_every = "balanced"`` in the real harness: each rank takes its own H_k between syncs, bitwise
as a reference written from the rule (``balanced_ranks.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from palsgd.core.algorithms import IDLE_STEP


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("balanced") / "results.pt"
    script = Path(__file__).with_name("balanced_ranks.py")
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=540)  # for a hang, not a slow host
    return torch.load(out, weights_only=False)


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for ta, tb in zip(a, b, strict=True) for x, y in zip(ta, tb, strict=True))


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adamw"])
def test_each_rank_takes_its_own_h_bitwise_as_the_rule_says(results, optimizer):
    for rank in (0, 1):
        assert max_diff(results[rank][f"ours/{optimizer}"], results[rank][f"reference/{optimizer}"]) == 0.0


def test_the_slow_rank_idles_and_takes_no_batch_there(results):
    kinds = results[0]["kinds"]
    assert not (kinds[0] == IDLE_STEP).any() and (kinds[1] == IDLE_STEP).sum() == 3 * 2  # H = 4, H_1 = 2
    idle_steps = set(np.flatnonzero(kinds[1] == IDLE_STEP))
    computed = {row[4] for row in results[1]["rows/adamw"] if row[5] == "compute"}
    assert computed and not computed & idle_steps
    # The trajectory of the slow rank does not move on its idle steps, until the next average.
    own = [ranks[1] for ranks in results[1]["ours/adamw"]]
    for step in sorted(idle_steps):
        if (step - 2 + 1) % 4 != 0:  # not a sync step (W = 2, H = 4)
            assert torch.equal(own[step], own[step - 1])


def test_diloco_averages_the_replicas_unweighted(results):
    # outer_lr 1, momentum 0: the outer step sets the mean of the two replicas, whatever their H_k.
    assert max_diff(results[0]["diloco_1_0"], results[0]["reference/adamw"]) < 1e-6
