"""`palsgd validate`: does the simulator predict what this machine measures?

For each case of a matrix (workload x ranks x network) it calibrates the machine afresh
(``harness/machinery/calibrate.py``: all-reduce times fitted to the simulator's cost model on that network,
compute measured on N concurrent ranks), runs the algorithms for real on the calibrated cluster
(``harness/machinery/launch.py``), simulates the same experiment (``harness/commands/run.py``
``add_prediction``) and keeps the comparison rows (``harness/machinery/compare.py``). calculon-ai/calculon's
validation command is the model: profile, prediction and error per case, then the median and the maximum.

Folder layout (``out/``)::

    manifest.json              kind "validate", the cases and their status
    comparison.csv             every case's rows (case, workload, network, ranks, algorithm, metric, ...)
    comparison_summary.csv     compare.summary of all rows
    comparison_replay.csv      the same with each run's own measured compute (``replay_prediction``)
    comparison_replay_summary.csv
    cases/<case>/profile/      cluster.toml, collectives.csv, fit.csv, tcp_rtt.json
    cases/<case>/run/          the real run (runs.csv with sim and real rows, steps.parquet, ...)
    compute/<workload>-<n>r.json   compute measured once per (workload, ranks), reused across networks

The exit status says whether the matrix ran (0) or a case failed (1); the accuracy targets are reported,
never enforced: a miss is a finding about the model, not a broken command.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...core import io
from ...core.algorithms import ALGORITHMS
from ...core.config import Experiment, load
from ..machinery import store
from ..machinery.compare import COMPARISON_COLUMNS, format_comparison, summary
from ..machinery.progress import Progress

UNSHAPED = "unshaped"
NETWORKS = (UNSHAPED, "rate=1gbit,delay=5ms", "rate=100mbit,delay=10ms")
WORKLOADS = ("gpt-tiny", "resnet-tiny")
FULL_RANKS = (2, 4)
FULL_STEPS = 60
QUICK_STEPS = 24
STREAMING = ("algorithm.streaming_diloco.fragments=2", "algorithm.streaming_diloco.fragment_sync_delay=1")
"""Streaming DiLoCo as validated: two fragments, each all-reduce overlapped with one inner step."""
TARGETS = {"step_time_mean_s": (5.0, 15.0), "speedup_vs_ddp": (5.0, 5.0)}
"""metric -> (median, maximum) of |error| we aim for (% for times, percentage points for speedup)."""

# Calibration sized for the tiny workloads, whose payloads are 1-2 MB: sizes from 4 KiB to 4 MiB cover
# the DDP buckets (1 MiB first, the rest after) and a sync's flat buffer, in ~20 s per network.
CALIBRATION = {"min_bytes": 4096, "max_bytes": 4 * 2**20, "reps": 5, "per_octave": 1.0}
COMPUTE_STEPS = 80
"""Compute calibration steps per rank. With 20, two concurrent calibration ranks measured c = 155-175 ms
for gpt-tiny against 52-87 ms with 80 and 75-112 ms in the runs (docs/validation.md): a short window is
dominated by the sibling ranks' start-up."""


@dataclass(frozen=True)
class Case:
    workload: str
    ranks: int
    network: str
    """``unshaped`` (loopback, no emulation) or a NetemSpec string such as ``rate=1gbit,delay=5ms``."""
    steps: int

    @property
    def name(self) -> str:
        net = self.network.replace("rate=", "").replace("delay=", "").replace(",", "-")
        return f"{self.workload}-{self.ranks}r-{net}"

    @property
    def shaped(self) -> bool:
        return self.network != UNSHAPED

    def describe(self) -> dict:
        return {"workload": self.workload, "ranks": self.ranks, "network": self.network, "steps": self.steps}


def matrix(*, quick: bool, emulate: bool) -> list[Case]:
    """The cases: the full matrix, or the quick subset CI runs (gpt-tiny, 2 ranks, few steps)."""
    networks = NETWORKS if emulate else (UNSHAPED,)
    if quick:
        return [Case("gpt-tiny", 2, net, QUICK_STEPS) for net in networks[:2]]
    return [Case(w, n, net, FULL_STEPS) for w in WORKLOADS for n in FULL_RANKS for net in networks]


