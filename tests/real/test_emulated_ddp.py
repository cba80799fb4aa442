"""DDP on emulated accelerators: the gradients are views of DDP's buckets, so the all-reduced values are
not copied back into them on the host (memory work a GPU does on the device); real runs keep PyTorch's
default copies."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, socket, sys
import torch, torch.distributed as dist
from palsgd.core.config import load
from palsgd.real.dist import DistContext
from palsgd.real.emulated_compute import emulate
from palsgd.real.models import build_model
from palsgd.real.optim import build_optimizer
from palsgd.real.worker import _wrap_in_ddp

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
dist.init_process_group("gloo", rank=0, world_size=1)
exp = load(workload="gpt-tiny", overrides=['train.compute="emulated"', "cluster.compute.step_time_s=0.01"])
spec = exp.algorithm("ddp")
ctx = DistContext(0, 1, 0, 1, torch.device("cpu"), "gloo")
for views in (False, True):
    model = build_model(exp.workload.model)
    emu, _ = emulate(model, build_optimizer(model.parameters(), exp.train), exp, 0, 4)
    ddp = _wrap_in_ddp(model, spec, ctx, bucket_views=views)
    emu.begin_step(0)
    emu.loss_fn(ddp, (None, None)).backward()
    storages = {p.grad.untyped_storage().data_ptr() for p in model.parameters()}
    print(views, len(storages), sum(1 for _ in model.parameters()))
dist.destroy_process_group()
"""


def test_emulated_ddp_gradients_are_views_of_its_buckets():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (copies, copy_storages, tensors), (views, view_storages, _) = (
        line.split() for line in done.stdout.strip().splitlines())
    assert copies == "False" and int(copy_storages) == int(tensors)  # one gradient tensor per parameter
    assert views == "True" and int(view_storages) < 5  # a few buckets hold every gradient
