"""Experiment: one typed, frozen, validated description read by the simulator and the real harness.

An experiment is built from layers, each overriding the one before:

1. the defaults of the dataclasses below;
2. the workload preset (``workload = "gpt-neo-8m"`` or ``--workload``): a partial experiment file
   with ``[workload]``, ``[train]``, ``[algorithm]`` and ``[budget]`` tables;
3. the cluster preset (``cluster = "..."`` or ``--cluster``): a file with a ``[cluster]`` table;
4. the experiment file itself;
5. command-line options and ``--set key.path=value`` overrides.

The ``[algorithm]`` table holds parameters shared by every algorithm; ``[algorithm.<name>]`` holds
those of one algorithm only. Every error names the file (or ``--set``), the key, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import presets
from .algorithms import ALGORITHMS, DEFAULT_ALGORITHMS, FACTS, SKIP_DRAWS, SKIPPED_BATCHES
from .buckets import PAYLOAD_ELEM_BYTES
from .cluster import ClusterSpec, figures
from .errors import ConfigError, check
from .groups import REPLICA_GROUP_NAMES, check_replica_group, group_size
from .sparse import DEFAULT_PAYLOAD as SPARSE_DEFAULT_PAYLOAD
from .sparse import SPARSE_VALUE_BITS
from .typed import build, merge, set_path, to_dict
from .workload import OPTIMIZER_STATE_TENSORS, TrainSpec, WorkloadSpec

PAYLOAD_BYTES = PAYLOAD_ELEM_BYTES  # bytes per element of each payload dtype (core/buckets.py)
TORCH_DEFAULT_BUCKET_MIB = 25.0  # torch.nn.parallel.distributed._DEFAULT_BUCKET_CAP_MB
TORCH_FIRST_BUCKET_MIB = 1.0  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES, in MiB


BALANCED = "balanced"
"""The value of ``algorithm.sync_every`` that asks for a sync period per replica (``sync_balanced``)."""

SEED_MAX = 2**63 - 1
"""Run r of a Monte-Carlo experiment uses seed + r; each one fits a signed 64-bit integer (tables, torch)."""
SEED_RULE = "must be an integer with 0 <= seed and seed + repeats - 1 < 2**63 (run r uses seed + r)"


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm and its parameters; names as in ``docs/algorithms.md``."""

    name: Literal["ddp", "local_sgd", "diloco", "palsgd", "streaming_diloco", "sparseloco"] = "ddp"
    sync_every: int = 100
    """H: local steps between two syncs. Given as ``"balanced"`` it sets ``sync_balanced`` and keeps the H
    of the layer below (preset, experiment file, default)."""
    sync_balanced: bool = False
    """Each replica's H scaled by its known speed (``cluster.variability.slow_workers``): the fastest take
    H local steps between syncs, a slower one fewer (``core.algorithms.balanced_steps``)."""
    warmup_steps: int = 0
    """W: DDP steps before local training starts (Post-local SGD)."""
    outer_lr: float = 0.7
    """DiLoCo / PALSGD outer learning rate."""
    outer_momentum: float = 0.9
    """DiLoCo / PALSGD outer Nesterov momentum."""
    p: float = 0.2
    """PALSGD: probability that a local step is a pseudo-synchronization step."""
    eta: float = 0.5
    """PALSGD: pseudo-synchronization strength."""
    skip_draws: Literal["shared", "independent"] = "shared"
    """PALSGD: all workers draw the same pseudo-sync steps (released code) or each its own."""
    skipped_batches: Literal["consumed", "kept"] = "consumed"
    """PALSGD: a pseudo-sync step throws its batch away (released code) or leaves it to the next step."""
    fragments: int = 1
    """Streaming DiLoCo: P, the fragments synced in turn, one every H/P steps (torchft model_fragments)."""
    fragment_sync_delay: int = 0
    """Streaming DiLoCo: tau, inner steps a fragment's all-reduce overlaps before it is applied."""
    fragment_update_alpha: float = 0.0
    """Streaming DiLoCo: weight of the local fragment when mixed with the synced one (0: take the synced)."""
    eager_outer: bool = False
    """Streaming DiLoCo: a fragment's outer step takes the worker's own fresh pseudo-gradient share at once
    and the others' from the all-reduce (Kale et al., arXiv 2502.12996; ``docs/algorithms.md``)."""
    payload_dtype: Literal["fp32", "bf16", "fp16", "int8", "fp4", "int2"] = "fp32"
    """Element type of what a sync sends; int8 and fp4 are quantized with fp32 accumulation, and DDP
    steps then send fp32 gradients (``core.buckets.QUANTIZED``). SparseLoCo: its values' type, one of
    ``core.sparse.SPARSE_VALUE_BITS`` (``int2`` unless given; int2 is SparseLoCo's alone)."""
    topk_density: float = 0.02
    """SparseLoCo: share of each tensor's entries sent at a sync, in (0, 1] (arXiv 2508.15706: 1-3 %)."""
    error_decay: float = 0.9
    """SparseLoCo: beta of the error-feedback buffer e <- beta·e + delta, in [0, 1] (our default: the
    outer momentum's, which the buffer replaces; not a value taken from the paper)."""
    bucket_mib: float = 25.0
    """DDP gradient bucket size in MiB, as PyTorch's ``bucket_cap_mb`` counts it (bytes = bucket_mib x 2**20)."""
    per_tensor_allreduce: bool = False
    """Sync one tensor at a time, as the paper's released GPT code does, instead of a few flat buffers."""
    warmup_syncs_optimizer_state: bool = False
    """Warm-up steps also all-reduce the optimizer state, as the paper's released code does."""
    averager: Literal["pytorch", "torchft"] = "pytorch"
    """Local SGD's schedule (``core.algorithms.AVERAGERS``): ``pytorch``, PostLocalSGDOptimizer's
    PeriodicModelAverager, averages right after the first local step and then every H; ``torchft``,
    torchft's LocalSGD, takes H local steps before every average, one average fewer in a run whose local
    steps are a multiple of H. The default is PyTorch's, the Local SGD that ships with torch."""
    replica_group: Literal["worker", "node"] | int = "worker"
    """Workers per replica (``core/groups.py``): ``worker`` (every worker is a replica), ``node`` (a node
    trains as DDP and the nodes run the local method) or a number of workers."""

    def __post_init__(self):
        check(self.name in ALGORITHMS, "name", self.name, f"must be one of {', '.join(ALGORITHMS)}")
        check(self.sync_every >= 1, "sync_every", self.sync_every, "must be >= 1 (H)")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0 (W)")
        check(self.outer_lr > 0, "outer_lr", self.outer_lr, "must be > 0")
        check(0 <= self.outer_momentum < 1, "outer_momentum", self.outer_momentum, "must be in [0, 1)")
        check(0 <= self.p < 1, "p", self.p, "must be in [0, 1)")
        check(self.eta >= 0, "eta", self.eta, "must be >= 0")
        check(self.skip_draws in SKIP_DRAWS, "skip_draws", self.skip_draws, f"must be one of {SKIP_DRAWS}")
        check(self.skipped_batches in SKIPPED_BATCHES, "skipped_batches", self.skipped_batches,
              f"must be one of {SKIPPED_BATCHES}")
        check(self.bucket_mib > 0, "bucket_mib", self.bucket_mib, "must be > 0")
        check(self.replica_group in REPLICA_GROUP_NAMES
              or (isinstance(self.replica_group, int) and self.replica_group >= 1), "replica_group",
              self.replica_group, 'must be "worker", "node" or a number of workers >= 1')
        self._check_fragments()
        self._check_sparse()

    def _check_sparse(self) -> None:
        """SparseLoCo's settings; ``int2`` values exist only in its sparse payload."""
        if not FACTS[self.name].sparse:
            check(self.payload_dtype != "int2", "payload_dtype", self.payload_dtype,
                  f"int2 is SparseLoCo's alone; {self.name} takes one of {', '.join(PAYLOAD_BYTES)}")
            return
        check(0 < self.topk_density <= 1, "topk_density", self.topk_density, "must be in (0, 1]")
        check(0 <= self.error_decay <= 1, "error_decay", self.error_decay, "must be in [0, 1]")
        check(self.payload_dtype in SPARSE_VALUE_BITS, "payload_dtype", self.payload_dtype,
              f"sparseloco sends values as one of {', '.join(SPARSE_VALUE_BITS)}")

    def _check_fragments(self) -> None:
        """torchft's rules: H/P steps between fragment syncs, a whole number, and each fragment's
        all-reduce applied before the next one starts."""
        if not FACTS[self.name].fragments:
            return
        check(self.fragments >= 1, "fragments", self.fragments, "must be >= 1 (P)")
        check(self.sync_every % self.fragments == 0, "fragments", self.fragments,
              f"must divide sync_every ({self.sync_every})")
        # tau = H/P: the all-reduce overlaps a whole round (DiLoCoX's one-step delay when P = 1).
        check(0 <= self.fragment_sync_delay <= self.sync_every // self.fragments, "fragment_sync_delay",
              self.fragment_sync_delay, f"must be in [0, sync_every / fragments = {self.sync_every // self.fragments}]")
        check(0 <= self.fragment_update_alpha <= 1, "fragment_update_alpha", self.fragment_update_alpha,
              "must be in [0, 1]")

    @property
    def torch_bucket_cap_mb(self) -> float | None:
        """What the real harness passes as DDP's ``bucket_cap_mb``: nothing when it is PyTorch's default."""
        return None if self.bucket_mib == TORCH_DEFAULT_BUCKET_MIB else self.bucket_mib

    @property
    def first_bucket_mib(self) -> float:
        """DDP's first bucket (the last layers' gradients, ready first), MiB. PyTorch caps it at 1 MiB so
        communication starts early, but (torch 2.13) only when ``bucket_cap_mb`` is left at its default;
        given explicitly, the first bucket is capped like the others. Both sides follow that rule."""
        return TORCH_FIRST_BUCKET_MIB if self.torch_bucket_cap_mb is None else self.bucket_mib

    @property
    def is_local(self) -> bool:
        return FACTS[self.name].local

    @property
    def dense_payload_dtype(self) -> str:
        """The dtype of the dense collectives (DDP's gradient buckets, all-reduces): SparseLoCo's
        ``payload_dtype`` types its sparse values only, its dense calls stay fp32."""
        return "fp32" if FACTS[self.name].sparse else self.payload_dtype

    @property
    def payload_bytes_per_param(self) -> float:
        """Bytes per element of a dense payload (SparseLoCo: of one transmitted value)."""
        if FACTS[self.name].sparse:
            return SPARSE_VALUE_BITS[self.payload_dtype] / 8
        return PAYLOAD_BYTES[self.payload_dtype]

    @property
    def effective_p(self) -> float:
        """p as the algorithm uses it: only PALSGD takes pseudo-sync steps."""
        return self.p if FACTS[self.name].pseudo_syncs else 0.0


