"""One rank of one algorithm of one experiment, started by torchrun through ``real/entry.py``:

    python -m torch.distributed.run --nproc-per-node 2 -m palsgd.real.entry \
        --experiment OUT/ranks/experiment.json --algorithm palsgd --out OUT

``harness/machinery/launch.py`` writes the resolved experiment and starts this. Each rank writes, atomically and
periodically (a killed run keeps what it did), into ``OUT/ranks/<algorithm>/``:

- ``rank<r>.steps.parquet``  step table rows (``core.schema.STEP_COLUMNS``, source "real");
- ``rank<r>.metrics.csv``    one row per step (``METRIC_COLUMNS``): loss, lr, eval_loss;
- ``rank<r>.progress.json``  heartbeat: last completed step, time, pid and host, whether it waits in a collective,
  status (running, done, or diverged with a message: the loss or the parameters stopped being finite;
  the rank then exits with ``core.faults.DIVERGED_EXIT_CODE``).

Evaluation, checkpoints and file writes are taken out of the run clock: the tables time training only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..core import buckets, io
from ..core.algorithms import IDLE_STEP, PSEUDO_SYNC_STEP, Plan, plan_for
from ..core.config import AlgorithmSpec, Experiment, from_dict
from ..core.faults import CRASH_EXIT_CODE, DIVERGED_EXIT_CODE, FaultSpec
from ..core.schema import METRIC_COLUMNS, STEP_COLUMNS
from . import checkpoint, dist
from .algorithms import ALGORITHM_CLASSES, Algorithm, Setup
from .data import DataSource, build_data
from .emulated_compute import EmulatedCompute, NoData, emulate
from .models import build_model, compute_loss
from .optim import build_optimizer, lr_at
from .timing import DDPCommTimer, StepTimer, ddp_timed_hook

PROGRESS_EVERY_S = 10.0
HEARTBEAT_EVERY_S = 0.25


def rank_dir(out: Path, algorithm: str) -> Path:
    return Path(out) / "ranks" / algorithm


def make_plan(exp: Experiment, spec: AlgorithmSpec) -> Plan:
    """The plan the simulator predicts for this run (``core.algorithms.plan_for``), drawn with ``exp.seed``."""
    return plan_for(exp, spec, exp.seed)


class RankFiles:
    """This rank's rows and heartbeat; rewritten whole and atomically on each flush.

    The training loop and the heartbeat thread share the heartbeat: both go through ``update`` and
    ``beat``, under one lock, so they never race on its temporary file."""

    def __init__(self, out: Path, algorithm: str, rank: int):
        self.dir = rank_dir(out, algorithm)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.steps_path = self.dir / f"rank{rank}.steps.parquet"
        self.metrics_path = self.dir / f"rank{rank}.metrics.csv"
        self.progress_path = self.dir / f"rank{rank}.progress.json"
        self.metrics: list[tuple] = []
        self._state = {"rank": rank, "pid": os.getpid(), "host": os.uname().nodename, "step": -1,
                       "status": "starting", "in_collective": False, "time": time.time()}
        self._lock = threading.Lock()

    def load_until(self, step: int) -> list[tuple]:
        """Rows of an earlier attempt before ``step`` (resume); returns the step rows."""
        rows: list[tuple] = []
        if self.steps_path.exists():  # our own files: regular, bounded, no link followed
            with io.open_input(self.steps_path, max_bytes=io.MAX_TABLE_BYTES, follow=False) as f:
                df = pd.read_parquet(f)
            rows = [tuple(r) for r in df[df["step"] < step][list(STEP_COLUMNS)].itertuples(index=False)]
        if self.metrics_path.exists():
            with io.open_input(self.metrics_path, max_bytes=io.MAX_TABLE_BYTES, follow=False) as f:
                df = pd.read_csv(f)
            self.metrics = [tuple(r) for r in df[df["step"] < step][list(METRIC_COLUMNS)]
                            .itertuples(index=False)]
        return rows

    def flush(self, step_rows: list[tuple]) -> None:
        io.write_parquet(self.steps_path, pd.DataFrame(step_rows, columns=list(STEP_COLUMNS)))
        io.write_csv(self.metrics_path, pd.DataFrame(self.metrics, columns=list(METRIC_COLUMNS)))

    def update(self, **fields) -> None:
        """Change the heartbeat's fields (``step``, ``status``, ...); the next beat writes them."""
        with self._lock:
            self._state.update(fields)

    def beat(self, **fields) -> None:
        """Update ``fields`` and write the heartbeat now."""
        with self._lock:
            self._state.update(fields, time=time.time())
            # No fsync: a heartbeat only needs to be visible to the launcher on this host, and often.
            # Never through a link planted in --out (O_NOFOLLOW); the rename replaces the entry itself.
            tmp = self.progress_path.with_suffix(".json.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self._state))
            os.replace(tmp, self.progress_path)


@contextlib.contextmanager
def heartbeat(files: RankFiles, comm: dist.TorchComm):
    """Beat every HEARTBEAT_EVERY_S in a background thread while the body runs (also inside collectives)."""
    stop = threading.Event()

    def beat_until_stopped():
        while not stop.wait(HEARTBEAT_EVERY_S):
            files.beat(in_collective=comm.in_collective)

    thread = threading.Thread(target=beat_until_stopped, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def evaluate(model: torch.nn.Module, batches: list, comm: dist.TorchComm, device: torch.device) -> float:
    """Held-out loss of this rank's model, averaged over the ranks."""
    model.eval()
    with torch.no_grad():
        losses = [float(compute_loss(model, _to(b, device))) for b in batches]
    return comm.mean_scalar(sum(losses) / len(losses))


def _to(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


def run(exp: Experiment, name: str, out: Path, ctx: dist.DistContext, *, fault: FaultSpec | None = None,
        resume: bool = False, attempt: int = 0, dilation: float = 1.0) -> None:
    """Train ``name`` on this rank to the end of its plan; raise Diverged when training stops being finite.
    ``dilation``: emulated compute sleeps that many times its modelled time (``--time-dilation``)."""
    t = set_up(exp, name, out, ctx, resume=resume, attempt=attempt, dilation=dilation)
    t.files.beat(status="running", step=t.start - 1)
    with heartbeat(t.files, t.comm):
        try:
            for step in range(t.start, t.plan.steps):
                if fault is not None and fault.rank == ctx.rank and step >= fault.step:
                    _inject(fault, t.setup, t.files)
                loss = t.step(step)
                eval_loss = t.evaluate_if_due(step)
                t.record(step, loss, eval_loss)
                t.stop_if_diverged(step, loss)  # before a checkpoint could keep a diverged model
                t.flush_if_due(step)
                t.print_progress(step, loss, eval_loss)
        except Diverged as err:
            t.files.flush(t.timer.rows)  # with the diverged step's row: the tables show where it happened
            t.files.beat(status="diverged", message=str(err))
            raise
    t.files.beat(status="done")


class Diverged(Exception):
    """The loss or the parameters stopped being finite at ``step``."""

    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step = step


def set_up(exp: Experiment, name: str, out: Path, ctx: dist.DistContext, *, resume: bool,
           attempt: int, dilation: float = 1.0) -> Training:
    """Model, optimizer, DDP, data and rank files on this rank; restored from the newest checkpoint that
    every rank holds when ``resume``. The order matters: every rank seeds, then meets in the same
    collectives (checkpoint agreement, common clock)."""
    spec = exp.algorithm(name)
    plan = make_plan(exp, spec)
    torch.manual_seed(exp.seed)  # the same initial model on every rank; DDP also broadcasts rank 0's
    model = build_model(exp.workload.model).to(ctx.device)
    flat_params = dist.flatten_(model)  # syncs need no copy
    optimizer = build_optimizer(model.parameters(), exp.train)
    emulated, loss_fn = None, compute_loss
    if exp.train.compute == "emulated":  # compute sleeps its modelled time; the communication is real
        emulated, optimizer = emulate(model, optimizer, exp, ctx.rank, plan.steps, dilation)
        loss_fn, data = emulated.loss_fn, NoData()
    else:
        data = build_data(exp.workload, rank=ctx.rank, world_size=ctx.world_size, seed=exp.seed)
    comm = dist.TorchComm(ctx, payload=spec.dense_payload_dtype, per_tensor=spec.per_tensor_allreduce)
    ddp = _wrap_in_ddp(model, spec, ctx, bucket_views=emulated is not None)
    grouped = dist.replica_setup(exp, spec, ctx, comm)
    eval_data = data.eval_batches(exp.train.eval_batches)
    files = RankFiles(out, name, ctx.rank)
    restored = _agree_on_checkpoint(out, name, ctx, comm) if resume else None
    timer = StepTimer(algorithm=name, worker=ctx.rank, zero=comm.common_clock(), device=ctx.device,
                      run=attempt, offset_s=0.0 if restored is None else restored["clock_s"])
    ddp_timer = DDPCommTimer(timer, dist.PAYLOAD_DTYPES[buckets.ddp_payload_dtype(spec.dense_payload_dtype)])
    ddp.register_comm_hook(ddp_timer, ddp_timed_hook)
    group_ddp = group_timer = None
    if grouped is not None:
        group_ddp = _wrap_in_ddp(model, spec, ctx, bucket_views=False, process_group=grouped[0].members)
        group_timer = DDPCommTimer(timer, dist.PAYLOAD_DTYPES[spec.dense_payload_dtype], group=grouped[0].members)
        group_ddp.register_comm_hook(group_timer, ddp_timed_hook)
    setup = Setup(model=model, optimizer=optimizer, spec=spec, train=exp.train,
                  kinds=plan.worker_kinds(ctx.rank), sync_after=plan.sync_after, comm=comm, timer=timer,
                  loss_fn=loss_fn, ddp=ddp, ddp_timer=ddp_timer, grad_accum=exp.workload.grad_accum,
                  device=ctx.device, fragment=plan.fragment, start_after=plan.start_after,
                  device_s=None if emulated is None else emulated.device_s, group_ddp=group_ddp,
                  group_ddp_timer=group_timer, sync_comm=None if grouped is None else grouped[1])
    t = Training(exp=exp, name=name, out=out, ctx=ctx, attempt=attempt, plan=plan, setup=setup,
                 algo=ALGORITHM_CLASSES[name](setup), flat_params=flat_params, data=data,
                 eval_data=eval_data, files=files, emulated=emulated)
    if restored is None:
        torch.manual_seed(exp.seed + 1 + ctx.rank)  # per-rank randomness (dropout) from here on
    else:
        t.restore(restored)
    return t


def _wrap_in_ddp(model: torch.nn.Module, spec: AlgorithmSpec, ctx: dist.DistContext, *,
                 bucket_views: bool, process_group=None) -> torch.nn.Module:
    # PyTorch's default bucket layout (1 MiB first bucket) unless a cap is asked for; the simulator
    # charges the same layout (AlgorithmSpec.first_bucket_mib). On emulated accelerators the gradients
    # are views of DDP's buckets, saving the copy back after each all-reduce: host memory work that a GPU
    # does on the device, and that would otherwise land in the emulated compute.
    cap = {} if spec.torch_bucket_cap_mb is None else {"bucket_cap_mb": spec.torch_bucket_cap_mb}
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        gradient_as_bucket_view=bucket_views, process_group=process_group, **cap)


@dataclass
class Training:
    """One rank's run between steps: what the set-up built and where the loop stands."""

    exp: Experiment
    name: str
    out: Path
    ctx: dist.DistContext
    attempt: int
    plan: Plan
    setup: Setup  # model, optimizer, comm, timer, ... as the algorithm sees them
    algo: Algorithm
    flat_params: torch.Tensor  # every trainable parameter is a view of it (dist.flatten_)
    data: DataSource | NoData
    eval_data: list
    files: RankFiles
    emulated: EmulatedCompute | None = None  # emulated accelerators: no loss, no evaluation
    start: int = 0  # the first step this attempt takes
    data_position: int = 0  # the next training batch
    last_flush: float = field(default_factory=time.perf_counter)
    last_print: float = field(default_factory=time.perf_counter)

    @property
    def comm(self) -> dist.TorchComm:
        return self.setup.comm

    @property
    def timer(self) -> StepTimer:
        return self.setup.timer

    def step(self, step: int) -> float:
        """Take one step of the plan; its training loss (NaN when there is none to report)."""
        if self.emulated is None:
            return self.algo.step(step, self.next_batch)
        self.emulated.begin_step(step)
        self.algo.step(step, self.next_batch)
        return math.nan

    def next_batch(self):
        batch = self.data.train_batch(self.data_position)
        self.data_position += 1
        return _to(batch, self.ctx.device)

    def is_last(self, step: int) -> bool:
        return step == self.plan.steps - 1

    def is_pseudo_sync(self, step: int) -> bool:
        """A step without a loss of its own: a pseudo-sync step, or an idle one (``sync_every = "balanced"``)."""
        return self.setup.kinds[step] in (PSEUDO_SYNC_STEP, IDLE_STEP)

    def stop_if_diverged(self, step: int, loss: float) -> None:
        """Every gradient step checks its own loss (a pseudo-sync step has none). A sync checks the
        parameters it averaged, the same on every rank, so that all ranks stop there together."""
        if not self.is_pseudo_sync(step) and self.emulated is None and not math.isfinite(loss):
            raise Diverged(step, f"loss is {loss}")
        # Emulated: the parameters never change, and this host-side scan of every parameter (20-90 ms for
        # GPT-Neo-8M on a loaded host) would sit on the step clock after each sync, a cost no device has.
        if self.plan.sync_after[step] and self.emulated is None and not bool(torch.isfinite(self.flat_params).all()):
            raise Diverged(step, "parameters are not finite after the sync")

    def evaluate_if_due(self, step: int) -> float:
        every = self.exp.train.eval_every
        if self.emulated is not None or not (self.is_last(step) or (every and (step + 1) % every == 0)):
            return math.nan
        with _paused(self.timer):
            return evaluate(self.setup.model, self.eval_data, self.comm, self.ctx.device)

    def record(self, step: int, loss: float, eval_loss: float) -> None:
        lr = lr_at(self.exp.train, step, self.plan.steps)
        self.files.metrics.append(("real", self.name, self.attempt, self.ctx.rank, step, self.timer.last_end_s,
                                   loss, lr, eval_loss))
        self.files.update(step=step)

    def flush_if_due(self, step: int) -> None:
        """Write the rank files (and a checkpoint when one is due) periodically and at the end."""
        every = self.exp.train.checkpoint_every
        checkpoint_now = bool(every) and (step + 1) % every == 0 and not self.is_last(step)
        if not (checkpoint_now or self.is_last(step)
                or time.perf_counter() - self.last_flush > _flush_interval(self.timer.rows)):
            return
        with _paused(self.timer):
            self.files.flush(self.timer.rows)
            if checkpoint_now:
                checkpoint.save(self.out, self.name, self.ctx.rank, step + 1, self.state_dict(step + 1))
        self.last_flush = time.perf_counter()

    def print_progress(self, step: int, loss: float, eval_loss: float) -> None:
        """Rank 0 prints a line every PROGRESS_EVERY_S and at the end."""
        if self.ctx.rank != 0 or not (self.is_last(step) or time.perf_counter() - self.last_print > PROGRESS_EVERY_S):
            return
        self.last_print = time.perf_counter()
        took = ("idle" if self.setup.kinds[step] == IDLE_STEP else "pseudo-sync" if self.is_pseudo_sync(step)
                else "emulated compute, no loss"
                if self.emulated is not None else f"loss {loss:.4f}")
        evaluated = "" if math.isnan(eval_loss) else f"  eval {eval_loss:.4f}"
        print(f"[{self.name}] step {step + 1}/{self.plan.steps}  {took}  t {self.timer.last_end_s:.1f}s{evaluated}",
              file=sys.stderr, flush=True)

    def state_dict(self, next_step: int) -> dict:
        """Everything a resumed run needs to take exactly the steps from ``next_step`` on."""
        return {"next_step": next_step, "data_position": self.data_position, "clock_s": self.timer.last_end_s,
                "model": self.setup.model.state_dict(), "optimizer": self.setup.optimizer.state_dict(),
                "algorithm": self.algo.state_dict(), "rng": checkpoint.rng_state()}

    def restore(self, state: dict) -> None:
        self.setup.model.load_state_dict(state["model"])
        self.setup.optimizer.load_state_dict(state["optimizer"])
        self.algo.load_state_dict(state["algorithm"])
        checkpoint.set_rng_state(state["rng"])
        self.start, self.data_position = state["next_step"], state["data_position"]
        self.timer.rows = self.files.load_until(self.start)


def _flush_interval(rows: list) -> float:
    """Seconds between periodic flushes: 5 s, longer for big tables so rewriting stays under ~2%."""
    return max(5.0, len(rows) / 20000.0)


class _paused:
    """Take the body's time out of the run clock (evaluation, checkpoints, file writes)."""

    def __init__(self, timer: StepTimer):
        self.timer = timer

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.timer.zero += time.perf_counter() - self.t0
        return False


def _agree_on_checkpoint(out: Path, name: str, ctx: dist.DistContext, comm: dist.TorchComm) -> dict | None:
    """The newest checkpoint every rank holds intact (ranks may have died a checkpoint apart, a file may
    be damaged); None when there is none, and the run starts over."""
    step = checkpoint.newest_common(checkpoint.intact_steps(out, name, ctx.rank),
                                    lambda offer: int(comm.reduce_scalar(offer, "min")))
    return None if step < 0 else checkpoint.load(out, name, ctx.rank, step, ctx.device)


def _inject(fault: FaultSpec, setup: Setup, files: RankFiles) -> None:
    if fault.kind == "crash":
        files.beat()
        os._exit(CRASH_EXIT_CODE)
    if fault.kind == "hang":
        while True:
            time.sleep(3600)
    setup.slow_factor = fault.factor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m palsgd.real.entry", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", required=True, type=Path, help="resolved experiment (JSON)")
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--fault", default=None, help="rank=R,step=S,kind=crash|hang|slow[,factor=F]")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--attempt", type=int, default=0)
    parser.add_argument("--time-dilation", type=float, default=1.0, help="emulated compute sleeps K times longer")
    args = parser.parse_args(argv)
    exp = from_dict(json.loads(args.experiment.read_text()))
    fault = FaultSpec.parse(args.fault) if args.fault else None
    ctx = dist.init(threads=exp.train.threads_per_rank)
    try:
        run(exp, args.algorithm, args.out, ctx, fault=fault, resume=args.resume, attempt=args.attempt,
            dilation=args.time_dilation)
    except Diverged as err:
        # For the log only (the launcher reads the heartbeat and prints one line for all ranks).
        print(f"palsgd rank {ctx.rank}: {args.algorithm} diverged at step {err.step}: {err}", file=sys.stderr,
              flush=True)
        return DIVERGED_EXIT_CODE
    finally:
        dist.teardown()
    return 0
