"""Engine behaviour: closed-form limits, identities, variability, failures, the result tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from palsgd.core import schema
from palsgd.core.algorithms import plan_for
from palsgd.sim.algorithms import LocalSGD
from palsgd.sim.engine import simulate

FAST = {"cluster": {"intra_node": {"bandwidth_gbps": 1e9}}}  # T_AR ≈ 0: an infinitely fast network


def speedups(res) -> dict:
    return dict(zip(res.runs["algorithm"], res.runs["speedup_vs_ddp"], strict=True))


def test_infinitely_fast_network_gives_speedup_one(tiny):
    res = simulate(tiny(FAST, algorithms=["ddp", "local_sgd", "diloco"], steps=40))
    sp = speedups(res)
    assert sp["local_sgd"] == pytest.approx(1.0, rel=1e-6)
    # DiLoCo pays its own outer step u = 0.2 s at each of its 20 syncs, and nothing more.
    ddp_wall = res.runs["wall_clock_s"].iloc[0]
    assert sp["diloco"] == pytest.approx(ddp_wall / (ddp_wall + 20 * 0.2), rel=1e-6)


def test_slow_network_ddp_step_is_compute_plus_exposed_allreduce(tiny):
    slow = {"cluster": {"intra_node": {"bandwidth_gbps": 0.001}}, "algorithm": {"bucket_mib": 0.25}}
    exp = tiny(slow, algorithms=["ddp"], steps=3)
    run = simulate(exp).runs.iloc[0]
    step = run["wall_clock_s"] / 3
    assert step == pytest.approx(1.0 + run["comm_exposed_s"] / 3 + 0.1)
    # Slow enough that the buckets queue: only the part of the first bucket's wait that the rest of
    # the backward covers is hidden; T_AR(S) = S/B over 2 ranks. With bucket_cap_mb given, PyTorch
    # caps the first bucket like the others, but never splits a tensor: the last of the 4 tensors,
    # 0.5 MiB of the 2 MiB, ready 1/4 into the backward.
    t_ar = 2 * (1 << 20) / (0.001e9 / 8)
    first_ready = 1 / 3 + 2 / 3 * 0.5 / 2
    assert run["comm_exposed_s"] / 3 == pytest.approx(first_ready + t_ar - 1.0)


def test_diloco_with_outer_lr_one_and_no_momentum_times_like_local_sgd(tiny, monkeypatch):
    ident = {"algorithm": {"outer_lr": 1.0, "outer_momentum": 0.0},
             "cluster": {"compute": {"outer_step_time_s": 0.0}},
             "workload": {"outer_passes": 0.0}}
    exp = tiny(ident, algorithms=["local_sgd", "diloco"], steps=9)
    # DiLoCo's first outer step follows H local steps, Local SGD's first average the first one: give
    # Local SGD DiLoCo's sync steps (1, 3, 5, 7) so that the two runs sync after the same steps.
    diloco_syncs = plan_for(exp, exp.algorithm("diloco"), exp.seed).sync_after
    assert list(np.flatnonzero(diloco_syncs)) == [1, 3, 5, 7]
    local_plan = LocalSGD.plan
    monkeypatch.setattr(LocalSGD, "plan", lambda self, seed: dataclasses.replace(local_plan(self, seed),
                                                                                  sync_after=diloco_syncs))
    res = simulate(exp, record_steps=True)
    cols = ["worker", "step", "phase", "start_s", "end_s", "bytes"]
    by = {a: g[cols].reset_index(drop=True) for a, g in res.steps.groupby("algorithm")}
    pd.testing.assert_frame_equal(by["local_sgd"], by["diloco"])


def test_palsgd_with_p_zero_is_diloco(tiny):
    res = simulate(tiny({"algorithm": {"p": 0.0}, "cluster": {"variability": {"jitter_cv": 0.1}}},
                        algorithms=["diloco", "palsgd"], steps=9), record_steps=True)
    cols = ["worker", "step", "phase", "start_s", "end_s", "bytes"]
    by = {a: g[cols].reset_index(drop=True) for a, g in res.steps.groupby("algorithm")}
    pd.testing.assert_frame_equal(by["diloco"], by["palsgd"])


def test_engine_totals_equal_phase_totals_of_the_step_table(tiny):
    exp = tiny({"cluster": {"variability": {"jitter_cv": 0.2, "straggler_prob": 0.1, "straggler_factor": 3.0},
                            "compute": {"data_time_s": 0.05}},
                "algorithm": {"warmup_steps": 2, "skip_draws": "independent"}, "repeats": 2}, steps=12)
    res = simulate(exp, record_steps=True)
    keys = ["source", "algorithm", "run", "worker", "phase"]
    mine = res.totals.sort_values(keys).reset_index(drop=True)
    theirs = schema.phase_totals(res.steps).sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, theirs, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(res.runs, schema.summarize_steps(res.steps), check_exact=False,
                                  rtol=1e-12)
    assert simulate(exp, record_steps=False).steps is None
    pd.testing.assert_frame_equal(simulate(exp, record_steps=False).runs, res.runs)
    schema.validate_steps(res.steps)


def test_record_steps_none_keeps_small_runs_only(tiny):
    assert simulate(tiny(steps=10)).steps is not None
    big = tiny({"cluster": {"nodes": 64, "gpus_per_node": 8}}, algorithms=["ddp"], steps=2000)
    assert simulate(big).steps is None


def test_same_seed_same_result_other_seed_differs_with_jitter(tiny):
    noisy = {"cluster": {"variability": {"jitter_cv": 0.1}}}
    a, b = simulate(tiny(noisy, steps=20)).runs, simulate(tiny(noisy, steps=20)).runs
    pd.testing.assert_frame_equal(a, b)
    c = simulate(tiny({**noisy, "seed": 1}, steps=20)).runs
    assert not np.allclose(a["wall_clock_s"], c["wall_clock_s"])


def test_monte_carlo_repeats_and_spread(tiny):
    res = simulate(tiny({"cluster": {"variability": {"jitter_cv": 0.1}}, "repeats": 5}, steps=10))
    assert sorted(set(res.runs["run"])) == [0, 1, 2, 3, 4]
    spread = schema.spread(res.runs)
    row = spread[spread["algorithm"] == "local_sgd"].iloc[0]
    assert row["runs"] == 5
    assert row["wall_clock_s_p05"] < row["wall_clock_s_mean"] < row["wall_clock_s_p95"]


def test_stragglers_hurt_ddp_more_than_local_methods(tiny):
    calm = simulate(tiny({"algorithm": {"sync_every": 20}}, algorithms=["ddp", "local_sgd"], steps=200))
    spiky = {"cluster": {"variability": {"straggler_prob": 0.05, "straggler_factor": 4.0}},
             "algorithm": {"sync_every": 20}}
    noisy = simulate(tiny(spiky, algorithms=["ddp", "local_sgd"], steps=200))
    ddp_loss = noisy.runs["wall_clock_s"].iloc[0] / calm.runs["wall_clock_s"].iloc[0]
    local_loss = noisy.runs["wall_clock_s"].iloc[1] / calm.runs["wall_clock_s"].iloc[1]
    assert ddp_loss > local_loss > 1.0
    assert noisy.runs["wait_s"].iloc[0] > noisy.runs["wait_s"].iloc[1]


def test_failures_are_recorded_and_ddp_waits(tiny):
    fails = {"cluster": {"failures": {"mtbf_s": 20.0, "restart_s": 5.0}}}
    res = simulate(tiny(fails, algorithms=["ddp", "local_sgd"], steps=60), record_steps=True)
    rows = res.steps[res.steps["phase"] == "failure"]
    assert len(rows) > 0
    assert np.allclose(rows["end_s"] - rows["start_s"], 5.0)
    ddp = res.runs.iloc[0]
    assert ddp["failure_s"] > 0 and ddp["wait_s"] > 0  # the other worker waits out the restart


def test_rejoin_lets_local_methods_sync_without_the_failed_worker(tiny):
    fails = {"cluster": {"failures": {"mtbf_s": 30.0, "restart_s": 8.0, "policy": "rejoin"}},
             "algorithm": {"sync_every": 4}}
    wait = simulate(tiny({**fails, "cluster": {"failures": {**fails["cluster"]["failures"], "policy": "wait"}}},
                         algorithms=["local_sgd"], steps=80), record_steps=True)
    rejoin = simulate(tiny(fails, algorithms=["local_sgd"], steps=80), record_steps=True)
    syncs = rejoin.steps[rejoin.steps["phase"] == "allreduce"].groupby("worker").size()
    failed = rejoin.steps[rejoin.steps["phase"] == "failure"]
    assert len(failed) > 0
    assert syncs.min() < syncs.max()  # a worker missed syncs while it was down
    assert wait.steps[wait.steps["phase"] == "allreduce"].groupby("worker").size().nunique() == 1


def test_warmup_optimizer_state_and_per_tensor_allreduce_cost_more(tiny):
    base = {"algorithm": {"warmup_steps": 2}, "cluster": {"intra_node": {"latency_us": 1000.0}}}
    plain = simulate(tiny(base, algorithms=["palsgd"], steps=8), record_steps=True).steps
    extra = {"algorithm": {"warmup_steps": 2, "warmup_syncs_optimizer_state": True,
                           "per_tensor_allreduce": True}}
    heavy = simulate(tiny({**base, **extra}, algorithms=["palsgd"], steps=8), record_steps=True).steps

    def sent(steps, step):
        rows = steps[(steps["worker"] == 0) & (steps["step"] == step)
                     & steps["phase"].isin(["allreduce", "allreduce_hidden"])]
        return rows["bytes"].sum(), (rows["end_s"] - rows["start_s"]).sum()

    s = 2 << 20
    assert sent(plain, 0)[0] == pytest.approx(s)  # 2 ranks: each sends 2(n-1)/n·S = S
    assert sent(heavy, 0)[0] == pytest.approx(3 * s)  # gradients + AdamW's m and v
    # A sync of 4 tensors pays 4 x 2 ring steps of a round trip of 1 ms each instead of 2. The first
    # outer step follows step W + H - 1 = 3.
    sync_plain, sync_heavy = sent(plain, 3)[1], sent(heavy, 3)[1]
    assert sync_heavy - sync_plain == pytest.approx(6 * 1e-3)


def test_epochs_budget_gives_nominal_steps(tiny):
    exp = tiny({"budget": {"steps": 0, "epochs": 2.0}, "workload": {"dataset_samples": 10}},
               algorithms=["ddp", "local_sgd"])
    assert list(simulate(exp).runs["steps"]) == [10, 10]  # 2 workers x 1 sample per step