@dataclass(frozen=True)
class BudgetSpec:
    """How long a run is: a number of steps, or a number of epochs of ``workload.dataset_samples``."""

    steps: int = 0
    epochs: float = 0.0

    def __post_init__(self):
        check(self.steps >= 0, "steps", self.steps, "must be >= 0")
        check(self.epochs >= 0, "epochs", self.epochs, "must be >= 0")
        check((self.steps > 0) != (self.epochs > 0), "steps", self.steps,
              "give exactly one of budget.steps and budget.epochs (> 0)")


@dataclass(frozen=True)
class Experiment:
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    algorithms: tuple[AlgorithmSpec, ...] = (AlgorithmSpec(),)
    budget: BudgetSpec = field(default_factory=lambda: BudgetSpec(steps=1000))
    seed: int = 0
    repeats: int = 1
    """Monte-Carlo repeats: the simulator runs seeds seed, seed+1, ... and reports the spread."""

    def __post_init__(self):
        check(self.repeats >= 1, "repeats", self.repeats, "must be >= 1")
        check(0 <= self.seed <= SEED_MAX + 1 - self.repeats, "seed", self.seed, SEED_RULE)
        check(len(self.algorithms) >= 1, "algorithms", [], "name at least one algorithm")
        names = [a.name for a in self.algorithms]
        check(len(set(names)) == len(names), "algorithms", names, "names an algorithm twice")
        if self.budget.epochs:
            check(self.workload.dataset_samples > 0, "workload.dataset_samples", 0,
                  "must be > 0 for an epochs budget")
            check(self.steps_per_epoch >= 1, "budget.epochs", self.budget.epochs,
                  f"an epoch of {self.workload.dataset_samples} samples is less than one step of "
                  f"{self.samples_per_step} samples")
        for algo in self.algorithms:
            self._check_fits_budget(algo)

    def _check_fits_budget(self, algo: AlgorithmSpec) -> None:
        if not algo.is_local:
            return
        steps = self.nominal_steps
        key = f"algorithm.{algo.name}"
        check_replica_group(algo.replica_group, self.cluster, f"{key}.replica_group")
        if self.group_size(algo) > 1:
            failures = self.cluster.failures
            check(failures.mtbf_s == 0 or failures.policy == "wait", "cluster.failures.policy", failures.policy,
                  f'must be "wait" with replica groups ({key}.replica_group = {algo.replica_group!r}): '
                  "a group trains as DDP, which waits for a failed worker")
        check(algo.warmup_steps < steps, f"{key}.warmup_steps", algo.warmup_steps,
              f"must be shorter than the run ({steps} steps)")
        check(algo.sync_every <= steps - algo.warmup_steps, f"{key}.sync_every", algo.sync_every,
              f"must fit in the run after the warm-up ({steps - algo.warmup_steps} steps)")

    @property
    def workers(self) -> int:
        return self.cluster.workers

    def group_size(self, algo: AlgorithmSpec) -> int:
        """Workers per replica group of ``algo`` (1 for DDP, whose every step spans all workers)."""
        return group_size(algo.replica_group, self.cluster) if algo.is_local else 1

    @property
    def samples_per_step(self) -> int:
        """Samples one optimizer step consumes across all workers."""
        return self.workload.batch_per_worker * self.workload.grad_accum * self.workers

    @property
    def steps_per_epoch(self) -> int:
        return self.workload.dataset_samples // self.samples_per_step

    @property
    def nominal_steps(self) -> int:
        """Steps of the budget, counting every step (pseudo-sync steps included) as one."""
        if self.budget.steps:
            return self.budget.steps
        return max(1, math.floor(self.budget.epochs * self.steps_per_epoch))

    def algorithm(self, name: str) -> AlgorithmSpec:
        for algo in self.algorithms:
            if algo.name == name:
                return algo
        raise KeyError(name)

    def replace(self, **changes) -> Experiment:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Nested plain dict, loadable again with ``from_dict`` (manifests, experiment.toml)."""
        return experiment_to_dict(self)


# ---------------------------------------------------------------------------------------------
# Loading


def load(path: str | Path | None = None, *, workload: str | None = None, cluster: str | None = None,
         algorithms: list[str] | None = None, steps: int | None = None, epochs: float | None = None,
         seed: int | None = None, overrides: list[str] = ()) -> Experiment:
    """Build an Experiment from an optional file, CLI options and ``KEY=VALUE`` overrides."""
    layers: list[tuple[str, dict]] = []
    own: dict = {}
    if path is not None:
        own = presets.read_toml(path)
    source = str(path) if path is not None else "defaults"
    wl_ref = workload or _pop_ref(own, "workload") or presets.DEFAULT_WORKLOAD
    cl_ref = cluster or _pop_ref(own, "cluster") or presets.DEFAULT_CLUSTER
    wl_path = presets.resolve("workload", wl_ref, "--workload" if workload else source)
    cl_path = presets.resolve("cluster", cl_ref, "--cluster" if cluster else source)
    layers.append((str(wl_path), _read_preset("workload", wl_path)))
    layers.append((str(cl_path), _read_preset("cluster", cl_path)))
    layers.append((source, own))
    cli: dict = {}
    if algorithms:
        cli["algorithms"] = list(algorithms)
    if steps is not None:
        cli["budget"] = {"steps": steps, "epochs": 0.0}
    if epochs is not None:
        cli["budget"] = {"epochs": epochs, "steps": 0}
    if seed is not None:
        cli["seed"] = seed
    layers.append(("command line", cli))
    for item in overrides:
        layers.append(("--set", parse_override(item)))
    return from_layers(layers)


def _pop_ref(own: dict, key: str) -> str | None:
    """``workload = "name"`` at the top of a file names a preset; a ``[workload]`` table overrides it."""
    value = own.get(key)
    if isinstance(value, str):
        del own[key]
        return value
    if isinstance(value, dict) and isinstance(value.get("preset"), str):
        return value.pop("preset")
    return None


PRESET_TABLES = {"workload": ("workload", "train", "algorithm", "budget"), "cluster": ("cluster",)}
"""The tables a workload file and a cluster file may hold."""


def _read_preset(kind: str, path: Path) -> dict:
    """A workload or cluster file; one without its ``[kind]`` table (empty, or the other kind) would
    silently give the defaults under the name "custom"."""
    data = presets.read_toml(path)
    if not isinstance(data.get(kind), dict) or not data[kind]:
        raise ConfigError(f"is not a {kind} file: it needs a non-empty [{kind}] table", source=str(path))
    extra = sorted(set(data) - set(PRESET_TABLES[kind]))
    if extra:
        raise ConfigError(f"a {kind} file holds only {', '.join(PRESET_TABLES[kind])}", key=extra[0],
                          source=str(path))
    return data


def parse_override(item: str) -> dict:
    """``a.b.c=VALUE`` -> {"a": {"b": {"c": VALUE}}}; VALUE is read as TOML, else as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("expected KEY=VALUE, e.g. cluster.nodes=4", value=item, source="--set")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:
        raise ConfigError("arrays or tables nested too deeply", key=key, source="--set") from None
    out: dict = {}
    set_path(out, key.split("."), value)
    return out


