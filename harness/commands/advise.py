"""`palsgd advise`: the fastest configuration to a target loss on a cluster.

Time to the target = the simulated wall-clock of the steps the configuration needs to reach the
target: DDP's steps (``Convergence.ddp_steps_on``) times the configuration's steps relative to DDP
(``Convergence.steps_to_target``). The search covers algorithm x H x p x fragments x sync delay x eager
outer steps x replica group size x payload dtype, but only where the description was measured: an axis it
measured is searched over its measured values and the powers of two (H, fragments, workers per replica
group) or multiples of 0.05 (p) between them (the sync delay and eager outer steps: the measured values
only), group sizes only where they tile the cluster (``core/groups.py``); an axis it assumes not to matter
keeps the experiment's value (searching it would trust an assumption outside any
measurement). Each candidate is simulated with one seed; the best two and DDP again with
``exp.repeats`` seeds for the 5-95 % band.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...core.algorithms import FACTS, balanced_work_share
from ...core.config import AlgorithmSpec, BudgetSpec, Experiment
from ...core.convergence import Convergence
from ...core.errors import ConfigError
from ...core.groups import check_replica_group
from ...sim import engine
from .simulate import human_s

P_STEP = 0.05
"""The p grid searched between measured values."""


@dataclass(frozen=True)
class Candidate:
    spec: AlgorithmSpec
    steps_vs_ddp: float
    steps: int
    """Steps to the target: the first whole step at or after DDP's steps x steps_vs_ddp."""
    assumption: str


@dataclass(frozen=True)
class Answer:
    candidate: Candidate
    runs: pd.DataFrame
    """The simulated runs of the candidate's steps to the target (one row per seed)."""

    @property
    def time_s(self) -> float:
        return float(self.runs["wall_clock_s"].mean())

    @property
    def band_s(self) -> tuple[float, float]:
        wall = self.runs["wall_clock_s"]
        return float(wall.quantile(0.05)), float(wall.quantile(0.95))


@dataclass(frozen=True)
class Advice:
    exp: Experiment
    conv: Convergence
    ranked: list[Answer]
    """The best configuration first, then the runner-up (when there is one); each with exp.repeats seeds."""
    ddp: Answer
    searched: int
    refused: list[str]
    """Configurations not simulated, and why (outside the measured range, H longer than the run)."""


def advise(exp: Experiment, conv: Convergence) -> Advice:
    candidates, refused = _candidates(exp, conv)
    one_seed = exp.replace(repeats=1)
    timed = []
    for candidate in candidates:
        answer = _simulate(one_seed, candidate)
        if answer is None:
            refused.append(f"{_name(candidate.spec)}: H does not fit in its {candidate.steps} steps to the target")
            continue
        timed.append(answer)
    if not timed:
        raise ConfigError("no configuration lies inside the measured range of the convergence description: "
                          + "; ".join(refused[:3]), key="--convergence")
    timed.sort(key=lambda a: a.time_s)
    ranked = [_simulate(exp, a.candidate) for a in timed[:2]]
    ddp = _simulate(exp, _ddp(exp, conv))
    return Advice(exp, conv, ranked, ddp, searched=len(candidates), refused=refused)


def _ddp(exp: Experiment, conv: Convergence) -> Candidate:
    spec = next((a for a in exp.algorithms if a.name == "ddp"), AlgorithmSpec(name="ddp"))
    found = conv.ddp_steps_on(exp.workers)
    if found.steps_vs_ddp is None:
        raise ConfigError(f"no steps to the target for DDP, the reference: {found.why}", key="--convergence")
    return Candidate(spec, 1.0, _whole_steps(found.steps_vs_ddp), found.why)


def _whole_steps(steps: float) -> int:
    return max(1, math.ceil(steps - 1e-9))


