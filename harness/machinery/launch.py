"""Run an experiment on real processes: torchrun per node, one algorithm after another, merged tables.

``run_real`` wraps ``python -m torch.distributed.run`` (no torch import here: the harness stays light).
One node: standalone rendezvous (torchrun picks a free port). Several nodes: c10d rendezvous at
``rdzv_endpoint``; call ``run_real`` (or ``palsgd run``) once per node with its ``node_rank``. With an
emulated ``network`` (``harness/machinery/netem.py``) one torchrun agent runs per emulated node, with its ranks,
in its network namespace. Watching the ranks' heartbeats, the launcher detects a dead rank (torchrun exits non-zero),
a hang (no rank advances for ``timeout_s``) and a slow rank (per-rank step-time skew), tears the whole
group down, keeps what the rank files hold, and records it all in the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...core import groups, io, schema
from ...core.algorithms import ALGORITHMS
from ...core.config import Experiment
from ...core.errors import ConfigError
from ...core.faults import FaultSpec
from ...core.procs import die_with_parent, pid_alive
from . import store
from .netem import NetemSpec
from .progress import Progress
from .rank_files import (
    SHARED_FS_WAIT_S,
    kept_last_steps,
    merge,
    missing_lead_failure,
    missing_ranks_failure,
    read_heartbeats,
    slow_ranks,
)

POLL_S = 0.2
STARTUP_S = 300.0


class RunFailed(Exception):
    """A real run failed (a rank died or hung) or diverged; ``failure`` is what the manifest records."""

    def __init__(self, failure: dict, out: Path):
        self.failure, self.out = failure, out
        self.status = "diverged" if failure["kind"] == "diverged" else "failed"
        if self.status == "diverged":
            super().__init__(f"{failure['algorithm']} at step {failure['step']}: {failure['message']}")
            return
        rank = "" if failure.get("rank") is None else f" on rank {failure['rank']}"
        step = "" if failure.get("step") is None else f" at step {failure['step']}"
        super().__init__(f"{failure['algorithm']}: {failure['kind']}{rank}{step}: {failure['message']} "
                         f"(partial results kept in {out})")


@dataclass
class RealResult:
    out: Path
    status: str
    runs: pd.DataFrame | None
    last_steps: dict[str, int] = field(default_factory=dict)
    slow_ranks: list[dict] = field(default_factory=list)


def check_world(exp: Experiment, nproc_per_node: int, nnodes: int, node_rank: int) -> None:
    if nproc_per_node < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ConfigError("need nproc_per_node >= 1, nnodes >= 1 and 0 <= node_rank < nnodes",
                          key="--node-rank", value=node_rank, source="command line")
    if exp.workload.model.family == "custom":
        raise ConfigError("a custom model has no layout to build: real runs train gpt_neo or resnet",
                          key="workload.model.family", value="custom", source="experiment")
    if (exp.cluster.nodes, exp.cluster.gpus_per_node) != (nnodes, nproc_per_node):
        raise ConfigError(f"the experiment describes {exp.cluster.nodes} x {exp.cluster.gpus_per_node} "
                          f"workers but the run has {nnodes} x {nproc_per_node}: set cluster.nodes and "
                          "cluster.gpus_per_node to the real world size", key="cluster",
                          source="command line")


def check_layout(exp: Experiment, nproc_per_node: int, nnodes: int, node_rank: int,
                 spec: NetemSpec | None) -> None:
    """The world a run starts (``nproc_per_node`` x ``nnodes``, split into ``spec``'s emulated nodes if it
    names some) against the experiment's cluster: what ``run_real`` refuses, callable before --out is made."""
    world = nproc_per_node * nnodes
    if spec is not None and spec.nodes and world % spec.nodes == 0:
        nproc_per_node, nnodes = world // spec.nodes, spec.nodes  # as EmulatedNetwork lays them out
    # One rank per namespace (no ``nodes=``) stands for any layout of its ranks; emulated nodes are exact.
    loose = spec is not None and not spec.nodes
    check_world(exp, exp.cluster.gpus_per_node if loose else nproc_per_node,
                exp.cluster.nodes if loose else nnodes, node_rank)
    if spec is not None and exp.workers != world:
        raise ConfigError(f"the network has {world} ranks but the experiment {exp.workers} workers",
                          key="cluster", source="command line")