FORMER_KEYS = {"bucket_mb": "bucket_mib"}
"""Algorithm keys by their former names, read as the current ones: experiment files and results folders
of earlier versions keep loading. ``bucket_mb`` always held MiB (PyTorch's ``bucket_cap_mb`` counts
MiB); the name now says so. Giving both names is refused."""


def current_keys(data: dict, source: str = "experiment") -> dict:
    """``data`` with the former algorithm keys (``FORMER_KEYS``), shared or in an algorithm's own table,
    under their current names."""
    table = data.get("algorithm")
    if not isinstance(table, dict):
        return data
    return {**data, "algorithm": _renamed(table, "algorithm", source)}


def _renamed(table: dict, where: str, source: str) -> dict:
    out = {}
    for key, value in table.items():
        if key in ALGORITHMS and isinstance(value, dict):
            value = _renamed(value, f"{where}.{key}", source)
        new = FORMER_KEYS.get(key, key)
        if new != key and new in table:
            raise ConfigError(f"is the former name of {new}; give {new} only", key=f"{where}.{key}", value=value,
                              source=source)
        out[new] = value
    return out


def from_layers(layers: list[tuple[str, dict]]) -> Experiment:
    """Merge the layers (later wins), remembering which source set each key, then build."""
    merged: dict = {}
    origin: dict[str, str] = {}
    for source, data in layers:
        if not isinstance(data, dict):
            raise ConfigError("expected a table", source=source)
        try:
            data = _balanced_sugar(current_keys(data, source))
        except ConfigError as err:
            raise err.located(source) from None
        merge(merged, data, origin, source)
    _stamp_given(merged, origin)
    return from_dict(merged, origin)


