"""The cluster suite of ``palsgd validate --suite cluster``: the simulator's claims at cluster shape.

The CPU-model suite (``validate_cpu.py``) trains tiny models on shared cores, where the forward and backward
compete with gloo's threads, which never happens beside a GPU. Here this machine stands in for a small
GPU cluster: emulated accelerators (``train.compute = "emulated"``, ``real/emulated_compute.py``: the real
model's shapes, DDP buckets, syncs and outer steps, but compute that sleeps its modelled time) on a
two-tier emulated network (``--emulate-network nodes=K,...``: the ranks of a node share a namespace, nodes
are joined by shaped links). It checks what the simulator claims for real clusters: two tiers, 8 workers,
and jitter, slow workers and stragglers meeting each algorithm's barriers.

Each case changes one thing from a base case (2 nodes x 4 ranks, 1 Gbit/s and 5 ms between nodes, the
GPT-Neo-8M payload, H = 4, no variability). Its cluster profile is a fresh two-tier calibration of the
links (``machinery/calibrate.py``: fitted per tier), with the device times c, o, u and m that the emulated
accelerators sleep and the case's variability. The simulator runs ``SEEDS`` seeds; every metric is compared
with the run of the real run's seed, which drew the real run's plan and compute factors
(``pipeline.paired_metrics``), and the mean over the seeds is what ``palsgd simulate`` would print.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ...core.algorithms import ALGORITHMS
from ...core.config import Experiment, load
from ..machinery import calibrate
from ..machinery.pipeline import Launch
from .validate_cpu import STREAMING

COMPUTE_S = 0.2
"""c of the emulated accelerators: a GPT-Neo-8M step of 64 x 300 tokens on an A100 at ~25% MFU."""
OPTIMIZER_S = 0.01
"""o: about ten passes over 32 MB at a GPU's memory bandwidth, rounded up to what a sleep resolves."""
SEEDS = 5
TARGETS = {"step_time_mean_s": (3.0, 8.0), "speedup_vs_ddp": (3.0, 8.0, "relative"), "wait_s": (15.0, 15.0)}
"""metric -> (median, maximum) of |error| aimed at (%; the speedup's relative error |predicted / measured - 1|,
since at 2-14x speedups a pp figure grows with the speedup); waits are compared in the cases with
variability only."""
NO_VARIABILITY = {"jitter_cv": 0.0, "slow_workers": 0, "slow_factor": 1.0, "straggler_prob": 0.0,
                  "straggler_factor": 1.0}
"""Only the case's variability: the spread the calibration measured on emulated compute is the sleep's."""
EAGER_DELAY = ("algorithm.streaming_diloco.fragments=1", "algorithm.streaming_diloco.fragment_sync_delay=8",
               "algorithm.streaming_diloco.eager_outer=true")
"""The eager-delay case's Streaming DiLoCo: DiLoCo whose outer all-reduce overlaps the next round (H = 8)."""
THREADS_PER_RANK = 1  # emulated compute leaves the cores to communication and the host's own work