def job_id(rdzv_endpoint: str | None) -> str:
    """What the launchers of one job share and no other job does: the rendezvous endpoint, and SLURM's job
    id when there is one. The ``--out`` lock admits the launchers of one job (``store.join``)."""
    if rdzv_endpoint is None:
        return ""
    slurm_job = os.environ.get("SLURM_JOB_ID")
    return f"{rdzv_endpoint} slurm:{slurm_job}" if slurm_job else rdzv_endpoint


def torchrun_argv(worker_args: list[str], *, nproc_per_node: int, nnodes: int, node_rank: int,
                  rdzv_endpoint: str | None, rdzv_id: str) -> list[str]:
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc_per_node),
            "--max-restarts", "0"]
    if nnodes == 1 and rdzv_endpoint is None:
        argv += ["--standalone", "--nnodes", "1"]
    else:
        if rdzv_endpoint is None:
            raise ConfigError("several nodes need a rendezvous endpoint HOST:PORT", key="--rdzv-endpoint",
                              source="command line")
        argv += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", rdzv_id]
    return [*argv, "-m", "palsgd.real.entry", *worker_args]


PROGRESS_LINE = re.compile(rf"\[({'|'.join(ALGORITHMS)})\] ")
"""What a worker prints for the user: ``[palsgd] step 40/100 ...`` (``real/worker.py``)."""