def _stamp_given(merged: dict, origin: dict[str, str]) -> None:
    """A cluster figure set by a later layer than the cluster file (the layer that gave its provenance table,
    else its ``source``) no longer has the provenance that file states: mark it ``given: <layer>`` (an
    experiment file, --set, a sweep)."""
    cluster = merged.get("cluster")
    if not isinstance(cluster, dict):
        return
    home = origin.get("cluster.provenance", origin.get("cluster.source", origin.get("cluster.name")))
    later = {key: origin[f"cluster.{key}"] for key in figures()
             if f"cluster.{key}" in origin and origin[f"cluster.{key}"] != home}
    if later:
        provenance = cluster.setdefault("provenance", {})
        if isinstance(provenance, dict):
            provenance.update({key: f"given: {where}" for key, where in later.items()})


def from_dict(data: dict, origin: dict[str, str] | None = None) -> Experiment:
    origin = origin or {}

    def where(key: str) -> str:
        # The source of the deepest key we know about.
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "algorithm" and key not in origin and f"algorithm.{parts[2]}" in origin:
            return origin[f"algorithm.{parts[2]}"]  # a shared key that the algorithm's own table does not set
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in origin:
                return origin[".".join(parts[:i])]
        return "experiment"

    try:
        data = _balanced_sugar(_without_derived_optimizer_state(current_keys(dict(data))))
    except ConfigError as err:
        raise err.located(where(err.key)) from None
    algo_table = data.pop("algorithm", {}) or {}
    names = data.pop("algorithms", list(DEFAULT_ALGORITHMS))
    try:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError("must be a list of algorithm names", key="algorithms", value=names)
        specs = tuple(_algorithm_spec(n, algo_table) for n in names)
        return build(Experiment, {**data, "algorithms": specs}, skip=("algorithms",))
    except ConfigError as err:
        raise err.located(where(err.key)) from None


