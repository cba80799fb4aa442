"""Reports rendered from real result folders hold the numbers of those folders, and every figure is drawn."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from palsgd.core import io, schema
from palsgd.core.errors import ConfigError
from palsgd.harness.machinery import compare, store
from palsgd.reports import tables
from palsgd.reports.render import render_report

LABEL = {"DDP": "ddp", "Local SGD": "local_sgd", "DiLoCo": "diloco", "PALSGD": "palsgd"}


def assert_figures_drawn(doc, count: int) -> None:
    """``count`` inline SVG figures, each with drawn shapes and text (axes, labels), none empty."""
    assert "could not be drawn" not in doc.text
    assert len(doc.svgs) == count, doc.svgs
    for svg in doc.svgs:
        assert svg["paths"] >= 10 and svg["texts"] >= 4, svg


def summary_by_algorithm(doc) -> dict[tuple[str, str], dict[str, float]]:
    table = doc.table("summary")
    out = {}
    for row in doc.body_rows(table):
        values = dict(zip(table["headers"], row, strict=True))
        out[(values["source"][0], LABEL[values["algorithm"][0]])] = {h: v for h, (_, v) in values.items()}
    return out


def test_simulate_report_holds_runs_csv(sim_folder, render):
    out, doc = render(sim_folder)
    runs = pd.read_csv(sim_folder / io.RUNS)
    mean = runs.groupby("algorithm").mean(numeric_only=True)
    summary = summary_by_algorithm(doc)
    assert set(summary) == {("sim", a) for a in mean.index}
    for algo, m in mean.iterrows():
        row = summary[("sim", algo)]
        assert row["runs"] == 3
        for header, column in (("speedup vs DDP", "speedup_vs_ddp"), ("wall-clock", "wall_clock_s"),
                               ("step time", "step_time_mean_s"), ("exposed comm", "comm_exposed_s"),
                               ("bytes sent / worker", "bytes_sent_per_worker"), ("waiting", "wait_s")):
            assert row[header] == pytest.approx(m[column], rel=1e-12), (algo, header)
        ddp = mean.loc["ddp"]
        assert row["bytes saved vs DDP"] == pytest.approx(ddp.bytes_sent_per_worker - m.bytes_sent_per_worker)
        assert row["exposed comm saved vs DDP"] == pytest.approx(ddp.comm_exposed_s - m.comm_exposed_s)
    speedup = mean.loc["palsgd", "speedup_vs_ddp"]
    assert doc.headlines[0].startswith(f"On a100-4x8-ib100, PALSGD is predicted {speedup:.2f}x faster than DDP "
                                       "for gpt-neo-8m (120 steps)")
    assert_figures_drawn(doc, 2)  # time breakdown, timeline
    assert "Where the time goes" in doc.text and "Timeline (sim)" in doc.text
    assert "algorithm parameters" in doc.text and "a100-4x8-ib100" in doc.text  # assumptions stamped in
    trace = [link for link in doc.links if link.endswith(".trace.json")]
    assert len(trace) == 1
    events = json.loads((out.parent / trace[0]).read_text())["traceEvents"]
    assert {e["name"] for e in events if e["ph"] == "X"} >= {"compute", "allreduce"}
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temporary file left


def test_hand_checked_run_numbers_and_sim_vs_real(run_folder, render):
    _, doc = render(run_folder)
    summary = summary_by_algorithm(doc)
    # By hand (conftest.hand_steps): DDP 40 x (0.11 + 0.05) = 6.4 s; DiLoCo 4 x (10 x 0.11 + 0.05 + 0.004);
    # PALSGD 4 x (8 x 0.11 + 2 x 0.002 + 0.054).
    assert summary[("real", "ddp")]["wall-clock"] == pytest.approx(6.4)
    assert summary[("real", "diloco")]["wall-clock"] == pytest.approx(4.616)
    assert summary[("real", "palsgd")]["wall-clock"] == pytest.approx(3.752)
    assert summary[("real", "palsgd")]["speedup vs DDP"] == pytest.approx(6.4 / 3.752)
    assert summary[("sim", "palsgd")]["wall-clock"] == pytest.approx(3.752 * 1.1)
    assert summary[("real", "diloco")]["bytes saved vs DDP"] == pytest.approx(36 * 4e6)
    assert f"PALSGD is measured {6.4 / 3.752:.2f}x faster than DDP for gpt-neo-8m (40 steps)" in doc.headlines[0]
    # sim rows are real x 1.1: every time is predicted 10% high, every speedup exactly.
    errors = {row[0][0]: row[2][1] for row in doc.body_rows(doc.tables[1])}
    assert errors == pytest.approx({"step_time_mean_s": 10.0, "wall_clock_s": 10.0, "speedup_vs_ddp": 0.01})
    assert_figures_drawn(doc, 4)  # breakdown, timeline, predicted vs measured, loss


def test_comparison_from_runs_matches_harness_compare(run_folder):
    runs = pd.read_csv(run_folder / io.RUNS)
    ours = tables.comparison_from_runs(runs, "c", {})
    theirs = compare.compare(runs[runs["source"] == "sim"], runs[runs["source"] == "real"], case="c")
    key = ["algorithm", "metric"]
    ours, theirs = ours.sort_values(key).reset_index(drop=True), theirs.sort_values(key).reset_index(drop=True)
    assert ours[key].equals(theirs[key])
    np.testing.assert_allclose(ours["error_pct"], theirs["error_pct"], rtol=1e-12)


def test_time_to_target_from_manifest_target(run_folder, render):
    _, doc = render(run_folder)
    target_table = next(t for t in doc.tables if "time to target" in t["headers"])
    got = {LABEL[r[2][0]]: r[4][1] for r in doc.body_rows(target_table)}
    # eval_loss(s) = 1.05 + 4 exp(-s / tau) at s = 9, 19, ...; a DDP step ends at 0.16 (s + 1) s.
    l9, l19 = 1.05 + 4 * math.exp(-9 / 8), 1.05 + 4 * math.exp(-19 / 8)
    assert got["ddp"] == pytest.approx(1.6 + 1.6 * (l9 - 1.6) / (l9 - l19))
    assert set(got) == {"ddp", "diloco", "palsgd"}


def test_targets_csv_is_drawn_and_tabled(tmp_path, parse, build):
    folder = build.write_run_folder(tmp_path / "run", with_sim=False)
    targets = pd.DataFrame({"source": "real", "cluster": "cpu", "algorithm": ["ddp", "palsgd"],
                            "target_loss": 1.6, "step_at_target": [17.1, 21.0],
                            "time_to_target_s": [2.9, 2.0], "speedup_to_target": [1.0, 1.45],
                            "wall_clock_budget_s": [6.4, 3.752], "speedup_same_budget": [1.0, 1.7058]})
    # a prediction from a convergence description, with its error against the measured time
    described = targets.assign(source="convergence", time_to_target_s=[3.19, 1.8],
                               error_vs_measured=[0.1, -0.1])
    store.write_table(folder, "targets.csv", pd.concat([targets, described]))
    (folder / io.STEPS).unlink()  # not needed here; saves drawing a timeline
    doc = parse(render_report([folder], tmp_path / "r.html"))
    table = next(t for t in doc.tables if "time to target" in t["headers"])
    rows = {(r[0][0], LABEL[r[2][0]]): r for r in doc.body_rows(table)}
    palsgd = rows[("real", "palsgd")]
    assert palsgd[4][1] == 2.0 and palsgd[5][1] == 1.45 and palsgd[6][1] == 1.7058
    assert rows[("convergence", "palsgd")][7] == ("-10.0%", -0.1)
    assert "targets.csv" in doc.text
    assert_figures_drawn(doc, 2)  # breakdown, loss


def test_sweep_report(sweep_folder, render):
    _, doc = render(sweep_folder)
    sweep = pd.read_csv(sweep_folder / "sweep.csv")
    crossovers = pd.read_csv(sweep_folder / "crossovers.csv")
    assert_figures_drawn(doc, 2)  # one per swept key
    keys = ["cluster.inter_node.bandwidth_gbps", "algorithm.palsgd.sync_every"]
    assert all(f"Speedup vs {k}" in doc.text for k in keys)
    assert doc.headlines[0].startswith(f"Over {keys[0]} 2–200; {keys[1]} 1–16, speedup vs DDP")
    mean = sweep[sweep.algorithm == "palsgd"].groupby(keys)["speedup_vs_ddp"].mean()
    assert f"PALSGD {mean.min():.2f}–{mean.max():.2f}×" in doc.headlines[0]
    assert mean.min() < 1 < mean.max() and len(crossovers) >= 2  # the fixture crosses DDP
    table = next(t for t in doc.tables if "crossover value" in t["headers"])
    assert [r[3][1] for r in doc.body_rows(table)] == pytest.approx(crossovers["value"].tolist())


def test_validate_report(validate_folder, render):
    _, doc = render(validate_folder)
    comparison = pd.read_csv(validate_folder / "comparison.csv")
    summary = {r[0][0]: r for r in doc.body_rows(doc.tables[0])}
    # times: six points +10% (case lan), six -5% (wan-10ms) -> geometric mean sqrt(10 x 5); speedups exact.
    assert summary["wall_clock_s"][2][1] == pytest.approx(math.sqrt(50))
    assert summary["wall_clock_s"][3][1] == pytest.approx(10.0)
    assert summary["speedup_vs_ddp"][3][1] == pytest.approx(0.0, abs=1e-9)
    detail = doc.body_rows(doc.tables[1])
    assert [r[7][1] for r in detail] == pytest.approx(comparison["error_pct"].tolist())
    assert doc.headlines[0].startswith("Predicted vs measured over 2 case(s): times within 7.1 %")
    assert_figures_drawn(doc, 1)


def test_killed_run_renders_what_exists(killed_folder, tmp_path, parse, build):
    doc = parse(render_report([killed_folder], tmp_path / "r.html"))
    assert "interrupted at step 23 (palsgd)" in doc.text
    assert "gathered from 4 file(s) under ranks/" in doc.text  # steps: 2 ranks x 2 algorithms
    assert "ranks/palsgd/rank1.metrics.csv" in doc.text or "metrics.csv was not written" in doc.text
    assert "summarized from steps.parquet" in doc.text
    summary = summary_by_algorithm(doc)
    assert summary[("real", "ddp")]["wall-clock"] == pytest.approx(6.4)
    partial = schema.summarize_steps(build.hand_steps("palsgd", steps=24))
    assert summary[("real", "palsgd")]["wall-clock"] == pytest.approx(partial["wall_clock_s"].iloc[0])
    # 24 PALSGD steps against 40 DDP steps is no speedup: none is claimed, in the table or a headline.
    assert summary[("real", "palsgd")]["speedup vs DDP"] is None and "partial: 24 steps" in doc.text
    assert not doc.headlines and "PALSGD (partial)" in doc.text
    assert_figures_drawn(doc, 3)  # breakdown, timeline, loss (from the rank files)


def test_damaged_table_costs_one_panel_not_the_report(tmp_path, parse, build):
    folder = build.write_run_folder(tmp_path / "run", with_sim=False)
    metrics = pd.read_csv(folder / io.METRICS).assign(loss="nan-ish")  # a foreign writer's metrics.csv
    store.write_table(folder, io.METRICS, metrics)
    (folder / io.STEPS).unlink()
    doc = parse(render_report([folder], tmp_path / "r.html"))
    assert "the loss panel could not be drawn" in doc.text
    assert len(doc.svgs) == 1 and summary_by_algorithm(doc)[("real", "ddp")]["wall-clock"] == pytest.approx(6.4)


def test_failed_and_running_folders(tmp_path, parse, build):
    failed = build.write_run_folder(tmp_path / "failed", runs_only=True)
    store.finish(failed, "failed", failure={"algorithm": "palsgd", "kind": "crash", "rank": 1, "step": 17,
                                            "message": "rank 1 exited with status 137"})
    running = build.write_run_folder(tmp_path / "running", runs_only=True)
    io.update_manifest(running, status="running", pid=os.getpid())
    doc = parse(render_report([failed, running], tmp_path / "r.html"))
    assert "failed at step 17 (algorithm palsgd, rank 1): rank 1 exited with status 137" in doc.text
    assert f"still running (pid {os.getpid()})" in doc.text


def test_diverged_run_is_shown_diverged_at_its_step(tmp_path, parse, build):
    """The worker stops an algorithm whose loss turns non-finite: the manifest says "diverged" at that step.
    DDP finished its 40 steps; PALSGD stopped after step 2 (3 steps), so it has totals but no speedup."""
    out = tmp_path / "diverged"
    store.prepare(out)
    store.start(out, "run", None, target_loss=1.6)
    ddp, palsgd = build.hand_steps("ddp"), build.hand_steps("palsgd", steps=3)
    store.write_table(out, io.RUNS, schema.summarize_steps(pd.concat([ddp, palsgd], ignore_index=True)))
    metrics = pd.concat([build.hand_metrics(ddp, tau=8.0), build.hand_metrics(palsgd, tau=9.0)], ignore_index=True)
    metrics.loc[(metrics["algorithm"] == "palsgd") & (metrics["step"] == 2), ["loss", "eval_loss"]] = -np.inf
    store.write_table(out, io.METRICS, metrics)
    store.finish(out, "diverged", failure={"algorithm": "palsgd", "kind": "diverged", "step": 2,
                                           "message": "loss is nan"},
                 algorithms={"ddp": {"status": "complete", "last_step": 39},
                             "palsgd": {"status": "diverged", "last_step": 2}})
    report = render_report([out], tmp_path / "r.html")
    assert '<span class="status diverged">diverged</span>' in report.read_text(encoding="utf-8")
    doc = parse(report)
    assert "This run is diverged at step 2 (algorithm palsgd): loss is nan" in doc.text
    summary = summary_by_algorithm(doc)
    assert summary[("real", "palsgd")]["speedup vs DDP"] is None and "diverged: 3 steps" in doc.text
    assert summary[("real", "ddp")]["wall-clock"] == pytest.approx(6.4)
    assert not doc.headlines and "PALSGD (diverged)" in doc.text
    # A non-finite loss reaches no target, and a diverged run has no same-budget speedup either.
    table = next(t for t in doc.tables if "time to target" in t["headers"])
    rows = {LABEL[r[2][0]]: r for r in doc.body_rows(table)}
    assert rows["palsgd"][4][0] == "not reached" and rows["palsgd"][6][1] is None
    assert rows["ddp"][4][1] > 0 and rows["ddp"][6][1] == 1.0


def test_empty_folder_and_bad_arguments(tmp_path, parse):
    with pytest.raises(ConfigError, match="not a palsgd results folder"):
        render_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="not a palsgd results folder"):
        render_report([tmp_path / "missing"], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="at least one"):
        render_report([], tmp_path / "r.html")
    started = tmp_path / "just-started"
    store.start(started.mkdir() or started, "simulate")
    with pytest.raises(ConfigError, match="is a folder"):
        render_report([started], tmp_path)
    doc = parse(render_report([started], tmp_path / "r.html"))  # manifest only: still a report
    assert "No result tables in this folder yet" in doc.text and not doc.svgs


def test_reports_import_neither_torch_nor_simpy():
    code = ("import sys, palsgd.reports.render; bad = {'torch', 'simpy'} & set(sys.modules); "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_swept_key_with_zero_gets_a_symlog_axis():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from palsgd.reports.figures import _spans_decade, _x_ticks

    values = pd.Series([0.0, 0.001, 0.003, 0.01, 0.03])
    fig, ax = plt.subplots()
    _x_ticks(ax, values, _spans_decade(values))
    assert ax.get_xscale() == "symlog"  # a plain log axis would send the zero to minus infinity
    plt.close(fig)
