"""The report's first sentence says which speedup is which when the published prior gives the target."""

import math

import pandas as pd

from palsgd.reports import tables

EXPERIMENT = {"cluster": {"name": "c8"}, "workload": {"name": "w"}, "budget": {"steps": 300}}


def _runs(to_target: float, low: float, high: float, source, note: str) -> pd.DataFrame:
    return pd.DataFrame({
        "source": ["sim", "sim"], "algorithm": ["ddp", "diloco"], "speedup_vs_ddp": [1.0, 1.03],
        "speedup_to_target_vs_ddp": [1.0, to_target], "speedup_to_target_low_vs_ddp": [1.0, low],
        "speedup_to_target_high_vs_ddp": [1.0, high], "convergence_source": ["diloco-scaling-laws", source],
        "convergence_note": ["DDP by definition", note]})


def test_the_prior_speedup_comes_first_with_its_band_and_the_same_steps_one_beside_it():
    text = tables.headline(_runs(0.54, 0.47, 0.77, "diloco-scaling-laws", "ok"), EXPERIMENT)
    assert text.startswith("On c8, DiLoCo is predicted 1.85x slower than DDP to DDP's final loss (speedup 0.54x, "
                           "band 0.47-0.77x, steps from the published DiLoCo scaling laws, prior diloco-scaling-laws)")
    assert "and 1.03x faster than DDP for the same steps for w (300 steps)" in text


def test_without_an_answer_the_sentence_says_same_steps_and_why():
    text = tables.headline(_runs(math.nan, math.nan, math.nan, None, "no published evidence: H = 100"), EXPERIMENT)
    assert text == ("On c8, DiLoCo is predicted 1.03x faster than DDP for w (300 steps), for the same steps "
                    "(no speedup to a target loss: no published evidence: H = 100).")
