"""Result folders for the report tests, written by the project's own writers.

Simulate and sweep folders come from the real simulator (``harness.commands.simulate``). Real-run, validation,
killed and failed folders would take minutes to produce with torchrun, so they are built here from
hand-made step tables, summarized by ``core.schema`` and written through ``harness.machinery.store``, exactly as
``harness/machinery/launch.py`` writes them; the hand-made numbers are simple enough to check by hand.
"""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palsgd.core import config, io, schema
from palsgd.harness.machinery import compare, store

COMPUTE_S = (0.10, 0.11)  # worker 1 is 10% slower: worker 0 waits at every barrier
ALLREDUCE_S, PSEUDO_SYNC_S, OUTER_S, PAYLOAD_BYTES = 0.05, 0.002, 0.004, 4e6


def hand_steps(algorithm: str, *, steps: int = 40, sync_every: int = 10, source: str = "real", run: int = 0,
               scale: float = 1.0) -> pd.DataFrame:
    """Two workers, fixed phase times; PALSGD takes a pseudo-sync step at every step = 2 (mod 5).

    DDP: every step costs max(compute) + all-reduce = 0.11 + 0.05 = 0.16 s (x scale); local algorithms
    sync every ``sync_every`` steps, the faster worker waiting at the barrier first."""
    rows, t = [], np.zeros(2)
    for step in range(steps):
        for w in range(2):
            pseudo = algorithm == "palsgd" and step % 5 == 2
            phase, d = ("pseudo_sync", PSEUDO_SYNC_S) if pseudo else ("compute", COMPUTE_S[w])
            rows.append((w, step, phase, t[w], t[w] + d * scale, 0.0))
            t[w] += d * scale
        if algorithm == "ddp" or (step + 1) % sync_every == 0:
            barrier = t.max()
            for w in range(2):
                if t[w] < barrier:
                    rows.append((w, step, "wait", t[w], barrier, 0.0))
                rows.append((w, step, "allreduce", barrier, barrier + ALLREDUCE_S * scale, PAYLOAD_BYTES))
                if algorithm in ("diloco", "palsgd"):
                    end = barrier + ALLREDUCE_S * scale
                    rows.append((w, step, "outer_step", end, end + OUTER_S * scale, 0.0))
            t[:] = barrier + (ALLREDUCE_S + (OUTER_S if algorithm in ("diloco", "palsgd") else 0)) * scale
    df = pd.DataFrame(rows, columns=["worker", "step", "phase", "start_s", "end_s", "bytes"])
    df.insert(0, "run", run)
    df.insert(0, "algorithm", algorithm)
    df.insert(0, "source", source)
    return df[list(schema.STEP_COLUMNS)]


def hand_metrics(steps: pd.DataFrame, *, floor: float = 1.0, tau: float) -> pd.DataFrame:
    """loss = floor + 4 exp(-step / tau) per worker (+ small noise), eval_loss every 10 steps."""
    ends = steps.groupby(["source", "algorithm", "run", "worker", "step"])["end_s"].max().reset_index()
    rng = np.random.default_rng(0)
    ends["loss"] = floor + 4 * np.exp(-ends["step"] / tau) + rng.normal(0, 0.02, len(ends))
    ends["lr"] = 1e-3
    ends["eval_loss"] = np.where(ends["step"] % 10 == 9, floor + 4 * np.exp(-ends["step"] / tau) + 0.05, np.nan)
    return ends[list(schema.METRIC_COLUMNS)]


def small_experiment(**kw) -> config.Experiment:
    overrides = ["cluster.nodes=2", "algorithm.sync_every=20", "algorithm.warmup_steps=10", "repeats=3",
                 *kw.pop("overrides", [])]
    return config.load(workload="gpt-neo-8m", cluster="a100-4x8-ib100", steps=kw.pop("steps", 120),
                       overrides=overrides, **kw)


def tiny_experiment() -> config.Experiment:
    """What a 2-rank CPU run describes (2 workers, 40 steps, H = 10)."""
    return config.load(workload="gpt-neo-8m", steps=40, algorithms=["ddp", "diloco", "palsgd"],
                       overrides=["cluster.nodes=1", "cluster.gpus_per_node=2", "algorithm.sync_every=10",
                                  "algorithm.warmup_steps=0"])


@pytest.fixture(scope="session")
def sim_folder(tmp_path_factory) -> Path:
    from palsgd.harness.commands.simulate import simulate_to_folder

    out = tmp_path_factory.mktemp("results") / "sim-a100"
    simulate_to_folder(small_experiment(), out=out)
    return out


@pytest.fixture(scope="session")
def sweep_folder(tmp_path_factory) -> Path:
    from palsgd.harness.commands.simulate import sweep_to_folder

    out = tmp_path_factory.mktemp("results") / "sweep-bw"
    # PALSGD with H = 1 syncs every step without DDP's overlap: slower than DDP on a slow network, so the
    # speedup crosses 1 along both keys (bandwidth and H).
    sweep_to_folder(small_experiment(), ["cluster.inter_node.bandwidth_gbps=2,10,50,200",
                                         "algorithm.palsgd.sync_every=1,16"], jobs=1, out=out, overwrite=False)
    return out


