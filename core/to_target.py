"""Which steps to the target each algorithm's speedup to the target rests on: a measured convergence
description when one is given (it always wins), else the published prior (``core.prior``) where its
evidence reaches, else nothing, with the reason."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import convergence, prior
from .config import Experiment

COLUMNS = ("speedup_to_target_vs_ddp", "speedup_to_target_low_vs_ddp", "speedup_to_target_high_vs_ddp",
           "convergence_source", "convergence_note")
"""What each run row gains: the speedup to the target and its band (the prior's; none for a measured
description), where the steps come from, and what they assume or why there are none."""


@dataclass(frozen=True)
class Answer:
    steps_vs_ddp: float | None
    low: float | None
    high: float | None
    source: str | None
    note: str


def answers(exp: Experiment, *, use_prior: bool = True, like: dict[str, str] | None = None,
            described_by: str | None = None) -> dict[str, Answer]:
    """One answer per algorithm of ``exp``. ``like``: {algorithm: algorithm it is assumed to converge like},
    an explicit user choice. ``described_by``: the file or preset the measured description came from."""
    conv = convergence.of_experiment(exp)
    if conv is not None:
        return {a.name: _measured(conv, a, exp, described_by or "workload.convergence") for a in exp.algorithms}
    if not use_prior:
        return {a.name: Answer(None, None, None, None, "no convergence description; the prior is off")
                for a in exp.algorithms}
    found = {a.name: _prior(exp, a, (like or {}).get(a.name)) for a in exp.algorithms}
    if "ddp" in found and not any(a.source for name, a in found.items() if name != "ddp"):
        found["ddp"] = Answer(None, None, None, None, "no other algorithm has steps to the target")
    return found


def _measured(conv, spec, exp: Experiment, source: str) -> Answer:
    found = conv.lookup(spec, exp.workers, exp.group_size(spec))
    return Answer(found.steps_vs_ddp, None, None, source, found.why)


def _prior(exp: Experiment, spec, like: str | None) -> Answer:
    if spec.name == "ddp":
        return Answer(1.0, 1.0, 1.0, prior.NAME, "DDP by definition")
    refused = prior.refusals(spec, exp, like=like)
    est = prior.estimate(exp.workload.params, prior.replicas(exp, spec))
    if est.steps_vs_ddp is None:
        refused.append(est.why)
    if refused:
        return Answer(None, None, None, None, "no published evidence: " + "; ".join(refused))
    assumed = f"assumed by the user to converge like {like}; " if like else ""
    return Answer(est.steps_vs_ddp, est.low, est.high, prior.NAME, assumed + est.why)


def columns(runs: pd.DataFrame, found: dict[str, Answer]) -> pd.DataFrame:
    """``COLUMNS`` for each row of a run table: speedup to the target = same-steps speedup / steps ratio; the
    band's low end divides by the band's high steps ratio."""
    algo = runs["algorithm"]

    def ratio(field: str) -> pd.Series:
        return algo.map(lambda a: _number(getattr(found[a], field)) if a in found else math.nan)

    same = runs["speedup_vs_ddp"]
    return pd.DataFrame({
        "speedup_to_target_vs_ddp": same / ratio("steps_vs_ddp"),
        "speedup_to_target_low_vs_ddp": same / ratio("high"),
        "speedup_to_target_high_vs_ddp": same / ratio("low"),
        "convergence_source": algo.map(lambda a: found[a].source if a in found else None),
        "convergence_note": algo.map(lambda a: found[a].note if a in found else None),
    }, index=runs.index)


def _number(value: float | None) -> float:
    return math.nan if value is None else value


def notes(exp: Experiment, found: dict[str, Answer]) -> list[str]:
    """What the speedups mean: the measured description's notes, or one line per algorithm on the prior."""
    if convergence.of_experiment(exp) is not None:
        return convergence.notes(exp)
    if not any(a.source for name, a in found.items() if name != "ddp"):
        why = "; ".join(f"{name}: {a.note}" for name, a in found.items() if name != "ddp")
        return [convergence.SAME_STEPS_NOTE + (f" ({why})" if why else "")]
    out = [f"to target = to DDP's final loss, steps from the prior {prior.NAME} (DiLoCo scaling laws, arXiv "
           "2503.09799; docs/convergence-prior.md): 'vs DDP' is for the same steps, 'to target' for DDP's "
           "final loss, with the prior's band; " + convergence.TO_TARGET_ASSUMPTION]
    for name, a in found.items():
        if name != "ddp":
            ratio = "no value" if a.steps_vs_ddp is None else \
                f"{a.steps_vs_ddp:.3g}x DDP's steps ({a.low:.3g}-{a.high:.3g})"
            out.append(f"{name}: {ratio}; {a.note}")
    return [*out, _batch_note(exp)]


def _batch_note(exp: Experiment) -> str:
    """The prior's losses are each at the paper's best global batch; say how far this workload's is."""
    wl, n = exp.workload, exp.workload.params
    # M of the local algorithms (a replica group per node gives M = nodes), every worker without them
    m = min((prior.replicas(exp, a) for a in exp.algorithms if a.is_local), default=exp.workers)
    tokens = wl.batch_per_worker * wl.grad_accum * exp.workers * wl.model.seq_len
    return (f"the paper's fitted optimal global batch at N = {n / 1e6:.0f}M: DDP {prior.optimal_batch_tokens(n):,.0f} "
            f"tokens, DiLoCo with M = {m} {prior.optimal_batch_tokens(n, m):,.0f} "
            f"(v2 Tables 10-11); this workload: {tokens:,} tokens per step, assumed to give each algorithm its "
            "tuned loss")
