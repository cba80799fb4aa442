"""torchrun entry point: one rank of one algorithm of one experiment.

    python -m torch.distributed.run --nproc-per-node 2 -m palsgd.real.worker \
        --experiment OUT/ranks/experiment.json --algorithm palsgd --out OUT

``harness/launch.py`` writes the resolved experiment and starts this. Each rank writes, atomically and
periodically (a killed run keeps what it did), into ``OUT/ranks/<algorithm>/``:

- ``rank<r>.steps.parquet``  step table rows (``core.schema.STEP_COLUMNS``, source "real");
- ``rank<r>.metrics.csv``    one row per step (``METRIC_COLUMNS``): loss, lr, eval_loss;
- ``rank<r>.progress.json``  heartbeat: last completed step, time, pid, whether it waits in a collective.

Evaluation, checkpoints and file writes are taken out of the run clock: the tables time training only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import torch

from ..core import algorithms as core_algorithms
from ..core import io
from ..core.config import AlgorithmSpec, Experiment, from_dict
from ..core.procs import die_with_parent
from ..core.schema import METRIC_COLUMNS, STEP_COLUMNS
from ..harness.faults import CRASH_EXIT_CODE, FaultSpec
from . import checkpoint, dist
from .algorithms import ALGORITHM_CLASSES, Setup
from .data import build_data
from .models import build_model, compute_loss
from .optim import build_optimizer, lr_at
from .timing import DDPCommTimer, StepTimer, ddp_timed_hook

PROGRESS_EVERY_S = 10.0
HEARTBEAT_EVERY_S = 0.25


def rank_dir(out: Path, algorithm: str) -> Path:
    return Path(out) / "ranks" / algorithm


def planned_steps(exp: Experiment, spec: AlgorithmSpec) -> int:
    """Steps of the run. ``skipped_batches = kept`` with an epochs budget: enough steps for every worker
    to take the budget's gradient steps (a pseudo-sync step then uses no batch)."""
    steps = exp.nominal_steps
    if spec.name != "palsgd" or spec.skipped_batches != "kept" or not exp.budget.epochs or spec.p == 0:
        return steps
    long = int(steps / (1 - spec.p) * 2) + 100
    mask = core_algorithms.pseudo_sync_mask(exp.seed, exp.workers, long, spec.p, spec.warmup_steps,
                                            spec.skip_draws)
    return core_algorithms.steps_for_gradient_budget(mask, steps - spec.warmup_steps) + spec.warmup_steps


def make_plan(exp: Experiment, spec: AlgorithmSpec, world_size: int) -> core_algorithms.Plan:
    return core_algorithms.plan(spec.name, workers=world_size, steps=planned_steps(exp, spec), seed=exp.seed,
                                warmup_steps=spec.warmup_steps, sync_every=spec.sync_every,
                                p=spec.effective_p, skip_draws=spec.skip_draws)


class RankFiles:
    """This rank's rows and heartbeat; rewritten whole and atomically on each flush."""

    def __init__(self, out: Path, algorithm: str, rank: int):
        self.dir = rank_dir(out, algorithm)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.steps_path = self.dir / f"rank{rank}.steps.parquet"
        self.metrics_path = self.dir / f"rank{rank}.metrics.csv"
        self.progress_path = self.dir / f"rank{rank}.progress.json"
        self.metrics: list[tuple] = []
        self.state = {"rank": rank, "pid": os.getpid(), "step": -1, "status": "starting",
                      "in_collective": False, "time": time.time()}

    def load_until(self, step: int) -> list[tuple]:
        """Rows of an earlier attempt before ``step`` (resume); returns the step rows."""
        rows: list[tuple] = []
        if self.steps_path.exists():
            df = pd.read_parquet(self.steps_path)
            rows = [tuple(r) for r in df[df["step"] < step][list(STEP_COLUMNS)].itertuples(index=False)]
        if self.metrics_path.exists():
            df = pd.read_csv(self.metrics_path)
            self.metrics = [tuple(r) for r in df[df["step"] < step][list(METRIC_COLUMNS)]
                            .itertuples(index=False)]
        return rows

    def flush(self, step_rows: list[tuple]) -> None:
        io.write_parquet(self.steps_path, pd.DataFrame(step_rows, columns=list(STEP_COLUMNS)))
        io.write_csv(self.metrics_path, pd.DataFrame(self.metrics, columns=list(METRIC_COLUMNS)))

    def beat(self) -> None:
        # No fsync: a heartbeat only needs to be visible to the launcher on this host, and often.
        tmp = self.progress_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({**self.state, "time": time.time()}))
        os.replace(tmp, self.progress_path)