def validate_to_folder(out: Path, *, quick: bool, overwrite: bool, emulate: bool, suite: str = "cpu",
                       echo: Callable[[str], None] = print) -> int:
    """Run the suite's cases into ``out``; print the comparison and its summary. Exit status 0 when every
    case ran, 1 when one failed (its error is in the manifest; the other cases still run).

    ``cpu``: the matrix below (tiny models on this machine's cores); ``cluster``: emulated accelerators on
    two-tier emulated clusters (``cluster_suite.py``)."""
    from ..machinery.netem import NetemSpec, preflight
    from . import cluster_suite

    cases = matrix(quick=quick, emulate=emulate) if suite == "cpu" else cluster_suite.cases(quick=quick)
    for case in cases:  # fail before any work, with the preflight's one-line reason
        if case.network != UNSHAPED:
            preflight(NetemSpec.parse(case.network))
    out = store.prepare(out, overwrite=overwrite)
    store.start(out, "validate", quick=quick, emulate=emulate, suite=suite,
                cases={c.name: {"status": "pending", **c.describe()} for c in cases})
    parts, replays, status = [], [], {}
    cache: dict = {}  # cpu: compute per (workload, ranks); cluster: profile per calibration key
    progress = Progress(len(cases), "validate", unit="cases")
    try:
        for i, case in enumerate(cases, 1):
            echo(f"[{i}/{len(cases)}] {case.name}")
            folder = out / "cases" / case.name
            try:
                if suite == "cpu":
                    rows, replay = run_case(case, folder, out / "compute", cache, echo)
                else:
                    rows, replay = cluster_suite.run_case(case, folder, cache, echo)
                parts.append(rows)
                replays.append(replay)
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
    write_tables(out, parts, replays, echo, TARGETS if suite == "cpu" else cluster_suite.TARGETS)
    failed = [name for name, s in status.items() if s["status"] != "complete"]
    store.finish(out, "failed" if failed else "complete", cases=status, failed_cases=failed)
    if failed:
        echo(f"palsgd: {len(failed)} case(s) failed: {', '.join(failed)} (see {out}/manifest.json)")
    echo(f"wrote {out}/")
    return 1 if failed else 0


def case_experiment(case: Case, cluster: str | None = None) -> Experiment:
    """The experiment of a case: the workload preset on one node of ``case.ranks`` ranks, every
    algorithm, ``case.steps`` steps; on ``cluster`` (a calibrated profile) when given.

    Threads per rank are fixed to the cores divided among the ranks, as the compute calibration runs:
    under emulation each rank is alone in its namespace (LOCAL_WORLD_SIZE = 1) and took every core
    before the launcher learnt otherwise: 2 ranks x 2 threads on 2 cores ran 3-4x slower (measured)."""
    threads = max(1, len(os.sched_getaffinity(0)) // case.ranks)
    return load(workload=case.workload, cluster=cluster, steps=case.steps, algorithms=list(ALGORITHMS),
                overrides=[f"cluster.gpus_per_node={case.ranks}", "cluster.nodes=1",
                           f"train.threads_per_rank={threads}", *STREAMING])


def write_tables(out: Path, parts: list[pd.DataFrame], replays: list[pd.DataFrame], echo,
                 targets: dict = TARGETS) -> None:
    """comparison.csv (+ _summary) from the calibration, comparison_replay.csv (+ _summary) with each
    run's own compute; print both, the first with the targets."""
    for name, frames in (("comparison", parts), ("comparison_replay", replays)):
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COMPARISON_COLUMNS))
        store.write_table(out, f"{name}.csv", table)
        store.write_table(out, f"{name}_summary.csv", summary(table))
        if name == "comparison":
            echo("predicted from the calibration vs measured:")
            echo(format_comparison(table))
            echo(format_targets(table, targets))
        else:
            echo("predicted with each run's own measured compute (communication model only):")
            echo(format_comparison(table).split("\n\n")[-1])


