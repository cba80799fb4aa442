"""The fast path (``sim/fast.py``) against the exact event-by-event engine on small cases: equal up to
rounding without variability and, with jitter, stragglers and slow workers, where every step is drawn
(the exact engine's own draws); equal in distribution where sums and maxima are drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from palsgd.core import schema
from palsgd.core.algorithms import ALGORITHMS
from palsgd.core.cluster import VariabilitySpec
from palsgd.core.config import load
from palsgd.core.errors import ConfigError
from palsgd.core.variability import ComputeFactors
from palsgd.sim import bounds, fast
from palsgd.sim.draws import Factors
from palsgd.sim.engine import simulate

ALL = list(ALGORITHMS)
COLUMNS = ["steps", "wall_clock_s", "compute_s", "comm_exposed_s", "comm_hidden_s", "wait_s", "pseudo_sync_s",
           "outer_step_s", "bytes_sent_per_worker", "syncs", "pseudo_sync_steps", "speedup_vs_ddp"]


def both(exp, keep_totals=False):
    return [simulate(exp, record_steps=False, keep_totals=keep_totals, engine=e) for e in ("exact", "fast")]


@pytest.mark.parametrize("overrides", [
    {},
    {"cluster": {"variability": {"slow_workers": 1, "slow_factor": 1.5}}},  # workers differ, no randomness
    {"algorithm": {"warmup_steps": 3, "sync_every": 4, "fragments": 2}},  # Streaming DiLoCo's fragments
])
def test_without_randomness_the_fast_path_equals_the_exact_engine(tiny, overrides):
    exact, fast = both(tiny(overrides, algorithms=ALL, steps=13), keep_totals=True)
    pd.testing.assert_frame_equal(fast.runs[COLUMNS], exact.runs[COLUMNS], rtol=1e-12, atol=1e-12)
    keys = ["algorithm", "run", "worker", "phase"]
    pd.testing.assert_frame_equal(fast.totals.sort_values(keys).reset_index(drop=True),
                                  exact.totals.sort_values(keys).reset_index(drop=True), rtol=1e-12, atol=1e-12)


def test_shared_pseudo_syncs_come_from_each_seeds_plan(tiny):
    exp = tiny({"algorithm": {"p": 0.4}, "repeats": 6}, algorithms=["palsgd"], steps=30)
    exact, fast = both(exp)
    np.testing.assert_allclose(fast.runs["pseudo_sync_steps"], exact.runs["pseudo_sync_steps"])
    np.testing.assert_allclose(fast.runs["wall_clock_s"], exact.runs["wall_clock_s"], rtol=1e-12)


def test_fast_run_rows_are_the_summary_of_its_totals(tiny):
    exp = tiny({"repeats": 3, "cluster": {"variability": {"jitter_cv": 0.1}}}, algorithms=ALL, steps=20)
    res = simulate(exp, record_steps=False, engine="fast")
    extents = res.runs[["source", "algorithm", "run", "steps", "wall_clock_s"]]
    pd.testing.assert_frame_equal(schema.summarize(res.totals, extents), res.runs, rtol=1e-12)


NOISE = ["cluster.variability.jitter_cv=0.05", "cluster.variability.straggler_prob=0.002",
         "cluster.variability.straggler_factor=3.0", "cluster.variability.slow_workers=2",
         "cluster.variability.slow_factor=1.1"]


@pytest.mark.parametrize("extra", [
    ["algorithm.skip_draws=shared", "algorithm.fragments=2"],
    ["algorithm.skip_draws=independent", "algorithm.p=0.3", "algorithm.averager=torchft"],
    # workers fail every ~8 s of a ~12 s run: the same failure times, restarts and waits
    ["cluster.failures.mtbf_s=8", "cluster.failures.restart_s=0.4", "algorithm.skip_draws=independent"],
    ["cluster.failures.mtbf_s=8", "cluster.failures.restart_s=0.4", "cluster.variability.jitter_cv=0",
     "cluster.variability.straggler_prob=0"],
    # 64 workers and H = 40 could be drawn as sums and maxima, but the job is small enough to draw exactly
    ["cluster.nodes=8", "algorithm.sync_every=40", "algorithm.warmup_steps=20"],
])
def test_where_every_step_is_drawn_a_fast_run_is_the_exact_engines_run_of_its_seed(extra):
    """8 workers, H = 8 and 4 DDP warm-up steps: the fast path draws the exact engine's factors of each
    seed, and PALSGD's pseudo-sync steps where each seed's plan puts them, so every run (not only their
    distribution) and every worker's phase totals are the same up to rounding."""
    exp = load(workload="gpt-neo-125m", cluster="a100-4x8-ib100", algorithms=ALL, steps=101,
               overrides=["cluster.nodes=1", *NOISE, "cluster.variability.straggler_prob=0.02",
                          "algorithm.sync_every=8", "algorithm.warmup_steps=4", "repeats=3", "seed=11", *extra])
    assert all(fast.draws_exactly(exp, spec) for spec in exp.algorithms)
    exact, quick = both(exp, keep_totals=True)
    assert (exact.runs.groupby("algorithm")["wall_clock_s"].nunique() >= 2).all()  # the seeds differ
    assert (exact.runs["failure_s"] > 0).all() == (exp.cluster.failures.mtbf_s > 0)
    pd.testing.assert_frame_equal(quick.runs[COLUMNS], exact.runs[COLUMNS], rtol=1e-9, atol=1e-12)
    keys = ["algorithm", "run", "worker", "phase"]
    pd.testing.assert_frame_equal(quick.totals.sort_values(keys).reset_index(drop=True),
                                  exact.totals.sort_values(keys).reset_index(drop=True), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("nodes, sync_every, skip_draws", [
    (8, 50, "shared"),  # 64 workers, H = 50: sums and maxima drawn from their distributions
    (8, 50, "independent"),
])
def test_with_variability_the_fast_path_has_the_exact_engines_distribution(nodes, sync_every, skip_draws,
                                                                           monkeypatch):
    """Sums and maxima drawn from their distributions (as in a job too large to draw every step):
    means over 40 seeds agree within 4 standard errors (the seeds are fixed, so the test does not
    fail by chance). At these sizes a standard error is 0.05-0.3 % of the wall-clock; large runs are
    compared by benchmarks/bench_fast_agreement.py."""
    monkeypatch.setattr(fast, "EXACT_JOB_CELLS", 0)
    exp = load(workload="gpt-neo-125m", cluster="a100-4x8-ib100", algorithms=ALL[:4], steps=50 * sync_every // 8 + 100,
               overrides=[f"cluster.nodes={nodes}", *NOISE, f"algorithm.sync_every={sync_every}",
                          "algorithm.warmup_steps=20", f"algorithm.skip_draws={skip_draws}", "repeats=40"])
    assert not any(fast.draws_exactly(exp, spec) for spec in exp.algorithms)
    exact, quick = (r.runs.groupby("algorithm") for r in both(exp))
    for column in ("wall_clock_s", "compute_s", "wait_s"):
        diff = quick[column].mean() - exact[column].mean()
        se = np.sqrt(quick[column].var() / 40 + exact[column].var() / 40)
        assert (diff.abs() <= 4 * se + 1e-12).all(), (column, diff, se)


def test_sums_and_maxima_follow_the_cells():
    """The drawn sums of 100 steps and maxima over 300 workers against the cells they stand for."""
    var = VariabilitySpec(jitter_cv=0.05, straggler_prob=0.01, straggler_factor=3.0)
    x = Factors(var, np.random.default_rng(0))
    cells = ComputeFactors(var, 300, 1).draw(4000)
    sums, cell_sums = x.sums(100, (12000,)), cells[:, :3000].reshape(-1, 100).sum(axis=1)
    maxima, cell_maxima = x.maxima(300, (4000,)), cells.max(axis=0)
    for drawn, exact in ((sums, cell_sums), (maxima, cell_maxima)):
        q = [0.1, 0.5, 0.9, 0.99]
        np.testing.assert_allclose(np.quantile(drawn, q), np.quantile(exact, q), rtol=0.01)
    counts = x.sums(np.array([[0, 1, 50], [100, 7, 3]]), (2, 3))
    assert counts[0, 0] == 0 and (counts[0, 1:] > 0).all()


def test_the_fast_path_steps_aside_where_it_does_not_model(tiny):
    rejoin = tiny({"repeats": 5000, "cluster": {"failures": {"mtbf_s": 100.0, "policy": "rejoin"}}})
    assert bounds.engine_for(rejoin, record_steps=False, engine="auto") == "exact"
    with pytest.raises(ConfigError, match="rejoin"):
        bounds.engine_for(rejoin, record_steps=False, engine="fast")
    failing = tiny({"repeats": 5000, "cluster": {"failures": {"mtbf_s": 100.0}}})
    assert bounds.engine_for(failing, record_steps=False, engine="auto") == "fast"
    long = tiny({"cluster": {"failures": {"mtbf_s": 100.0}}}, steps=fast.EXACT_TABLE_CELLS // 2 + 1)
    with pytest.raises(ConfigError, match="workers fail in a run of over"):
        bounds.engine_for(long, record_steps=False, engine="fast")
    assert bounds.engine_for(tiny(), record_steps=True, engine="auto") == "exact"
    assert bounds.engine_for(tiny(), record_steps=False, engine="auto") == "exact"  # small: draw for draw
    assert bounds.engine_for(tiny({"repeats": 5000}), record_steps=False, engine="auto") == "fast"


def test_a_sweep_point_with_many_repeats_takes_the_fast_path(tiny):
    """Its rows are numbered per point as the exact engine's are, and without randomness (PALSGD's plan
    is drawn per seed) equal them."""
    from palsgd.harness.machinery.sweep import sweep

    vary = [("cluster.intra_node.bandwidth_gbps", [0.01, 0.1])]
    algos = ["ddp", "local_sgd", "diloco", "streaming_diloco"]
    many = tiny({"repeats": 3000}, steps=13, algorithms=algos)
    assert bounds.engine_for(many, record_steps=False) == "fast"
    fast = sweep(many, vary, jobs=1).table
    exact = sweep(tiny(steps=13, algorithms=algos), vary, jobs=1).table
    assert len(fast) == 3000 * len(exact) and sorted(set(fast["run"])) == list(range(3000))
    key = ["cluster.intra_node.bandwidth_gbps", "algorithm"]
    pd.testing.assert_frame_equal(fast.groupby(key)[COLUMNS].mean(), exact.groupby(key)[COLUMNS].mean(), rtol=1e-12)