def heartbeat(files: RankFiles, comm: dist.TorchComm, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_EVERY_S):
        files.state["in_collective"] = comm.in_collective
        files.beat()


def evaluate(model: torch.nn.Module, batches: list, comm: dist.TorchComm, device: torch.device) -> float:
    """Held-out loss of this rank's model, averaged over the ranks."""
    model.eval()
    with torch.no_grad():
        losses = [float(compute_loss(model, _to(b, device))) for b in batches]
    return comm.mean_scalar(sum(losses) / len(losses))


def _to(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


def run(exp: Experiment, name: str, out: Path, ctx: dist.DistContext, *, fault: FaultSpec | None = None,
        resume: bool = False, attempt: int = 0) -> None:
    spec = exp.algorithm(name)
    plan = make_plan(exp, spec, ctx.world_size)
    torch.manual_seed(exp.seed)  # the same initial model on every rank; DDP also broadcasts rank 0's
    model = build_model(exp.workload.model).to(ctx.device)
    dist.flatten_([p for p in model.parameters() if p.requires_grad])  # syncs then need no copy
    optimizer = build_optimizer(model.parameters(), exp.train)
    comm = dist.TorchComm(ctx, payload=spec.payload_dtype, per_tensor=spec.per_tensor_allreduce)
    # PyTorch's default bucket layout (1 MiB first bucket) unless a cap is asked for; the simulator
    # charges the same layout (AlgorithmSpec.first_bucket_mb).
    cap = {} if spec.torch_bucket_cap_mb is None else {"bucket_cap_mb": spec.torch_bucket_cap_mb}
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None, **cap)
    data = build_data(exp.workload, rank=ctx.rank, world_size=ctx.world_size, seed=exp.seed)
    eval_data = data.eval_batches(exp.train.eval_batches)
    files = RankFiles(out, name, ctx.rank)
    start, position, clock_s, restored = 0, 0, 0.0, None
    if resume:
        restored = _agree_on_checkpoint(out, name, ctx, comm)
    if restored is not None:
        start, position, clock_s = restored["next_step"], restored["data_position"], restored["clock_s"]
    timer = StepTimer(algorithm=name, worker=ctx.rank, zero=comm.common_clock(), device=ctx.device,
                      run=attempt, offset_s=clock_s)
    ddp_timer = DDPCommTimer(timer, dist.PAYLOAD_DTYPES[spec.payload_dtype])
    ddp.register_comm_hook(ddp_timer, ddp_timed_hook)
    setup = Setup(model=model, optimizer=optimizer, spec=spec, train=exp.train,
                  kinds=plan.worker_kinds(ctx.rank), sync_after=plan.sync_after, comm=comm, timer=timer,
                  loss_fn=compute_loss, ddp=ddp, ddp_timer=ddp_timer, grad_accum=exp.workload.grad_accum,
                  device=ctx.device)
    algo = ALGORITHM_CLASSES[name](setup)
    if restored is not None:
        model.load_state_dict(restored["model"])
        optimizer.load_state_dict(restored["optimizer"])
        algo.load_state_dict(restored["algorithm"])
        checkpoint.set_rng_state(restored["rng"])
        timer.rows = files.load_until(start)
    else:
        torch.manual_seed(exp.seed + 1 + ctx.rank)  # per-rank randomness (dropout) from here on

    pos = [position]

    def next_batch():
        batch = data.train_batch(pos[0])
        pos[0] += 1
        return _to(batch, ctx.device)

    stop = threading.Event()
    files.state["status"] = "running"
    files.state["step"] = start - 1
    files.beat()
    beat = threading.Thread(target=heartbeat, args=(files, comm, stop), daemon=True)
    beat.start()
    last_flush = last_print = time.perf_counter()
    try:
        for step in range(start, plan.steps):
            if fault is not None and fault.rank == ctx.rank and step >= fault.step:
                _inject(fault, setup, files)
            loss = algo.step(step, next_batch)
            end_s = timer.last_end_s
            last = step == plan.steps - 1
            eval_loss = math.nan
            if last or (exp.train.eval_every and (step + 1) % exp.train.eval_every == 0):
                with _paused(timer):
                    eval_loss = evaluate(model, eval_data, comm, ctx.device)
            files.metrics.append(("real", name, attempt, ctx.rank, step, end_s, loss,
                                  lr_at(exp.train, step, plan.steps), eval_loss))
            files.state["step"] = step
            checkpoint_now = exp.train.checkpoint_every and (step + 1) % exp.train.checkpoint_every == 0
            if checkpoint_now or last or time.perf_counter() - last_flush > _flush_interval(timer.rows):
                with _paused(timer):
                    files.flush(timer.rows)
                    if checkpoint_now and not last:
                        checkpoint.save(out, name, ctx.rank, step + 1, {
                            "next_step": step + 1, "data_position": pos[0], "clock_s": end_s,
                            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "algorithm": algo.state_dict(), "rng": checkpoint.rng_state()})
                last_flush = time.perf_counter()
            if ctx.rank == 0 and (time.perf_counter() - last_print > PROGRESS_EVERY_S or last):
                last_print = time.perf_counter()
                print(f"[{name}] step {step + 1}/{plan.steps}  loss {loss:.4f}  t {end_s:.1f}s"
                      + ("" if math.isnan(eval_loss) else f"  eval {eval_loss:.4f}"), file=sys.stderr,
                      flush=True)
    finally:
        stop.set()
    files.state["status"] = "done"
    files.beat()


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
    """The newest checkpoint step every rank holds (ranks may have died a checkpoint apart)."""
    mine = checkpoint.steps_saved(out, name, ctx.rank)
    step = int(comm.reduce_scalar(mine[-1] if mine else -1, "min"))
    if step < 0:
        return None
    if step not in mine:
        raise RuntimeError(f"rank {ctx.rank} lacks the checkpoint of step {step} that the others hold")
    return checkpoint.load(out, name, ctx.rank, step, ctx.device)


def _inject(fault: FaultSpec, setup: Setup, files: RankFiles) -> None:
    if fault.kind == "crash":
        files.beat()
        os._exit(CRASH_EXIT_CODE)
    if fault.kind == "hang":
        while True:
            time.sleep(3600)
    setup.slow_factor = fault.factor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m palsgd.real.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", required=True, type=Path, help="resolved experiment (JSON)")
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--fault", default=None, help="rank=R,step=S,kind=crash|hang|slow[,factor=F]")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--attempt", type=int, default=0)
    args = parser.parse_args(argv)
    die_with_parent()
    exp = from_dict(json.loads(args.experiment.read_text()))
    fault = FaultSpec.parse(args.fault) if args.fault else None
    ctx = dist.init(threads=exp.train.threads_per_rank)
    try:
        run(exp, args.algorithm, args.out, ctx, fault=fault, resume=args.resume, attempt=args.attempt)
    finally:
        dist.teardown()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: C++ destructors of background threads (gloo, the rendezvous store)
    # racing at exit occasionally aborted a finished rank (SIGABRT, "terminate called without an active
    # exception": 5 of 48 validation runs). Every result file is written, closed and renamed by now.
    os._exit(code)