def _balanced_sugar(data: dict) -> dict:
    """``sync_every = "balanced"`` (shared or in an algorithm's own table) read as ``sync_balanced = true``,
    leaving H to the layers below; a copy, the layer itself is left as it is."""
    table = data.get("algorithm")
    if not isinstance(table, dict):
        return data

    def unsugared(own: dict, prefix: str) -> dict:
        value = own.get("sync_every")
        if not isinstance(value, str):
            return own
        if value != BALANCED:
            raise ConfigError(f'must be an integer >= 1 (H) or "{BALANCED}"', key=f"{prefix}.sync_every",
                              value=value)
        return {**{k: v for k, v in own.items() if k != "sync_every"}, "sync_balanced": True}

    out = unsugared(table, "algorithm")
    # A table of an algorithm without H (DDP) keeps the key, so that its error names what was written.
    out = {k: unsugared(v, f"algorithm.{k}") if k in ALGORITHMS and FACTS[k].local and isinstance(v, dict) else v
           for k, v in out.items()}
    return {**data, "algorithm": out}


def _without_derived_optimizer_state(data: dict) -> dict:
    """``workload.optimizer_state_tensors`` is derived from ``train.optimizer`` (TrainSpec); older files and
    results folders that state it load when they agree, else the key is named with the derived value."""
    workload = data.get("workload")
    if not isinstance(workload, dict) or "optimizer_state_tensors" not in workload:
        return data
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    optimizer = train.get("optimizer", TrainSpec.optimizer)
    given, derived = workload["optimizer_state_tensors"], OPTIMIZER_STATE_TENSORS.get(optimizer)
    if given != derived:
        raise ConfigError(f"is derived from train.optimizer ({optimizer}: {derived}); remove the key",
                          key="workload.optimizer_state_tensors", value=given)
    return {**data, "workload": {k: v for k, v in workload.items() if k != "optimizer_state_tensors"}}


