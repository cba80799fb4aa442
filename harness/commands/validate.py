"""`palsgd validate`: does the simulator predict what this machine measures?

Two suites, two lists of cases for one pipeline: ``validate_cpu.py`` (tiny models on this machine's
cores) and ``validate_cluster.py`` (emulated accelerators on two-tier emulated clusters). Each case is
prepared by its suite (a fresh calibration: ``machinery/calibrate.py`` fits all-reduce times to the
simulator's cost model on that network), then run for real and predicted by ``machinery/pipeline.py``
``measure_and_predict``; the comparison rows (``machinery/compare.py``) are kept, and the same again with
each run's own measured compute. calculon-ai/calculon's validation command is the model: profile,
prediction and error per case, then the median and the maximum.

Folder layout (``out/``)::

    manifest.json              kind "validate", the cases and their status
    comparison.csv             every case's rows (case, workload, network, ranks, algorithm, metric, ...)
    comparison_summary.csv     compare.summary of all rows
    comparison_replay.csv      the same with each run's own measured compute (``replay_prediction``)
    comparison_replay_summary.csv
    cases/<case>/profile/      cluster.toml, collectives.csv, fit.csv, tcp_rtt.json
    cases/<case>/run/          the real run (runs.csv with sim and real rows, steps.parquet, ...)
    compute/<workload>-<n>r.json   (cpu suite) compute measured once per (workload, ranks), reused across networks

The exit status says whether the matrix ran (0) or a case failed (1); the accuracy targets are reported,
never enforced: a miss is a finding about the model, not a broken command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ...core import io, schema
from ...core.config import Experiment, from_dict
from ...core.errors import ConfigError
from ...sim import engine
from ..machinery import dilation, netem, pipeline, store
from ..machinery.compare import COMPARISON_COLUMNS, compare, format_comparison, summary
from ..machinery.progress import Progress
from . import validate_cluster, validate_cpu

SUITES = {"cpu": validate_cpu, "cluster": validate_cluster}
"""Each suite: ``cases``, ``prepare`` (calibrate; the case's experiment and launch) and its ``TARGETS``."""


def validate_to_folder(out: Path, *, quick: bool, overwrite: bool, emulate: bool, suite: str = "cpu",
                       echo: Callable[[str], None] = print, time_dilation: float = 1.0,
                       only: tuple[str, ...] = ()) -> int:
    """Run the suite's cases into ``out``; print the comparison and its summary. Exit status 0 when every
    case ran, 1 when one failed (its error is in the manifest; the other cases still run). The cluster
    suite's emulated cluster can run ``time_dilation`` times slower (``dilation.py``); the cpu suite's
    compute is real and cannot be dilated. ``only``: run just the cases of these names."""
    time_dilation = dilation.check(time_dilation, emulated_compute=suite == "cluster",
                                   emulated_network=suite == "cluster")
    cases = select(SUITES[suite].cases(quick=quick, emulate=emulate), only)
    for case in cases:  # fail before any work, with the preflight's one-line reason
        if case.network != pipeline.UNSHAPED:
            netem.preflight(netem.NetemSpec.parse(case.network).dilated(time_dilation))
    out = store.prepare(out, overwrite=overwrite)
    store.start(out, "validate", quick=quick, emulate=emulate, suite=suite, time_dilation=time_dilation,
                cases={c.name: {"status": "pending", **c.describe()} for c in cases})
    parts, replays, status = [], [], {}
    cache: dict = {}  # cpu: compute per (workload, ranks); cluster: profile per calibration key
    progress = Progress(len(cases), "validate", unit="cases")
    try:
        for i, case in enumerate(cases, 1):
            echo(f"[{i}/{len(cases)}] {case.name}")
            try:
                rows, replay = run_case(suite, case, out, cache, echo, time_dilation)
                parts.append(rows)
                replays.append(replay)
                save_rows(out, parts, replays)  # what finished survives a suite stopped later
                status[case.name] = {"status": "complete", **case.describe()}
            except Exception as err:  # a failed case is recorded and reported; the matrix goes on
                echo(f"palsgd: case {case.name} failed: {err}")
                status[case.name] = {"status": "failed", "error": str(err), **case.describe()}
            io.update_manifest(out, cases={**{c.name: {"status": "pending", **c.describe()} for c in cases},
                                           **status})
            progress.update(1)
    except KeyboardInterrupt:
        progress.close(failed=True)
        store.finish(out, "interrupted", cases=status)
        raise
    progress.close()
    write_tables(out, parts, replays, echo, SUITES[suite].TARGETS)
    echo(dilation.label(time_dilation))
    failed = [name for name, s in status.items() if s["status"] != "complete"]
    store.finish(out, "failed" if failed else "complete", cases=status, failed_cases=failed)
    if failed:
        echo(f"palsgd: {len(failed)} case(s) failed: {', '.join(failed)} (see {out}/manifest.json)")
    echo(f"wrote {out}/")
    return 1 if failed else 0


def select(cases: list, names: tuple[str, ...]) -> list:
    """The cases named in ``names`` (all when empty), in the suite's order; an unknown name is refused."""
    known = [c.name for c in cases]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"no such case in this suite; valid: {', '.join(known)}", key="--case",
                          value=unknown[0], source="command line")
    return [c for c in cases if not names or c.name in names]


