"""``palsgd report``: result folders -> one self-contained HTML file (figures inline, no network).

Reads result files only (``load.load_folder``): never runs the simulator or torch. Each panel appears only
when its data exists, so a sweep, a half-finished real run and a validation can share one report. The
Chrome/Perfetto trace of each folder with a step table is written beside the report and linked from it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from .. import __version__
from ..core import io, schema
from ..core.errors import ConfigError
from . import assumptions, explore, figures, tables, timeline
from .load import ResultFolder, load_folder
from .style import LABELS, PALETTE


@dataclass
class Panel:
    title: str
    caption: str
    svg: Markup | None = None
    tables: list[tables.Table] = field(default_factory=list)


@dataclass
class Section:
    folder: ResultFolder
    anchor: str
    headlines: list[str] = field(default_factory=list)
    answer: tables.Table | None = None
    panels: list[Panel] = field(default_factory=list)
    assumptions: list[tables.Table] = field(default_factory=list)
    trace: str | None = None
    explore: str | None = None


def render_report(folders: list[Path], output: Path) -> Path:
    """Write the report of ``folders`` to ``output`` (atomically) and return its path."""
    if not folders:
        raise ConfigError("name at least one results folder", key="RESULTS", source="command line")
    output = Path(output)
    if output.is_dir():
        raise ConfigError("is a folder; give the report's file name, e.g. report.html", key="-o",
                          value=str(output), source="command line")
    loaded = [load_folder(f) for f in folders]
    sections = [build_section(f, _anchor(f, i)) for i, f in enumerate(loaded)]
    for section in sections:
        section.trace = write_trace(section.folder, output, section.anchor)
        section.explore = write_explore(section.folder, output, section.anchor)
    html = _template().render(
        sections=sections, generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        version=__version__, palette=PALETTE, labels=LABELS)
    return io.write_text(output, html)


def _anchor(folder: ResultFolder, index: int) -> str:
    return f"r{index}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name).strip("-")[:40]


def build_section(folder: ResultFolder, anchor: str) -> Section:
    s = Section(folder, anchor)
    runs = folder.table(io.RUNS)
    builders = [("summary", lambda: _runs_panels(s, runs)),
                ("sensitivity", lambda: _sensitivity_panels(s, folder)),
                ("sweep", lambda: _sweep_panels(s, folder)), ("timeline", lambda: _timeline_panels(s, folder)),
                ("predicted vs measured", lambda: _validation_panels(s, folder, runs)),
                ("loss", lambda: _loss_panels(s, folder))]
    for name, build in builders:
        try:
            build()
        except Exception as err:  # a damaged or partial table must not cost the reader the whole report
            folder.notes.append(f"the {name} panel could not be drawn ({type(err).__name__}: {err})")
    for name, df in folder.other_tables.items():
        s.panels.append(Panel(name, f"{name}, as written (first 30 rows).", tables=[_plain_table(df)]))
    s.assumptions = assumptions.assumption_tables(folder.manifest)
    return s


def _svg(svg: str | None) -> Markup | None:
    return Markup(svg) if svg else None


def _runs_panels(s: Section, runs: pd.DataFrame | None) -> None:
    if runs is None:
        return
    line = tables.headline(runs, s.folder.experiment, s.folder.partial)
    if line:
        s.headlines.append(line)
    s.answer = tables.summary_table(runs, s.folder.partial)
    s.panels.append(Panel(
        "Where the time goes", "Time per worker (mean over workers and runs) by category, from runs.csv "
        "(compute = data + forward/backward + optimizer; exposed communication = blocking all-reduce; "
        "waiting = idle at a barrier for the slowest worker)." + (" Partial: only the steps that ran before the "
        "run stopped." if s.folder.partial else ""), _svg(figures.breakdown(runs, s.folder.partial))))


def _sensitivity_panels(s: Section, folder: ResultFolder) -> None:
    table, crossovers = folder.table(io.SENSITIVITY), folder.table(io.SENSITIVITY_CROSSOVERS)
    if table is None:
        return
    s.panels.append(Panel(
        "Sensitivity around this point", f"Speedup vs DDP from {io.SENSITIVITY}: one field varied at a time "
        "around the experiment (star and grey line), the others held; each point the whole run with that change "
        "(the experiment's steps and seeds), as `palsgd simulate` prints it. Diamonds and dotted lines = "
        "crossovers of DDP; the second row, when present, is the speedup to the target loss of the convergence "
        "description.",
        _svg(figures.sensitivity(table, crossovers)),
        tables=[tables.crossover_table(crossovers)] if crossovers is not None and len(crossovers) else []))


def _sweep_panels(s: Section, folder: ResultFolder) -> None:
    sweep, crossovers = folder.table("sweep.csv"), folder.table("crossovers.csv")
    if sweep is None:
        return
    keys = figures.sweep_keys(sweep)
    line = tables.sweep_headline(sweep, keys, crossovers)
    if line:
        s.headlines.append(line)
    for key in keys:
        if sweep[key].nunique() > 1:
            s.panels.append(Panel(
                f"Speedup vs {key}", "Speedup vs DDP from sweep.csv: mean over Monte-Carlo seeds, band = 5th–95th "
                "percentile; dashed line = DDP; diamonds and dotted lines = crossovers.csv.",
                _svg(figures.sweep_speedup(sweep, key, crossovers))))
    if crossovers is not None:
        s.panels.append(Panel("Crossovers", "From crossovers.csv.", tables=[tables.crossover_table(crossovers)]))


def _timeline_panels(s: Section, folder: ResultFolder) -> None:
    steps, origin = folder.table(io.STEPS), "steps.parquet"
    if steps is None:  # a large simulation keeps only its first sync intervals
        steps, origin = folder.table(io.TIMELINE), f"{io.TIMELINE} (the first steps, simulated with every row kept)"
    if steps is None:
        return
    balanced = tables.balanced_workers_table(steps, s.folder.experiment)
    if balanced is not None:
        s.panels.append(Panel("Balanced H per worker", f"From {origin}.", tables=[balanced]))
    for source in sorted(steps["source"].unique()):
        svg = timeline.timeline(steps, source)
        if svg:
            s.panels.append(Panel(
                f"Timeline ({source})", f"Per-worker phases of a few sync intervals (first run), from {origin}; "
                "neighbouring steps of the same kind are drawn as one bar, and bars other than compute at least "
                "0.3% of the window wide so a short outer step still shows. The full trace (link below) opens "
                "in ui.perfetto.dev or chrome://tracing.", _svg(svg)))


def _validation_panels(s: Section, folder: ResultFolder, runs: pd.DataFrame | None) -> None:
    comparison, origin = folder.table("comparison.csv"), "comparison.csv"
    if comparison is None:
        comparison, origin = tables.comparison_from_runs(runs, folder.name, folder.experiment), "runs.csv"
    if comparison is None:
        return
    comparison = comparison.dropna(subset=["predicted", "measured"])
    if not len(comparison):
        return
    s.headlines.append(tables.validation_headline(comparison))
    s.panels.append(Panel(
        "Predicted vs measured", f"From {origin}: each point is one case, algorithm and metric; the line is "
        "predicted = measured; labels give (predicted − measured) / measured.",
        _svg(figures.predicted_vs_measured(comparison)),
        [tables.error_summary(comparison), tables.comparison_table(comparison)]))


def _loss_panels(s: Section, folder: ResultFolder) -> None:
    curves = figures.loss_table(folder.table(io.METRICS))
    if curves is None:
        return
    targets, origin = folder.table("targets.csv"), "targets.csv"
    target = _manifest_target(folder.manifest)
    if targets is None and target is not None:
        targets, origin = tables.time_to_target(curves, target), f"target loss {target:g} from the manifest"
        targets["cluster"] = folder.experiment.get("cluster", {}).get("name", "")
        runs = folder.table(io.RUNS)
        if runs is not None:  # the same-budget speedup, beside the time-to-target one; none from partial runs
            finished = runs if "ddp" not in folder.partial else runs.iloc[:0]
            finished = finished[~finished["algorithm"].isin(list(folder.partial))]
            same = finished.groupby(["source", "algorithm"])["speedup_vs_ddp"].mean()
            targets["speedup_same_budget"] = [same.get((s_, a), float("nan"))
                                              for s_, a in zip(targets["source"], targets["algorithm"], strict=True)]
    notes = [tables.targets_table(targets)] if targets is not None else []
    s.panels.append(Panel(
        "Loss", "Training loss from metrics.csv (mean over workers, rolling mean over ~1/40 of the steps; "
        "markers: evaluation loss)" + (f"; dashed: target loss, dotted: time to target ({origin})" if notes else "")
        + ".", _svg(figures.loss_curves(folder.table(io.METRICS), targets)), notes))


def _manifest_target(manifest: dict) -> float | None:
    exp = manifest.get("experiment") if isinstance(manifest.get("experiment"), dict) else {}
    for value in (manifest.get("target_loss"), exp.get("target_loss"), (exp.get("budget") or {}).get("target_loss")):
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _plain_table(df: pd.DataFrame, most: int = 30) -> tables.Table:
    def cell(v) -> tables.Cell:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return tables.num(v, f"{v:.4g}" if isinstance(v, float) else str(v))
        return tables.Cell(str(v))

    rows = [[cell(v) for v in row] for row in df.head(most).itertuples(index=False)]
    notes = [f"first {most} of {len(df)} rows"] if len(df) > most else []
    return tables.Table([str(c) for c in df.columns], rows, notes=notes)


def write_trace(folder: ResultFolder, output: Path, anchor: str) -> str | None:
    """Put the folder's Chrome/Perfetto trace beside the report; return its name for the link."""
    name = f"{output.stem}.{anchor}.trace.json"
    target = output.parent / name
    existing = folder.path / io.TRACE
    if existing.is_file():
        io.atomic_write(target, lambda p: shutil.copyfile(existing, p))
        return name
    steps = folder.table(io.STEPS)
    if steps is None:
        return None
    io.write_text(target, json.dumps(schema.to_chrome_trace(schema.trace_window(steps)), separators=(",", ":")))
    return name


def write_explore(folder: ResultFolder, output: Path, anchor: str) -> str | None:
    """A sweep of two or more varied fields also gets the what-if page (sliders) beside the report; it
    carries a script, which this page does not, so it is its own file. Returns its name for the link."""
    sweep = folder.table("sweep.csv")
    keys = explore.sweep_keys_varied(sweep) if sweep is not None else []
    if len(keys) < 2:
        return None
    name = f"{output.stem}.{anchor}.explore.html"
    explore.render_explore(sweep, keys, output.parent / name, title=folder.name,
                           notes=["From sweep.csv; the mean over Monte-Carlo seeds where there are several."])
    return name


def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2")