def run_case(case: Case, folder: Path, compute_dir: Path, computed: dict, echo) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibrate, run for real, predict; return the case's comparison rows (from the calibration, and
    replayed with the run's own compute)."""
    from ..machinery.calibrate import calibrate, run_compute
    from ..machinery.launch import run_real
    from ..machinery.netem import EmulatedNetwork, NetemSpec
    from .run import add_prediction

    spec = NetemSpec.parse(case.network) if case.shaped else None
    base = case_experiment(case)
    key = (case.workload, case.ranks)
    if key not in computed:  # compute does not depend on the network: measure once, reuse
        path = compute_dir / f"{case.workload}-{case.ranks}r.json"
        computed[key] = run_compute(base, case.ranks, path, COMPUTE_STEPS, timeout_s=600.0)
    profile = calibrate(base, folder / "profile" / "cluster.toml", nproc_per_node=case.ranks, network=spec,
                        measured_compute=computed[key], command=f"palsgd validate ({case.name})",
                        **CALIBRATION)
    exp = case_experiment(case, str(profile))
    run = folder / "run"
    if spec is None:
        run_real(exp, run, nproc_per_node=case.ranks)
    else:
        with EmulatedNetwork(case.ranks, spec) as net:
            run_real(exp, run, nproc_per_node=case.ranks, network=net)
    rows = add_prediction(exp, run, network=case.network, case=case.name)
    replay = replay_prediction(exp, run, network=case.network, case=case.name)
    rows = explain(rows, replay, compute_drift(exp, run))
    echo(format_comparison(rows))
    echo("compute drift, run vs calibration: " + ", ".join(
        f"{a} {d:+.0f} %" for a, d in rows.groupby("algorithm", sort=False)["compute_drift_pct"].first().items()))
    return rows, replay


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
    from ...core.config import from_dict
    from . import cluster_suite
    from .run import add_prediction

    out = Path(out)
    manifest = store.read_manifest(out)
    cases, cluster = manifest.get("cases", {}), manifest.get("suite") == "cluster"
    parts, replays = [], []
    for name, case in cases.items():
        run = out / "cases" / name / "run"
        if not (run / io.MANIFEST).exists() or store.read_manifest(run).get("status") != "complete":
            continue  # no complete measurement to compare with
        exp = from_dict(store.read_manifest(run)["experiment"])
        waits = ("wait_s",) if case.get("variability") else ()
        rows = add_prediction(exp, run, network=case["network"], case=name, extra_metrics=waits)
        replays.append(replay_prediction(exp, run, network=case["network"], case=name))
        parts.append(explain(rows, replays[-1], compute_drift(exp, run)))
        cases[name] = {**case, "status": "complete"}
        cases[name].pop("error", None)
    io.update_manifest(out, cases=cases, repredicted_at=store.now())
    write_tables(out, parts, replays, echo, cluster_suite.TARGETS if cluster else TARGETS)
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
    from ...core import schema
    from ...sim.engine import simulate
    from ..machinery.compare import compare

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
        predicted.append(simulate(exp.replace(cluster=cluster, algorithms=(spec,))).runs)
    predicted = schema.add_speedup(pd.concat(predicted, ignore_index=True))
    return compare(predicted, real, case=case or exp.workload.name, workload=exp.workload.name,
                   network=network, ranks=exp.workers)


def format_targets(comparison: pd.DataFrame, targets: dict = TARGETS) -> str:
    """One line per target: reached or missed, with the figures (reported, not enforced)."""
    lines = []
    table = summary(comparison).set_index("metric") if len(comparison) else pd.DataFrame()
    for metric, (median_max, max_max) in targets.items():
        if metric not in table.index:
            continue
        r = table.loc[metric]
        ok = r["median_abs_error"] <= median_max and r["max_abs_error"] <= max_max
        lines.append(f"target {metric}: median |error| <= {median_max:g} {r['unit']}, max <= {max_max:g} "
                     f"{r['unit']}: {'met' if ok else 'MISSED'} (median {r['median_abs_error']:.1f}, "
                     f"max {r['max_abs_error']:.1f})")
    return "\n".join(lines)