def write_run_folder(out: Path, *, with_sim: bool = True, runs_only: bool = False, **manifest_fields) -> Path:
    """A finished ``palsgd run`` folder: real rows (and sim rows 10% slower) in runs.csv, steps, metrics."""
    exp = tiny_experiment()
    real = pd.concat([hand_steps(a) for a in ("ddp", "diloco", "palsgd")], ignore_index=True)
    sim = pd.concat([hand_steps(a, source="sim", scale=1.1) for a in ("ddp", "diloco", "palsgd")],
                    ignore_index=True)
    store.prepare(out)
    store.start(out, "run", exp, **manifest_fields)
    runs = schema.summarize_steps(pd.concat([real, sim]) if with_sim else real)
    store.write_table(out, io.RUNS, runs)
    if runs_only:
        store.finish(out)
        return out
    store.write_table(out, io.STEPS, real)
    metrics = pd.concat([hand_metrics(real[real["algorithm"] == a], tau=t)
                         for a, t in (("ddp", 8.0), ("diloco", 10.0), ("palsgd", 9.0))], ignore_index=True)
    store.write_table(out, io.METRICS, metrics)
    store.finish(out)
    return out


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory) -> Path:
    return write_run_folder(tmp_path_factory.mktemp("results") / "run-2cpu", target_loss=1.6)


@pytest.fixture(scope="session")
def validate_folder(tmp_path_factory) -> Path:
    """comparison.csv from ``harness.machinery.compare`` over two cases (sim = real x 1.1 and x 0.95)."""
    out = tmp_path_factory.mktemp("results") / "validate"
    real = schema.summarize_steps(pd.concat([hand_steps(a) for a in ("ddp", "diloco", "palsgd")]))
    parts = []
    for case, scale in (("lan", 1.1), ("wan-10ms", 0.95)):
        sim = schema.summarize_steps(pd.concat([hand_steps(a, source="sim", scale=scale)
                                                for a in ("ddp", "diloco", "palsgd")]))
        parts.append(compare.compare(sim, real, case=case, workload="gpt-neo-8m", network=case, ranks=2))
    store.prepare(out)
    store.start(out, "validate", tiny_experiment())
    store.write_table(out, "comparison.csv", pd.concat(parts, ignore_index=True))
    store.finish(out)
    return out


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout)


@pytest.fixture
def killed_folder(tmp_path) -> Path:
    """``palsgd run`` killed mid-run: manifest still ``running`` with a dead pid, only per-rank files."""
    out = tmp_path / "killed"
    store.prepare(out)
    store.start(out, "run", tiny_experiment(),
                algorithms={"ddp": {"status": "complete", "last_step": 39},
                            "palsgd": {"status": "pending", "last_step": 23}})
    io.update_manifest(out, pid=dead_pid())
    for algo, steps in (("ddp", 40), ("palsgd", 24)):
        full = hand_steps(algo, steps=steps)
        metrics = hand_metrics(full, tau=9.0)
        for w in (0, 1):
            rank = out / "ranks" / algo
            store.write_table(rank, f"rank{w}.steps.parquet", full[full["worker"] == w])
            store.write_table(rank, f"rank{w}.metrics.csv", metrics[metrics["worker"] == w])
    (out / "ranks" / "palsgd" / "rank1.metrics.csv").write_text("source,algorithm,run,wor")  # cut mid-write
    return out


class ReportHTML(HTMLParser):
    """Tables (class, headers, rows of (text, data-value)), inline SVGs (path count), headlines, links."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[dict] = []
        self.svgs: list[dict] = []
        self.headlines: list[str] = []
        self.links: list[str] = []
        self.text_parts: list[str] = []
        self._cell: list | None = None
        self._in_headline = False
        self._in_svg = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"class": a.get("class", ""), "headers": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = [tag, "", a.get("data-value")]
        elif tag == "svg":
            self.svgs.append({"paths": 0, "texts": 0, "images": 0})
            self._in_svg = True
        elif tag in ("path", "use") and self.svgs:
            self.svgs[-1]["paths"] += 1
        elif tag == "image" and self.svgs:
            self.svgs[-1]["images"] += 1
        elif tag == "p" and "headline" in a.get("class", ""):
            self._in_headline = True
            self.headlines.append("")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            kind, text, value = self._cell
            table = self.tables[-1]
            if kind == "th" and len(table["rows"]) <= 1:
                table["headers"].append(text.strip())
            else:
                table["rows"][-1].append((text.strip(), None if value is None else float(value)))
            self._cell = None
        elif tag == "p":
            self._in_headline = False
        elif tag == "svg":
            self._in_svg = False

    def handle_data(self, data):
        self.text_parts.append(data)
        if self._cell is not None:
            self._cell[1] += data
        if self._in_headline:
            self.headlines[-1] += data
        if self._in_svg and data.strip():
            self.svgs[-1]["texts"] += 1

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def table(self, css: str) -> dict:
        found = [t for t in self.tables if css in t["class"].split()]
        assert found, f"no table of class {css}"
        return found[0]

    def body_rows(self, table: dict) -> list[list[tuple[str, float | None]]]:
        return [r for r in table["rows"] if r]


@pytest.fixture
def build():
    """The folder builders, for tests that need a variant (importlib mode cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(hand_steps=hand_steps, hand_metrics=hand_metrics, write_run_folder=write_run_folder)


@pytest.fixture(scope="session")
def render(tmp_path_factory):
    """render(folder, ...) -> (report path, parsed report); each set of folders is rendered once per session
    (matplotlib's layout makes a render take a second or two)."""
    from palsgd.reports.render import render_report

    cache: dict[tuple, tuple[Path, ReportHTML]] = {}

    def _render(*folders: Path) -> tuple[Path, ReportHTML]:
        if folders not in cache:
            out = render_report(list(folders), tmp_path_factory.mktemp("report") / "report.html")
            cache[folders] = (out, ReportHTML(out.read_text(encoding="utf-8")))
        return cache[folders]
    return _render


@pytest.fixture
def parse():
    def _parse(path: Path) -> ReportHTML:
        return ReportHTML(Path(path).read_text(encoding="utf-8"))
    return _parse
