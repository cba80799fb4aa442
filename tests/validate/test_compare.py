"""Predicted vs measured on made-up run tables: times are compared only for the same bytes sent."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from palsgd.harness.machinery.compare import compare, format_comparison, summary


def runs(source: str, rows: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """One run per algorithm: algorithm -> (wall_clock_s, bytes_sent_per_worker); 10 steps; DDP is 20 s."""
    return pd.DataFrame([{"source": source, "algorithm": a, "wall_clock_s": wall, "step_time_mean_s": wall / 10,
                          "speedup_vs_ddp": 20.0 / wall, "bytes_sent_per_worker": sent}
                         for a, (wall, sent) in rows.items()])


def test_times_are_compared_where_bytes_agree_within_one_percent():
    predicted = runs("sim", {"ddp": (20.0, 1e9), "diloco": (11.0, 1.009e7)})
    measured = runs("real", {"ddp": (20.0, 1e9), "diloco": (10.0, 1e7)})
    table = compare(predicted, measured)
    assert set(table["metric"]) == {"step_time_mean_s", "wall_clock_s", "speedup_vs_ddp"}
    wall = table[(table["algorithm"] == "diloco") & (table["metric"] == "wall_clock_s")]
    assert wall["error_pct"].item() == pytest.approx(10.0)
    assert "not compared" not in format_comparison(table)


def test_an_algorithm_whose_bytes_differ_gets_one_clear_line_instead_of_time_errors():
    predicted = runs("sim", {"ddp": (20.0, 1e9), "palsgd": (8.0, 2.0e7)})
    measured = runs("real", {"ddp": (21.0, 1e9), "palsgd": (10.0, 1.0e7)})
    table = compare(predicted, measured)
    palsgd = table[table["algorithm"] == "palsgd"]
    assert palsgd["metric"].tolist() == ["bytes_sent_per_worker"]
    assert (palsgd["predicted"].item(), palsgd["measured"].item()) == (2.0e7, 1.0e7)
    text = format_comparison(table)
    assert ("palsgd: not compared: the simulator predicts 20,000,000 bytes sent per worker, the run measured "
            "10,000,000 (+100.0 %)") in text
    assert "ddp" in text and "wall_clock_s" in text  # DDP's bytes agree: its times are still compared
    assert summary(table)["metric"].tolist() == ["step_time_mean_s", "wall_clock_s"]


def test_all_algorithms_mismatched_leaves_only_the_messages():
    table = compare(runs("sim", {"ddp": (20.0, 3e9)}), runs("real", {"ddp": (20.0, 1e9)}))
    assert format_comparison(table).splitlines() == [
        "ddp: not compared: the simulator predicts 3,000,000,000 bytes sent per worker, the run measured "
        "1,000,000,000 (+200.0 %); its times would measure a different communication",
        "no comparable rows"]


def test_a_speedup_error_is_given_in_relative_terms_beside_its_pp():
    """A 2x speedup predicted as 2.2x is 20 pp but 10 % relative; a 1.25x one predicted as 1.3x is 5 pp and
    4 % relative: |predicted / measured - 1| beside the pp, in the summary and the printed table."""
    predicted = runs("sim", {"ddp": (20.0, 1e9), "diloco": (20.0 / 2.2, 1e7), "palsgd": (20.0 / 1.3, 1e7)})
    measured = runs("real", {"ddp": (20.0, 1e9), "diloco": (10.0, 1e7), "palsgd": (16.0, 1e7)})
    table = compare(predicted, measured)
    speedup = summary(table).set_index("metric").loc["speedup_vs_ddp"]
    assert (speedup["median_abs_error"], speedup["max_abs_error"]) == pytest.approx((12.5, 20.0))
    assert (speedup["median_rel_error_pct"], speedup["max_rel_error_pct"]) == pytest.approx((7.0, 10.0))
    wall = summary(table).set_index("metric").loc["wall_clock_s"]  # a time's relative error is its |error|
    assert wall["max_rel_error_pct"] == pytest.approx(wall["max_abs_error"])
    text = format_comparison(table)
    assert "relative |predicted/measured - 1| median 7.0 %, max 10.0 %" in text
    assert "+20.0 pp   10.0 %" in text


def test_waits_are_compared_with_the_simulated_run_of_the_same_seed():
    """The real run's emulated accelerators drew the simulator's run-0 factors: its waits are compared with
    run 0's, the other metrics with the Monte-Carlo mean."""
    sim = pd.concat([runs("sim", {"ddp": (20.0, 1e9), "diloco": (w, 1e7)}).assign(run=r, wait_s=wait)
                     for r, w, wait in ((0, 10.0, 1.0), (1, 12.0, 3.0))], ignore_index=True)
    real = runs("real", {"ddp": (20.0, 1e9), "diloco": (11.0, 1e7)}).assign(run=0, wait_s=1.25)
    table = compare(sim, real, metrics=("wall_clock_s", "wait_s")).set_index(["algorithm", "metric"])
    assert table.loc[("diloco", "wait_s"), "predicted"] == pytest.approx(1.0)
    assert table.loc[("diloco", "wait_s"), "error_pct"] == pytest.approx(-20.0)
    assert table.loc[("diloco", "wall_clock_s"), "predicted"] == pytest.approx(11.0)


def test_with_emulated_accelerators_every_metric_is_compared_with_the_run_of_the_same_seed(tmp_path):
    """An emulated run's randomness is all the simulator's run 0's (its plan from exp.seed, its compute
    factors): a run that went exactly as run 0 has no error, though PALSGD's pseudo-sync steps differ between
    the seeds averaged. With real compute the mean over seeds is compared, waits apart."""
    from palsgd.core import io
    from palsgd.harness.commands import validate_cluster
    from palsgd.harness.machinery import pipeline, store
    from palsgd.sim import engine

    case = dataclasses.replace(validate_cluster.BASE, algorithms=("ddp", "palsgd"))
    exp = validate_cluster.case_experiment(case)
    sim = engine.simulate(exp, engine="exact").runs
    palsgd = sim[sim["algorithm"] == "palsgd"]
    assert palsgd["pseudo_sync_steps"].nunique() > 1  # the seeds drew differently
    as_measured = sim[sim["run"] == 0].assign(source="real")
    run_0, mean = palsgd["step_time_mean_s"].iloc[0], palsgd["step_time_mean_s"].mean()
    for compute, expected in (("emulated", run_0), ("real", mean)):
        folder = tmp_path / compute
        store.write_table(folder, io.RUNS, as_measured)
        table = pipeline.predict(exp.replace(train=dataclasses.replace(exp.train, compute=compute)), folder)
        rows = table.set_index(["algorithm", "metric"])
        assert rows.loc[("palsgd", "step_time_mean_s"), "predicted"] == pytest.approx(expected, rel=1e-12)
    assert rows.loc[("palsgd", "step_time_mean_s"), "error_pct"] != pytest.approx(0.0, abs=1.0)