class _Group:
    """The torchrun agents of one algorithm on this machine; output teed to the terminal and a log."""

    def __init__(self, commands: list[tuple[list[str], dict]], log: Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        # never through a link planted in --out: what it points at is not ours to write (docs/limits.md)
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:  # ELOOP: a link
            raise ConfigError(f"cannot write the run's log: {err.strerror}", source=str(log)) from None
        self.log = os.fdopen(fd, "a", encoding="utf-8")  # closed in close(), after the agents
        self.procs, self.threads = [], []
        for argv, env in commands:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=die_with_parent)
            thread = threading.Thread(target=self._tee, args=(proc,), daemon=True)
            thread.start()
            self.procs.append(proc)
            self.threads.append(thread)

    def _tee(self, proc: subprocess.Popen) -> None:
        """Everything goes to the log; the terminal gets only the ranks' progress lines (a failed run's
        tracebacks, one per rank plus torchrun's, stay in the log that its summary names)."""
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            self.log.write(line)
            self.log.flush()
            if PROGRESS_LINE.match(line):
                sys.stderr.write(line)

    def poll(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def kill(self, worker_pids: list[int]) -> None:
        """SIGTERM every agent's process group and every known worker, then SIGKILL what is left."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for p in self.procs:
                if p.poll() is None:
                    _signal(lambda s, pid=p.pid: os.killpg(pid, s), sig)
            for pid in worker_pids:
                _signal(lambda s, pid=pid: os.kill(pid, s), sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (any(p.poll() is None for p in self.procs)
                                                   or any(pid_alive(pid) for pid in worker_pids)):
                time.sleep(0.05)

    def close(self) -> None:
        for t in self.threads:
            t.join(timeout=5)
        self.log.close()


def _signal(send, sig) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        send(sig)


def _root_cause_rank(log: Path) -> int | None:
    """torchrun's "Root Cause (first observed failure)" block names the global rank that died."""
    text = log.read_text(errors="replace") if log.exists() else ""
    block = text.rsplit("Root Cause", 1)[-1] if "Root Cause" in text else ""
    m = re.search(r"rank\s*:\s*(\d+)", block)
    return int(m.group(1)) if m else None


def _diverged(beats: dict[int, dict]) -> dict | None:
    """The first rank whose heartbeat says "diverged" at its ``step`` (it exited on a non-finite loss or
    parameter)."""
    diverged = sorted((b["step"], r) for r, b in beats.items() if b.get("status") == "diverged")
    if not diverged:
        return None
    step, rank = diverged[0]
    return {"kind": "diverged", "rank": rank, "step": step, "message": beats[rank].get("message", "")}


def _watch(group: _Group, folder: Path, timeout_s: float, log: Path, ranks: int, progress: Progress
           ) -> dict | None:
    """Wait for the group; return None on success, else the failure (dead rank or hang). ``progress``
    counts the steps every rank has finished.

    The hang clock starts once all ``ranks`` of this machine have written a heartbeat: start-up (imports,
    rendezvous, loading data) gets STARTUP_S more, since it says nothing about a hang in training."""
    progress_at, seen = time.monotonic() + STARTUP_S, None
    while True:
        codes = group.poll()
        beats = read_heartbeats(folder)
        if any(c not in (None, 0) for c in codes):
            diverged = _diverged(beats)
            if diverged is not None:
                return diverged
            rank = _root_cause_rank(log)
            step = beats[rank]["step"] + 1 if rank in beats else None
            code = next(c for c in codes if c not in (None, 0))
            return {"kind": "crash", "rank": rank, "step": step,
                    "message": f"a rank exited (torchrun exit status {code}); see {log}"}
        if all(c == 0 for c in codes):
            return None
        steps = {r: b["step"] for r, b in beats.items()}
        # >=: on a shared --out the folder also holds the other nodes' heartbeats.
        if len(steps) >= ranks and steps != seen:
            seen, progress_at = steps, time.monotonic()
            progress.update(min(steps.values()) + 1 - progress.done)
        elif time.monotonic() - progress_at > timeout_s:
            # The hung rank is the one not waiting inside a collective for the others.
            suspects = sorted(r for r, b in beats.items() if not b.get("in_collective"))
            rank = suspects[0] if len(suspects) == 1 else None
            step = min(steps.values()) + 1 if steps else None
            return {"kind": "hang", "rank": rank, "step": step,
                    "message": f"no rank finished a step for {timeout_s:g} s (ranks not inside a "
                               f"collective: {suspects})"}
        time.sleep(POLL_S)


def run_real(exp: Experiment, out: Path, *, nproc_per_node: int, nnodes: int = 1, node_rank: int = 0,
             rdzv_endpoint: str | None = None, network=None, fault: FaultSpec | None = None,
             resume: bool = False, timeout_s: float = 300.0, time_dilation: float = 1.0) -> RealResult:
    """Run every algorithm of ``exp`` for real; merge the tables into ``out``; raise RunFailed on a failure.
    ``time_dilation`` K (``dilation.py``): ``network`` is already dilated, the ranks' emulated compute sleeps
    K times longer, the hang timeout is K times longer, and the merged tables are divided by K."""
    out = Path(out)
    timeout_s *= time_dilation
    world = nproc_per_node * nnodes
    if network is not None:
        nproc_per_node, nnodes = network.ranks_per_node, network.nodes
        world = nproc_per_node * nnodes
        if not exp.train.threads_per_rank:
            # torchrun sees only its node's ranks, but all nodes share this machine's cores: give each
            # rank its share, or they oversubscribe the cores several times over.
            cores = len(os.sched_getaffinity(0))
            exp = exp.replace(train=dataclasses.replace(exp.train, threads_per_rank=max(1, cores // world)))
    check_layout(exp, nproc_per_node, nnodes, node_rank, network.spec if network is not None else None)
    if fault is not None and fault.rank >= world:
        raise ConfigError(f"rank must be < {world}", key="--inject-fault", value=fault.to_text(),
                          source="command line")
    # The launcher given --node-rank 0 leads (writes the manifest, merges), whatever group rank the c10d
    # rendezvous gave its agent: ranks are assigned in arrival order, anew for each algorithm.
    lead = node_rank == 0
    job = job_id(rdzv_endpoint)
    out = store.prepare(out, resume=resume, kind="run", exp=exp, job=job) if lead else store.join(out, job)
    previous = store.read_manifest(out).get("algorithms", {}) if resume and (out / io.MANIFEST).exists() \
        else {}
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    exp_path = io.write_json(out / "ranks" / "experiment.json", exp.to_dict())
    names = [a.name for a in exp.algorithms]
    record = {n: dict(previous.get(n, {"status": "pending", "last_step": -1})) for n in names}
    if lead:
        store.start(out, "run", exp, launcher_pid=os.getpid(), host=platform.node(), world_size=world,
                    nnodes=nnodes, nproc_per_node=nproc_per_node, fault=fault.to_text() if fault else None,
                    resumed=resume, algorithms=record, time_dilation=time_dilation)
    failure = None
    try:
        for name in names:
            if record[name].get("status") == "complete":
                continue
            failure = _run_one(exp, name, out, exp_path, record, world=world, nproc_per_node=nproc_per_node,
                               nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                               network=network, fault=fault, resume=resume, timeout_s=timeout_s,
                               time_dilation=time_dilation)
            if lead:
                io.update_manifest(out, algorithms=record)
            if failure is not None:
                break
    except KeyboardInterrupt:
        failure = {"kind": "interrupted", "rank": None, "step": None, "message": "stopped by the user"}
    if failure is None:
        wait_s = min(SHARED_FS_WAIT_S, timeout_s)
        failure = missing_ranks_failure(out, names, world, wait_s) if lead \
            else missing_lead_failure(out, names, wait_s)
    return _finish(out, names, record, failure, lead, groups.ddp_spans(exp), time_dilation)


def _run_one(exp, name, out, exp_path, record, *, world, nproc_per_node, nnodes, node_rank, rdzv_endpoint,
             network, fault, resume, timeout_s, time_dilation) -> dict | None:
    folder = out / "ranks" / name
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("rank*.progress.json"):
        stale.unlink()
    worker_args = ["--experiment", str(exp_path), "--algorithm", name, "--out", str(out)]
    if fault is not None:
        worker_args += ["--fault", fault.to_text()]
    if resume:
        worker_args += ["--resume"]
    if time_dilation != 1:
        worker_args += ["--time-dilation", repr(time_dilation)]
    rdzv_id = f"palsgd-{name}-{uuid.uuid4().hex[:8]}" if rdzv_endpoint is None else f"palsgd-{name}"
    # torchrun would set OMP_NUM_THREADS=1 (with a banner); give each rank its share of the cores instead.
    threads = exp.train.threads_per_rank or max(1, len(os.sched_getaffinity(0)) // nproc_per_node)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    if network is None:
        commands = [(torchrun_argv(worker_args, nproc_per_node=nproc_per_node, nnodes=nnodes,
                                   node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id), env)]
    else:
        endpoint = f"{network.addresses[0]}:29500"
        env = {**env, "GLOO_SOCKET_IFNAME": network.ifname}
        # In a namespace the hostname is the machine's, so torchrun cannot tell that host 0 owns the
        # endpoint's address: say so (c10d ``is_host``).
        commands = []
        for host in range(network.nodes):
            argv = torchrun_argv(worker_args, nproc_per_node=network.ranks_per_node, nnodes=network.nodes,
                                 node_rank=host, rdzv_endpoint=endpoint, rdzv_id=rdzv_id)
            at = argv.index("-m", 3)
            argv[at:at] = ["--rdzv-conf", f"is_host={'true' if host == 0 else 'false'}",
                           "--local-addr", network.addresses[host]]
            commands.append((network.command(host, argv), env))
    log = out / "logs" / f"{name}.node{node_rank}.log"
    # torchrun makes a /tmp/torchelastic_* folder per run and leaves it: keep it in the run's folder.
    tmp = out / "tmp" / f"{name}.node{node_rank}"
    tmp.mkdir(parents=True, exist_ok=True)
    commands = [(argv, {**env, "TMPDIR": str(tmp)}) for argv, env in commands]
    group = _Group(commands, log)
    failure = None
    try:
        with Progress(exp.nominal_steps, f"run {name}", unit="steps") as progress:
            failure = _watch(group, folder, timeout_s, log, nproc_per_node if network is None else world, progress)
    except BaseException:
        failure = {"kind": "interrupted"}
        raise
    finally:
        if failure is not None:  # this machine's workers only: a shared --out holds other nodes' heartbeats
            pids = [b["pid"] for b in read_heartbeats(folder).values()
                    if "pid" in b and b.get("host", platform.node()) == platform.node()]
            group.kill(pids)
        group.close()
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last algorithm's leaves out/tmp empty: remove it too
            tmp.parent.rmdir()
        beats = read_heartbeats(folder)
        record[name] = {"status": "complete" if failure is None else
                        "diverged" if failure.get("kind") == "diverged" else "failed",
                        "last_step": min((b["step"] for b in beats.values()), default=-1)}
    if failure is not None:
        failure = {"algorithm": name, **failure}
    return failure


def _finish(out: Path, names: list[str], record: dict, failure: dict | None, lead: bool,
            ddp_spans: dict[str, tuple[int, int]], time_dilation: float = 1.0) -> RealResult:
    steps, metrics = merge(out, names, ddp_spans, time_dilation)
    for name, last_step in kept_last_steps(steps, names).items():  # what the tables hold, not the heartbeats
        record[name]["last_step"] = last_step
    runs = schema.summarize_steps(steps) if len(steps) else None
    slow = slow_ranks(steps) if len(steps) else []
    status = "complete" if failure is None else (
        failure["kind"] if failure["kind"] in ("interrupted", "diverged") else "failed")
    if lead:
        store.write_table(out, io.STEPS, steps)
        store.write_table(out, io.METRICS, metrics)
        if runs is not None:
            store.write_table(out, io.RUNS, runs)
        store.finish(out, status, algorithms=record, failure=failure, slow_ranks=slow)
    if failure is not None and status in ("failed", "diverged"):
        raise RunFailed(failure, out)
    if status == "interrupted":
        raise KeyboardInterrupt
    return RealResult(out, status, runs, {n: r["last_step"] for n, r in record.items()}, slow)