@dataclass(frozen=True)
class ClusterCase:
    label: str
    workload: str = "gpt-neo-8m"
    nodes: int = 2
    ranks_per_node: int = 4
    link: str = "rate=1gbit,delay=5ms"
    """Between nodes: a NetemSpec rate and delay."""
    sync_every: int = 4
    steps: int = 24
    variability: tuple[tuple[str, float], ...] = ()
    """``cluster.variability`` fields of the case."""
    algorithms: tuple[str, ...] = tuple(a for a in ALGORITHMS if a != "sparseloco")
    """Every algorithm but SparseLoCo, which has a case of its own (``sparseloco-2x4-100mbit``)."""
    replica_group: str = "worker"
    """``algorithm.replica_group`` of the local algorithms (``core/groups.py``)."""
    balanced: bool = False
    """``algorithm.sync_every = "balanced"``: each replica's H scaled by its known speed."""
    streaming: tuple[str, ...] = STREAMING
    """Streaming DiLoCo's overrides (P, tau, eager_outer)."""

    @property
    def name(self) -> str:
        return self.label

    @property
    def ranks(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def network(self) -> str:
        return f"nodes={self.nodes},{self.link}"

    @property
    def varies(self) -> bool:
        return bool(self.variability)

    @property
    def calibration_key(self) -> tuple:
        """Cases that share a calibration: same workload, layout and link."""
        return (self.workload, self.nodes, self.ranks_per_node, self.link)

    def describe(self) -> dict:
        return {"workload": self.workload, "ranks": self.ranks, "network": self.network, "steps": self.steps,
                "sync_every": self.sync_every, "variability": dict(self.variability),
                "replica_group": self.replica_group, "balanced": self.balanced}


BASE = ClusterCase("base-2x4-1gbit")


def cases(*, quick: bool, emulate: bool = True) -> list[ClusterCase]:
    """One case per effect, each a change of the base case; ``quick``: one small case for CI. The suite
    always emulates its network (``emulate`` is the CPU suite's choice)."""
    if quick:
        return [ClusterCase("quick-2x2-1gbit", nodes=2, ranks_per_node=2, steps=12, algorithms=("ddp", "diloco"))]
    r = dataclasses.replace
    return [
        BASE,
        r(BASE, label="layout-4x2", nodes=4, ranks_per_node=2),
        r(BASE, label="link-100mbit-10ms", link="rate=100mbit,delay=10ms", steps=12),
        r(BASE, label="payload-100MB", workload="resnet50-imagenet", steps=16),
        r(BASE, label="jitter-0.1", variability=(("jitter_cv", 0.1),)),
        r(BASE, label="jitter-0.3", variability=(("jitter_cv", 0.3),)),
        r(BASE, label="slow-worker-1.5x", variability=(("slow_workers", 1), ("slow_factor", 1.5))),
        r(BASE, label="stragglers-0.05x3", variability=(("straggler_prob", 0.05), ("straggler_factor", 3.0))),
        r(BASE, label="sync-every-16", sync_every=16, steps=32),
        r(BASE, label="groups-node", replica_group="node"),
        # Its sync is one all-gather of sparse messages: on the slow link where DiLoCo's all-reduce shows.
        r(BASE, label="sparseloco-2x4-100mbit", link="rate=100mbit,delay=10ms", steps=12,
          algorithms=("ddp", "diloco", "sparseloco")),
        # slow-worker-1.5x with the slow worker's H scaled down (4 -> 2): the others stop waiting for it.
        r(BASE, label="balanced-slow-1.5x", variability=(("slow_workers", 1), ("slow_factor", 1.5)), balanced=True),
        # A whole round of delay with eager outer steps (P = 1, tau = H) beside DiLoCo (tau = 0): H = 8
        # so that the all-reduce fits inside a round on the 1 Gbit/s link.
        r(BASE, label="eager-delay-2x4-1gbit", sync_every=8, steps=32, algorithms=("ddp", "diloco", "streaming_diloco"),
          streaming=EAGER_DELAY),
    ]


def case_experiment(case: ClusterCase, cluster: str | None = None) -> Experiment:
    """The case's experiment: emulated compute of c and o, its variability, on ``cluster`` (a profile)."""
    overrides = [f"cluster.nodes={case.nodes}", f"cluster.gpus_per_node={case.ranks_per_node}",
                 'train.compute="emulated"', f"train.threads_per_rank={THREADS_PER_RANK}",
                 f"algorithm.sync_every={case.sync_every}", "algorithm.warmup_steps=0",
                 *(['algorithm.sync_every="balanced"'] if case.balanced else []),  # keeps the H above
                 f'algorithm.replica_group="{case.replica_group}"',
                 f"cluster.compute.step_time_s={COMPUTE_S}", f"cluster.compute.optimizer_time_s={OPTIMIZER_S}",
                 # u and m from memory passes at the cluster's memory bandwidth (core/compute.py)
                 "cluster.compute.outer_step_time_s=0", "cluster.compute.pseudo_sync_time_s=0",
                 "cluster.compute.data_time_s=0", "workload.data_time_s=0", "train.eval_batches=1",
                 *(f"cluster.variability.{k}={v}" for k, v in {**NO_VARIABILITY, **dict(case.variability)}.items()),
                 *(case.streaming if "streaming_diloco" in case.algorithms else ())]
    exp = load(workload=case.workload, cluster=cluster, steps=case.steps, algorithms=list(case.algorithms),
               overrides=overrides)
    return exp.replace(repeats=SEEDS)


def calibration_sizes(exp: Experiment) -> dict:
    """Message sizes from 4 KiB to twice the payload: the DDP buckets and a sync's flat buffer."""
    payload = 4 * exp.workload.params
    return {"min_bytes": 4096, "max_bytes": 1 << (2 * payload - 1).bit_length(), "reps": 3, "per_octave": 1.0}


def prepare(case: ClusterCase, folder: Path, out: Path, profiles: dict, time_dilation: float = 1.0
            ) -> tuple[Experiment, Launch, Path]:
    """Calibrate the case's links (once per calibration key); the case's experiment, its launch (``case.nodes``
    emulated nodes of ``case.ranks_per_node`` ranks) and the profile, which the pipeline moves the experiment
    onto. Calibration and run are both ``time_dilation`` times slower, their times divided by it
    (``dilation.py``)."""
    launch = Launch(case.ranks_per_node, case.nodes, network=case.network, time_dilation=time_dilation)
    if case.calibration_key not in profiles:
        base = case_experiment(dataclasses.replace(case, variability=()))
        profiles[case.calibration_key] = calibrate.calibrate(
            base, folder / "profile" / "cluster.toml", nproc_per_node=case.ranks, network=launch.netem_spec,
            command=f"palsgd validate --suite cluster ({case.name})", compute=False, time_dilation=time_dilation,
            **calibration_sizes(base))
    return case_experiment(case), launch, Path(profiles[case.calibration_key])