def _algorithm_spec(name: str, table: dict) -> AlgorithmSpec:
    if not isinstance(table, dict):
        raise ConfigError("must be a table", key="algorithm", value=table)
    check(name in ALGORITHMS, "algorithms", name,
          f"unknown algorithm; expected one of {', '.join(ALGORITHMS)}")
    shared = {k: v for k, v in table.items() if k not in ALGORITHMS}
    if "name" in shared:  # it would be silently replaced by each algorithm's own name
        raise ConfigError("is not a parameter; pick algorithms with `algorithms = [...]` or --algorithms",
                          key="algorithm.name", value=shared["name"])
    for key, value in table.items():
        if key in ALGORITHMS:
            _check_own_table(key, value)
    own = table.get(name, {})
    if FACTS[name].sparse and "payload_dtype" not in {**shared, **own}:
        own = {**own, "payload_dtype": SPARSE_DEFAULT_PAYLOAD}  # its own default, not the dense fp32
    try:
        spec = build(AlgorithmSpec, {**shared, **own, "name": name})
    except ConfigError as err:
        prefix = f"algorithm.{name}" if err.key in own else "algorithm"
        raise err.located("", prefix) from None
    # A shared key this algorithm does not use was checked above but keeps its default here, so that
    # to_dict() writes each algorithm's own keys only and loading it back gives an equal spec.
    unused = {f.name: f.default for f in dataclasses.fields(AlgorithmSpec)
              if f.name != "name" and f.name not in FACTS[name].keys}
    return dataclasses.replace(spec, **unused)


