"""A long run extrapolated from its warm-up and a few sync periods (``sim/steady.py``) against the exact
engine's whole run: equal up to rounding without randomness, within 0.5 % with jitter."""

from __future__ import annotations

import pandas as pd
import pytest

from palsgd.core import schema
from palsgd.core.algorithms import ALGORITHMS
from palsgd.core.config import load
from palsgd.sim import steady
from palsgd.sim.engine import simulate

COLUMNS = ["steps", "wall_clock_s", "compute_s", "comm_exposed_s", "comm_hidden_s", "wait_s", "outer_step_s",
           "bytes_sent_per_worker", "syncs", "speedup_vs_ddp"]


def _both(overrides, algorithms=tuple(a for a in ALGORITHMS if a != "palsgd")):
    exp = load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", algorithms=list(algorithms), steps=3000,
               overrides=["cluster.nodes=2", "algorithm.warmup_steps=100", "algorithm.sync_every=40",
                          "algorithm.fragments=4", "algorithm.fragment_sync_delay=2", *overrides])
    whole = simulate(exp, record_steps=False, keep_totals=False, engine="exact").runs
    return whole, schema.summarize(*steady.simulate_tables_steady(exp)), steady.prefix(exp)


@pytest.mark.parametrize("overrides", [
    ["cluster.variability.jitter_cv=0"],
    ["cluster.variability.jitter_cv=0", 'algorithm.replica_group="node"'],  # 8 workers per replica
    ["cluster.variability.jitter_cv=0", "cluster.variability.slow_workers=3", "cluster.variability.slow_factor=1.5",
     'algorithm.sync_every="balanced"'],  # slower workers idle part of each period of H = 40
    # Streaming DiLoCo with a whole round of delay (tau = H/P = 10): the first sync sends nothing
    ["cluster.variability.jitter_cv=0", "algorithm.fragment_sync_delay=10", "algorithm.eager_outer=true"],
])
def test_without_randomness_the_extrapolation_is_the_whole_run(overrides):
    whole, extrapolated, (first, measured, rest) = _both(overrides)
    # L = 40: A = 3000 - 2,840 = 160 (warm-up, one period to settle, 20 steps left at the end), 400 measured
    assert (first, measured, rest) == (160, 400, 2840)
    pd.testing.assert_frame_equal(extrapolated[COLUMNS], whole[COLUMNS], rtol=1e-9)


def test_with_jitter_the_extrapolation_is_within_half_a_percent():
    whole, extrapolated, _ = _both(["cluster.variability.jitter_cv=0.1", "cluster.variability.straggler_prob=0.01",
                                    "cluster.variability.straggler_factor=2"])
    for column in ("wall_clock_s", "speedup_vs_ddp", "compute_s"):
        assert extrapolated[column].to_numpy() == pytest.approx(whole[column].to_numpy(), rel=5e-3), column


def test_a_short_run_is_not_extrapolated():
    exp = load(workload="gpt-neo-8m", algorithms=["ddp", "diloco"], steps=600,
               overrides=["algorithm.warmup_steps=100", "algorithm.sync_every=100"])
    assert steady.prefix(exp) is None  # 600 - 100 - 100 leaves 400 steps: nothing to save over 400 measured
    assert steady.answer_parts(exp) == [("exact", exp)]


def test_a_phase_first_seen_in_the_measured_periods_counts_from_zero():
    a = pd.DataFrame({"run": [0, 0], "phase": ["compute", "wait"], "duration_s": [2.0, 1.0], "count": [2, 1]})
    b = pd.DataFrame({"run": [0, 0, 0], "phase": ["compute", "wait", "failure"], "duration_s": [4.0, 1.0, 3.0],
                      "count": [4, 1, 1]})
    out = steady._extrapolate(a, b, ["run", "phase"], ["duration_s", "count"], 2.5).set_index("phase")
    assert out["duration_s"].to_dict() == {"compute": 7.0, "wait": 1.0, "failure": 7.5}  # a + 2.5 (b - a)
    assert out["count"].to_dict() == {"compute": 7, "wait": 1, "failure": 2}  # whole numbers (2.5 rounds to even)
    same = steady._extrapolate(a, a.assign(duration_s=[3.0, 1.0]), ["run", "phase"], ["duration_s", "count"], 2.0)
    assert same["duration_s"].tolist() == [4.0, 1.0] and same["count"].tolist() == [2, 1]