def _candidates(exp: Experiment, conv: Convergence) -> tuple[list[Candidate], list[str]]:
    out, refused = [], []
    for base in exp.algorithms:
        if not base.is_local:
            out.append(_ddp(exp, conv))
            continue
        for dtype in conv.payload_dtypes(base.name):
            measured = conv.measured(base.name, dtype)
            hs = _grid(measured.get("sync_every"), base.sync_every, _powers_of_two)
            ps = _grid(measured.get("p"), base.p, _multiples_of_p_step) if FACTS[base.name].pseudo_syncs \
                else [base.p]
            fs = _grid(measured.get("fragments"), base.fragments, _powers_of_two)
            taus = _grid(measured.get("fragment_sync_delay"), base.fragment_sync_delay, _none_between)
            eager = _grid(measured.get("eager_outer"), base.eager_outer, _none_between)
            own = exp.group_size(base)
            gs = [s for s in _grid(measured.get("replica_group"), own, _powers_of_two) if _tiles(exp, int(s))]
            for h, p, f, tau, e, s in itertools.product(hs, ps, fs, taus, eager, gs):
                try:
                    spec = dataclasses.replace(base, sync_every=int(h), p=float(p), fragments=int(f),
                                               fragment_sync_delay=int(tau), eager_outer=bool(e),
                                               payload_dtype=dtype,
                                               replica_group=base.replica_group if s == own else int(s))
                except ConfigError as err:  # P fragments must divide H, tau at most H/P
                    refused.append(f"{base.name} H={h:g} fragments={f:g} tau={tau:g}: {err}")
                    continue
                found = conv.lookup(spec, exp.workers, int(s))
                if found.steps_vs_ddp is None:
                    refused.append(f"{_name(spec)}: {found.why}")
                    continue
                steps = conv.steps_to_target(spec, exp.workers, int(s)).steps_vs_ddp
                out.append(Candidate(spec, found.steps_vs_ddp, _whole_steps(steps), found.why))
                if exp.cluster.variability.slow_workers and exp.cluster.variability.slow_factor > 1:
                    out.append(_balanced(exp, out[-1]))  # a cluster of mixed speeds: each H balanced too
        if not conv.payload_dtypes(base.name):
            refused.append(f"{base.name}: the convergence description has no point for it")
    return out, refused


def _balanced(exp: Experiment, fixed: Candidate) -> Candidate:
    """The candidate with ``sync_every = "balanced"``. The convergence description holds no balanced run,
    so its steps to the target are assumed to need the fixed H's local steps in all: its slow replicas
    take only ``balanced_work_share`` of them per plan step, so the plan is that much longer."""
    spec = dataclasses.replace(fixed.spec, sync_balanced=True)
    share = balanced_work_share(exp, spec)
    why = (f"{fixed.assumption}; balanced H: as many local steps to the target as the fixed H, so "
           f"{1 / share:.3f}x its steps (its slow replicas take {share:.1%} of them; assumed, not measured)")
    return Candidate(spec, fixed.steps_vs_ddp / share, _whole_steps(fixed.steps / share), why)


def _grid(measured: list[float] | None, own: float, between) -> list[float]:
    """The values searched along one axis: the experiment's own when the axis was not measured."""
    if measured is None:
        return [own]
    lo, hi = measured[0], measured[-1]
    inside = [v for v in (*between(lo, hi), own) if lo <= v <= hi]
    return sorted(set(measured) | set(inside))


def _tiles(exp: Experiment, size: int) -> bool:
    """Whether replica groups of ``size`` workers tile the cluster (``core.groups.check_replica_group``)."""
    try:
        check_replica_group(size, exp.cluster, "algorithm.replica_group")
    except ConfigError:
        return False
    return True


def _none_between(lo: float, hi: float) -> list[float]:
    return []


def _powers_of_two(lo: float, hi: float) -> list[int]:
    return [2 ** k for k in range(0, int(math.log2(hi)) + 1) if lo <= 2 ** k]


def _multiples_of_p_step(lo: float, hi: float) -> list[float]:
    return [round(float(v), 10) for v in np.arange(0.0, 1.0, P_STEP) if lo <= v <= hi]


def _simulate(exp: Experiment, candidate: Candidate) -> Answer | None:
    """The candidate's steps to the target, simulated; None when its H does not fit in them."""
    try:
        run = exp.replace(algorithms=(candidate.spec,), budget=BudgetSpec(steps=candidate.steps))
    except ConfigError:
        return None
    return Answer(candidate, engine.simulate(run, record_steps=False).runs)


def _name(spec: AlgorithmSpec) -> str:
    facts = FACTS[spec.name]
    if not facts.local:
        return f"ddp {spec.payload_dtype}"
    p = f" p={spec.p:g}" if facts.pseudo_syncs else ""
    fragments = f" P={spec.fragments}" if facts.fragments else ""
    if facts.fragments and (spec.fragment_sync_delay or spec.eager_outer):
        fragments += f" tau={spec.fragment_sync_delay}" + (" eager" if spec.eager_outer else "")
    density = f" density={spec.topk_density:g}" if facts.sparse else ""
    group = "" if spec.replica_group == "worker" else f" replica_group={spec.replica_group}"
    balanced = " balanced" if spec.sync_balanced else ""
    return f"{spec.name} H={spec.sync_every}{balanced}{p}{fragments}{density}{group} {spec.payload_dtype}"