def run_case(suite: str, case, out: Path, cache: dict, echo, time_dilation: float = 1.0
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepare (calibrate), run for real on the calibration, predict; return the case's comparison rows
    (from the calibration, and replayed with the run's own compute). Waits are compared in cases with variability."""
    folder = out / "cases" / case.name
    exp, launch, calibration = SUITES[suite].prepare(case, folder, out, cache, time_dilation)
    waits = ("wait_s",) if case.describe().get("variability") else ()
    _, rows = pipeline.measure_and_predict(exp, folder / "run", launch, calibration, case=case.name,
                                           extra_metrics=waits)
    ran = from_dict(store.read_manifest(folder / "run")["experiment"])  # on the calibration
    rows, replay = with_replay(ran, folder / "run", rows, network=case.network, case=case.name)
    echo(format_comparison(rows))
    echo("compute drift, run vs calibration: " + ", ".join(
        f"{a} {d:+.0f} %" for a, d in rows.groupby("algorithm", sort=False)["compute_drift_pct"].first().items()))
    return rows, replay


def with_replay(exp: Experiment, run: Path, rows: pd.DataFrame, *, network: str, case: str
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The comparison rows explained (``explain``) and the replayed comparison (``replay_prediction``)."""
    replay = replay_prediction(exp, run, network=network, case=case)
    return explain(rows, replay, compute_drift(exp, run)), replay


def save_rows(out: Path, parts: list[pd.DataFrame], replays: list[pd.DataFrame]) -> None:
    """comparison.csv and comparison_replay.csv of the cases finished so far (summaries come at the end)."""
    for name, frames in (("comparison", parts), ("comparison_replay", replays)):
        store.write_table(out, f"{name}.csv", pd.concat(frames, ignore_index=True))


def write_tables(out: Path, parts: list[pd.DataFrame], replays: list[pd.DataFrame], echo,
                 targets: dict = validate_cpu.TARGETS) -> None:
    """comparison.csv (+ _summary) from the calibration, comparison_replay.csv (+ _summary) with each
    run's own compute; print both, the first with the targets."""
    for name, frames in (("comparison", parts), ("comparison_replay", replays)):
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COMPARISON_COLUMNS))
        store.write_table(out, f"{name}.csv", table)
        store.write_table(out, f"{name}_summary.csv", summary(table))
        if name == "comparison":
            echo("predicted from the calibration vs measured:")
            echo(format_comparison(table))
            echo(format_accuracy_targets(table, targets))
        else:
            echo("predicted with each run's own measured compute (communication model only):")
            echo(format_comparison(table).split("\n\n")[-1])


def compute_drift(exp: Experiment, run: Path) -> dict[str, float]:
    """Per algorithm, how much longer (%) the run's mean compute phase took than the calibration's c:
    on shared cores the forward and backward compete with communication threads and sibling ranks, and
    that competition differs between the calibration's loop and the run."""
    steps = store.read_table(run, io.STEPS)
    compute = steps[steps["phase"] == "compute"]
    mean = (compute["end_s"] - compute["start_s"]).groupby(compute["algorithm"]).mean()
    return {a: 100.0 * (float(m) / exp.cluster.compute.step_time_s - 1) for a, m in mean.items()}


def explain(rows: pd.DataFrame, replay: pd.DataFrame, drift: dict[str, float]) -> pd.DataFrame:
    """Two columns per comparison row: the algorithm's compute drift, and the effect that dominates the
    row's error: "compute drift" when predicting with the run's own compute removes most of the error,
    else "communication model" (what the simulator models beyond compute: collectives, overlap, barriers)."""
    keys = ["case", "algorithm", "metric"]
    both = rows.merge(replay[[*keys, "error_pct"]].rename(columns={"error_pct": "replay_error"}), on=keys,
                      how="left")
    cal, rep = both["error_pct"].abs(), both["replay_error"].abs()
    effect = ["compute drift" if c - r > r else "communication model" for c, r in zip(cal, rep, strict=True)]
    return rows.assign(compute_drift_pct=rows["algorithm"].map(drift).to_numpy(), dominant_effect=effect)


def repredict(out: Path, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Simulate every case of a finished validation folder again with the current simulator (after a
    change to the cost model) and rewrite its comparison tables; the measurements are not touched."""
    out = Path(out)
    manifest = store.read_manifest(out)
    cases = manifest.get("cases", {})
    parts, replays = [], []
    for name, case in cases.items():
        run = out / "cases" / name / "run"
        if not (run / io.MANIFEST).exists() or store.read_manifest(run).get("status") != "complete":
            continue  # no complete measurement to compare with
        exp = from_dict(store.read_manifest(run)["experiment"])
        waits = ("wait_s",) if case.get("variability") else ()
        rows = pipeline.predict(exp, run, network=case["network"], case=name, extra_metrics=waits)
        rows, replay = with_replay(exp, run, rows, network=case["network"], case=name)
        parts.append(rows)
        replays.append(replay)
        cases[name] = {**case, "status": "complete"}
        cases[name].pop("error", None)
    io.update_manifest(out, cases=cases, repredicted_at=store.now())
    write_tables(out, parts, replays, echo, SUITES.get(manifest.get("suite"), validate_cpu).TARGETS)
    return store.read_table(out, "comparison.csv")


REPLAY_PHASES = {"compute": "step_time_s", "optimizer": "optimizer_time_s", "data": "data_time_s",
                 "pseudo_sync": "pseudo_sync_time_s"}


def replay_prediction(exp: Experiment, run: Path, *, network: str = "", case: str = "") -> pd.DataFrame:
    """The comparison again, with each algorithm's compute terms taken from its own measured run
    instead of the calibration: the mean c, o, data and m phases, the outer step per sync, and the
    spread of c as ``jitter_cv``. What is left to predict is what the simulator models beyond compute:
    communication, overlap, barriers and waits. The compute of the calibration and of each run differ by
    up to 2.9x even on an idle machine (resnet-tiny DDP, docs/validation.md); this view is not exposed to that.
    """
    runs = store.read_table(run, io.RUNS)
    steps = store.read_table(run, io.STEPS)
    real = runs[runs["source"] == "real"]
    predicted = []
    for spec in exp.algorithms:
        rows = steps[steps["algorithm"] == spec.name]
        dur = (rows["end_s"] - rows["start_s"]).groupby(rows["phase"])
        mean, cluster = dur.mean(), exp.cluster
        measured = {field: float(mean[phase]) for phase, field in REPLAY_PHASES.items() if phase in mean}
        syncs = rows.loc[rows["phase"] == "allreduce", ["worker", "step"]].drop_duplicates()
        if "outer_step" in mean and len(syncs):
            measured["outer_step_time_s"] = float(dur.sum()["outer_step"]) / len(syncs)
        c = rows.loc[rows["phase"] == "compute"]
        cv = float((c["end_s"] - c["start_s"]).std() / (c["end_s"] - c["start_s"]).mean())
        cluster = dataclasses.replace(cluster, compute=dataclasses.replace(cluster.compute, **measured),
                                      variability=dataclasses.replace(cluster.variability, jitter_cv=cv))
        predicted.append(engine.simulate(exp.replace(cluster=cluster, algorithms=(spec,))).runs)
    predicted = schema.add_speedup(pd.concat(predicted, ignore_index=True))
    return compare(predicted, real, case=case or exp.workload.name, workload=exp.workload.name,
                   network=network, ranks=exp.workers)


def format_accuracy_targets(comparison: pd.DataFrame, targets: dict = validate_cpu.TARGETS) -> str:
    """One line per target: reached or missed, with the figures (reported, not enforced). A target is
    (median, max) of |error| in the metric's unit, or (median, max, "relative") of |predicted / measured - 1|."""
    lines = []
    table = summary(comparison).set_index("metric") if len(comparison) else pd.DataFrame()
    for metric, (median_max, max_max, *scale) in targets.items():
        if metric not in table.index:
            continue
        r = table.loc[metric]
        relative = scale == ["relative"]
        median, worst = (r["median_rel_error_pct"], r["max_rel_error_pct"]) if relative else \
            (r["median_abs_error"], r["max_abs_error"])
        unit = "% relative" if relative else r["unit"]
        ok = median <= median_max and worst <= max_max
        lines.append(f"target {metric}: median |error| <= {median_max:g} {unit}, max <= {max_max:g} "
                     f"{unit}: {'met' if ok else 'MISSED'} (median {median:.1f}, max {worst:.1f})")
    return "\n".join(lines)