def _check_own_table(name: str, own: object) -> None:
    """``[algorithm.<name>]`` may only hold parameters that ``name`` uses: any other is a mistake
    (a DDP run ignores ``p``), while a shared ``[algorithm]`` key is meant for whichever uses it."""
    if not isinstance(own, dict):
        raise ConfigError("must be a table of that algorithm's parameters", key=f"algorithm.{name}", value=own)
    for key in own:
        if key not in FACTS[name].keys:
            raise ConfigError(f"does not apply to {name}; its parameters are: {', '.join(FACTS[name].keys)}",
                              key=f"algorithm.{name}.{key}", value=own[key])


def calibrated(exp: Experiment, profile: str | Path) -> Experiment:
    """``exp`` on a calibrated cluster profile (``palsgd calibrate``), as loading it with ``--cluster
    profile`` gives: the profile in place of the cluster file, and the figures that the layers above that
    file set (``given_figures``) set again on top of it."""
    data = exp.to_dict()
    data["workload"] = exp.workload.inputs()  # as with_changes: the model's facts are derived again
    data["cluster"] = presets.read_toml(profile).get("cluster")
    layers: list[tuple[str, dict]] = [(str(profile), data)]
    for where, keys in given_figures(exp).items():
        layer: dict = {}
        for key in keys:
            value = exp.cluster
            for part in key.split("."):
                value = getattr(value, part)
            set_path(layer, ["cluster", *key.split(".")], value)
        layers.append((where, layer))
    return from_layers(layers)


def given_figures(exp: Experiment) -> dict[str, list[str]]:
    """The cluster figures set above the cluster file, by the layer that set them: those stamped ``given:
    <layer>`` (``_stamp_given``), less what a cluster preset states as given itself."""
    stated = {}
    if exp.cluster.name in presets.names("cluster"):
        stated = presets.read("cluster", exp.cluster.name).get("cluster", {}).get("provenance", {})
    out: dict[str, list[str]] = {}
    for key, where in exp.cluster.provenance.items():
        if where.startswith("given: ") and stated.get(key) != where:
            out.setdefault(where.removeprefix("given: "), []).append(key)
    return out


def with_changes(exp: Experiment, changes: list[tuple[str, dict]]) -> Experiment:
    """``exp`` with override layers ``(source, nested dict)`` applied, validated again.

    ``exp.to_dict()`` spells out every algorithm's parameters in its own table, so a shared
    ``algorithm.<field>`` change is pushed into each of those tables that has that field; otherwise it
    would be shadowed. It also stays in the shared table, so it is checked even if no algorithm uses it.
    """
    data = exp.to_dict()
    data["workload"] = exp.workload.inputs()  # a changed model derives its params and FLOPs anew
    names = list(data["algorithm"])
    layers: list[tuple[str, dict]] = [("experiment", data)]
    for source, change in changes:
        change = current_keys(change, source)
        table = change.get("algorithm")
        if isinstance(table, dict):
            shared = {k: v for k, v in table.items() if k not in ALGORITHMS}
            own = {k: v for k, v in table.items() if k in ALGORITHMS}
            pushed = {n: {**{k: v for k, v in shared.items() if k in FACTS[n].keys}, **own.get(n, {})}
                      for n in names}
            change = {**change, "algorithm": {**shared, **own, **pushed}}
        layers.append((source, change))
    return from_layers(layers)


def experiment_to_dict(exp: Experiment) -> dict:
    out = to_dict(exp)
    algos = out.pop("algorithms")
    out["algorithms"] = [a["name"] for a in algos]
    out["algorithm"] = {a["name"]: {k: a[k] for k in FACTS[a["name"]].keys} for a in algos}
    return out