def why_it_wins(best: Answer, ddp: Answer) -> str:
    """DDP's time minus the best one's, split into what each step saves and what the extra steps cost."""
    b, d = best.runs.mean(numeric_only=True), ddp.runs.mean(numeric_only=True)
    steps_b, steps_d = best.candidate.steps, ddp.candidate.steps
    comm = ("comm_exposed_s", "wait_s")
    comm_saved_s = steps_d * (_per_step(d, steps_d, *comm) - _per_step(b, steps_b, *comm))
    skipped_s = steps_d * (_per_step(d, steps_d, "compute_s") - _per_step(b, steps_b, "compute_s", "pseudo_sync_s"))
    lost_s = (steps_b - steps_d) * b["wall_clock_s"] / steps_b
    parts = [f"{human_s(comm_saved_s)} less exposed communication and waiting over DDP's {steps_d} steps"]
    if b["pseudo_sync_steps"]:
        parts.append(f"{human_s(skipped_s)} of compute skipped by pseudo-sync steps")
    if steps_b == steps_d:
        parts.append("the same steps as DDP")
    elif lost_s > 0:
        parts.append(f"{human_s(lost_s)} for the {steps_b - steps_d} more steps it needs "
                     f"({best.candidate.steps_vs_ddp:.2f}x DDP's)")
    else:
        parts.append(f"{human_s(-lost_s)} saved by needing {steps_d - steps_b} fewer steps")
    return f"{_name(best.candidate.spec)} vs DDP: " + "; ".join(parts)


def _per_step(run: pd.Series, steps: int, *columns: str) -> float:
    return sum(run[c] for c in columns) / steps


def format_advice(advice: Advice) -> str:
    exp = advice.exp
    seeds = f", {exp.repeats} seeds" if exp.repeats > 1 else ""
    lines = [f"fastest to loss {advice.conv.target_loss:g}: {exp.workload.name} on {exp.cluster.name}, "
             f"{exp.workers} workers{seeds}"]
    labels = ["best", "runner-up"]
    for label, answer in [*zip(labels, advice.ranked, strict=False), ("DDP", advice.ddp)]:
        lines.append(f"  {label:10s} {_answer_line(answer, advice.ddp)}")
    best = advice.ranked[0]
    if best.candidate.spec.name != "ddp":
        lines.append(why_it_wins(best, advice.ddp))
    lines.append(f"searched {advice.searched} configurations inside the measured range; "
                 f"{len(advice.refused)} outside it or not fitting, not simulated")
    lines += [f"assumption: {a}" for a in assumptions(advice)]
    return "\n".join(lines)


def _answer_line(answer: Answer, ddp: Answer) -> str:
    lo, hi = answer.band_s
    return (f"{_name(answer.candidate.spec):28s} {answer.candidate.steps:6d} steps  {human_s(answer.time_s):>9s} "
            f"[{human_s(lo)}-{human_s(hi)}]  {ddp.time_s / answer.time_s:.3f}x DDP")


def assumptions(advice: Advice) -> list[str]:
    conv = advice.conv
    out = [f"to loss {conv.target_loss:g}: {advice.ddp.candidate.assumption} ({conv.source})"]
    out += list(dict.fromkeys(a.candidate.assumption for a in advice.ranked if a.candidate.spec.name != "ddp"))
    return out


def advice_json(advice: Advice) -> dict:
    def row(answer: Answer) -> dict:
        spec = answer.candidate.spec
        lo, hi = answer.band_s
        return {"algorithm": spec.name, "sync_every": spec.sync_every if spec.is_local else None,
                "sync_balanced": spec.sync_balanced if spec.is_local else None,
                "p": spec.p if FACTS[spec.name].pseudo_syncs else None,
                "fragments": spec.fragments if FACTS[spec.name].fragments else None,
                "fragment_sync_delay": spec.fragment_sync_delay if FACTS[spec.name].fragments else None,
                "eager_outer": spec.eager_outer if FACTS[spec.name].fragments else None,
                "topk_density": spec.topk_density if FACTS[spec.name].sparse else None,
                "replica_group": advice.exp.group_size(spec) if spec.is_local else None,
                "payload_dtype": spec.payload_dtype,
                "steps_to_target": answer.candidate.steps, "steps_vs_ddp": answer.candidate.steps_vs_ddp,
                "time_to_target_s": answer.time_s, "time_to_target_5_95_s": [lo, hi],
                "speedup_to_target_vs_ddp": advice.ddp.time_s / answer.time_s}

    best = advice.ranked[0]
    return {"target_loss": advice.conv.target_loss, "workers": advice.exp.workers,
            "best": row(best), "runner_up": row(advice.ranked[1]) if len(advice.ranked) > 1 else None,
            "ddp": row(advice.ddp),
            "why": why_it_wins(best, advice.ddp) if best.candidate.spec.name != "ddp" else None,
            "searched": advice.searched, "refused": advice.refused, "assumptions": assumptions(advice)}
