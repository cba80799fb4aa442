"""`palsgd time-to-target RUN... --loss L --export FILE`: a convergence description from measured runs.

Each run folder gives, per local algorithm, the step where its held-out loss curve first reaches the
target divided by DDP's step in the same run (``targets.step_at_target``). Runs that differ in H, p,
the number of workers or the payload dtype give the points of a grid; an axis that is the same in
every run is left out of the file, so it reads as "assumed not to matter" (``core/convergence.py``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ...core import config, convergence, io
from ...core.convergence import AXES_OF, Convergence, Point
from ...core.errors import ConfigError
from ..machinery import store
from .targets import _curves_from_run, step_at_target


def export(folders: list[Path], target_loss: float) -> tuple[Convergence, list[str]]:
    """The description measured by ``folders`` (each a `palsgd run` folder) and notes on what it left out."""
    measured, ddp_steps, notes = [], [], []
    reference = None
    for folder in folders:
        exp = _run_experiment(folder)
        reference = reference or (folder, exp)
        _check_same_training(reference, folder, exp)
        curves = dict(tuple(_curves_from_run(folder).groupby("algorithm")))
        ddp = step_at_target(curves["ddp"], target_loss) if "ddp" in curves else math.nan
        if not math.isfinite(ddp) or ddp <= 0:
            raise ConfigError(f"DDP does not reach loss {target_loss:g} after its first step (the reference of "
                              "every ratio)", source=str(folder))
        ddp_steps.append((ddp, exp.workers))
        for spec in exp.algorithms:
            if not spec.is_local or spec.name not in curves:
                continue
            if spec.sync_balanced and exp.cluster.variability.slow_workers:
                notes.append(f"{folder}: {spec.name} balances its H per replica (sync_every = \"balanced\"), "
                             "not an axis of a convergence description; left out")
                continue
            steps = step_at_target(curves[spec.name], target_loss)
            if not math.isfinite(steps):
                notes.append(f"{folder}: {spec.name} does not reach {target_loss:g}; left out")
                continue
            coords = {"sync_every": spec.sync_every, "p": spec.p, "fragments": spec.fragments, "workers": exp.workers,
                      "replica_group": exp.group_size(spec), "fragment_sync_delay": spec.fragment_sync_delay,
                      "eager_outer": spec.eager_outer}
            source = (f"{folder}: {spec.name} reached {target_loss:g} at step {steps:.1f}, DDP at {ddp:.1f} "
                      f"({exp.workload.name}, {exp.workers} workers x {exp.workload.batch_per_worker} samples "
                      f"on {exp.cluster.name})")
            measured.append((spec.name, spec.payload_dtype, coords, steps / ddp, source))
    reference = min(w for _, w in ddp_steps)
    ddp_mean = _mean([s for s, w in ddp_steps if w == reference])
    if len({w for _, w in ddp_steps}) > 1:  # DDP's own steps as a function of the workers
        for w in sorted({w for _, w in ddp_steps}):
            found = [s for s, w_ in ddp_steps if w_ == w]
            measured.append(("ddp", "fp32", {"workers": w}, _mean(found) / ddp_mean,
                             f"DDP reached {target_loss:g} at step {_mean(found):.1f} on {w} workers"))
    conv = Convergence(
        target_loss=target_loss, ddp_steps=ddp_mean, ddp_workers=reference,
        source=(f"measured by `palsgd time-to-target --export` from {len(folders)} run(s): "
                f"{', '.join(map(str, folders))}; DDP reached {target_loss:g} at step(s) "
                + ", ".join(f"{s:.1f} ({w} workers)" for s, w in ddp_steps)),
        points=_points(measured))
    return conv, notes


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def export_to_file(folders: list[Path], target_loss: float, path: Path) -> tuple[Convergence, list[str]]:
    conv, notes = export(folders, target_loss)

    io.write_text(path, conv.to_toml())
    convergence.load(path)  # what was written reads back
    return conv, notes


def _run_experiment(folder: Path) -> config.Experiment:
    if not Path(folder).is_dir():
        raise ConfigError("--export needs `palsgd run` folders (their loss curves and configuration)",
                          source=str(folder))
    manifest = store.read_manifest(folder)
    if manifest.get("kind") != "run" or not isinstance(manifest.get("experiment"), dict):
        raise ConfigError(f"is a {manifest.get('kind')} folder; --export needs `palsgd run` folders",
                          source=str(folder))
    return config.from_dict(manifest["experiment"])


def _check_same_training(reference: tuple[Path, config.Experiment], folder: Path, exp: config.Experiment) -> None:
    """Steps to a loss compare only runs of the same model, data and optimizer. The batch may be split
    over another number of workers (batch_per_worker, grad_accum) if the global batch stays the same:
    that is DDP's same training, so a workers axis measured so isolates what the local methods lose."""
    ref_folder, ref = reference
    split = {"batch_per_worker": ref.workload.batch_per_worker, "grad_accum": ref.workload.grad_accum}
    same_model = dataclasses.replace(exp.workload, **split) == ref.workload
    if not same_model or exp.train != ref.train:
        key = "workload" if not same_model else "train"
        raise ConfigError(f"trains another {key} than {ref_folder}; export runs of one workload and "
                          "training setup only", key=key, source=str(folder))
    if exp.workload != ref.workload and exp.samples_per_step != ref.samples_per_step:
        raise ConfigError(f"trains with a global batch of {exp.samples_per_step} samples per step, {ref_folder} "
                          f"with {ref.samples_per_step}; runs that split the batch differently must keep the "
                          "global batch", key="workload.batch_per_worker", source=str(folder))


def _points(measured: list[tuple[str, str, dict, float, str]]) -> tuple[Point, ...]:
    """One point per algorithm, dtype and configuration (repeated runs averaged); only the axes that vary
    among an algorithm's runs are written."""
    points = []
    for name in AXES_OF:
        rows = [m for m in measured if m[0] == name]
        varied = [a for a in AXES_OF[name] if len({m[2].get(a) for m in rows}) > 1]
        groups: dict[tuple, list] = {}
        for _, dtype, coords, ratio, source in rows:
            groups.setdefault((dtype, *(coords[a] for a in varied)), []).append((ratio, source))
        for (dtype, *values), found in groups.items():
            points.append(Point(algorithm=name, payload_dtype=dtype, **dict(zip(varied, values, strict=True)),
                                steps_vs_ddp=sum(r for r, _ in found) / len(found),
                                source="; ".join(s for _, s in found)))
    return tuple(points)


def format_export(conv: Convergence, notes: list[str], path: Path) -> str:
    lines = [f"wrote {path}: steps to loss {conv.target_loss:g} relative to DDP ({conv.ddp_steps:.1f} steps)"]
    for p in conv.points:
        axes = ", ".join(f"{a}={getattr(p, a):g}" for a in p.given_axes())
        lines.append(f"  {p.algorithm:10s} {p.payload_dtype} {axes or 'all configurations'}: "
                     f"{p.steps_vs_ddp:.3f}x DDP's steps")
    unmeasured = sorted({a for p in conv.points for a in AXES_OF[p.algorithm] if a not in p.given_axes()})
    if unmeasured:
        lines.append(f"not varied in these runs, so assumed not to matter: {', '.join(unmeasured)} "
                     "(export runs that differ in them to measure their effect)")
    return "\n".join([*lines, *notes])
