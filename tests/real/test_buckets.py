"""The all-reduce and broadcast calls the real code makes (2 gloo ranks, ``comm_calls.py``) are the ones
``core/buckets.py`` lays out and the simulator charges."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from palsgd.core import buckets
from palsgd.core.config import load
from palsgd.core.model_facts import model_facts
from palsgd.real.dist import flat_view, flatten_
from palsgd.real.models import build_model
from palsgd.real.optim import build_optimizer
from palsgd.sim import collectives
from palsgd.sim.costs import step_costs

sys.path.insert(0, str(Path(__file__).parent))
from comm_calls import CASES, WORKLOADS


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    out = tmp_path_factory.mktemp("calls") / "calls.pt"
    subprocess.run([sys.executable, str(Path(__file__).parent / "comm_calls.py"), str(out)], check=True,
                   timeout=600)
    return torch.load(out)


def experiment(workload, case):
    algorithm, overrides, _kind = CASES[case]
    exp = load(workload=workload, cluster="cpu-2core-gloo", overrides=overrides)
    return exp, exp.algorithm(algorithm)


@pytest.mark.slow
@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("case", ["ddp", "ddp_capped", "ddp_accum", "ddp_int8"])
def test_ddp_buckets_are_pytorchs(calls, workload, case):
    exp, spec = experiment(workload, case)
    facts = model_facts(exp.workload.model)
    elem_bytes = buckets.ddp_elem_bytes(spec.payload_dtype)  # 4 for all of these: fp32, and fp32 under int8
    expected = buckets.ddp_bucket_bytes(facts.param_numels, spec.bucket_mib, spec.first_bucket_mib, elem_bytes)
    assert calls[workload, case]["all_reduce"] == expected
    costs = step_costs(exp, spec)
    assert costs.bucket_bytes_sent == pytest.approx(sum(collectives.bytes_sent(exp.cluster, b) for b in expected))
    assert len(costs.bucket_s) == len(expected)


@pytest.mark.slow
@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("case", ["local_sgd", "diloco", "palsgd_bf16", "diloco_per_tensor"])
def test_sync_calls_are_the_ones_charged(calls, workload, case):
    exp, spec = experiment(workload, case)
    facts = model_facts(exp.workload.model)
    flat = [facts.param_numels[i] for i in buckets.flat_order(facts.param_ndims)]
    expected = buckets.sync_call_bytes(flat, facts.buffer_numels, spec.payload_bytes_per_param,
                                       per_tensor=spec.per_tensor_allreduce)
    assert calls[workload, case]["all_reduce"] == expected
    assert calls[workload, case]["broadcast"] == []  # local steps run outside DDP
    costs = step_costs(exp, spec)
    T = lambda b: collectives.allreduce_time(exp.cluster, b)  # noqa: E731
    assert costs.sync_s == pytest.approx(collectives.barrier_time(exp.cluster) + sum(T(b) for b in expected))


@pytest.mark.slow
@pytest.mark.parametrize("workload", WORKLOADS)
def test_warmup_that_syncs_optimizer_state_makes_one_more_call(calls, workload):
    exp, spec = experiment(workload, "warmup_state")
    made = calls[workload, "warmup_state"]["all_reduce"]
    ddp_calls = calls[workload, "ddp"]["all_reduce"]
    payload = 4 * exp.workload.params
    assert made == [*ddp_calls, exp.train.optimizer_state_tensors * payload]
    costs = step_costs(exp, spec)
    assert costs.warmup_extra_s == pytest.approx(collectives.allreduce_time(exp.cluster, made[-1]))


@pytest.mark.slow
@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("case", ["ddp", "ddp_accum", "warmup_state"])
def test_ddp_broadcasts_the_buffers_once_a_step_as_charged(calls, workload, case):
    """PyTorch's default ``broadcast_buffers=True``: the model's buffers from rank 0 before the step's
    first forward (one broadcast per dtype; none for a model without buffers, none under ``no_sync``)."""
    exp, spec = experiment(workload, case)
    facts = model_facts(exp.workload.model)
    expected = buckets.ddp_buffer_broadcast_bytes(facts.buffer_numels, facts.int_buffer_numels)
    # The two broadcasts run concurrently, so the order they start in is not promised: compare the calls
    # as a multiset (how many, which bytes), then what the simulator charges for them.
    assert sorted(calls[workload, case]["broadcast"]) == sorted(expected)
    assert (expected != []) == (workload == "resnet-tiny")
    costs = step_costs(exp, spec)
    assert costs.buffer_broadcast_s == pytest.approx(collectives.broadcast_time(exp.cluster, sum(expected)))
    assert costs.buffer_broadcast_bytes == pytest.approx(
        sum(collectives.broadcast_bytes_sent(exp.cluster, b) for b in expected))


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("cap_mb", [None, 0.2])
def test_bucket_layout_equals_torchs_own_function(workload, cap_mb):
    """torch's ``_compute_bucket_assignment_by_size`` on the built model's gradients in the order a
    backward produces them (reverse registration), as DDP's reducer calls it when it rebuilds."""
    model = build_model(load(workload=workload).workload.model)
    params = [p for p in model.parameters() if p.requires_grad]
    cap = int((cap_mb or 25) * buckets.MIB)
    first = buckets.MIB if cap_mb is None else cap
    order = list(reversed(range(len(params))))
    indices, _limits = dist._compute_bucket_assignment_by_size(
        [params[i] for i in order], [first, cap], [False] * len(params), order)
    theirs = [sum(params[i].numel() for i in bucket) for bucket in indices]
    assert buckets.ddp_bucket_numels([p.numel() for p in params], cap, first) == theirs


@pytest.mark.parametrize("workload", WORKLOADS)
def test_flat_buffer_is_laid_out_in_the_optimizers_group_order(workload):
    """What PyTorch's ``average_parameters(optimizer.param_groups)`` flattens, element for element, and
    what ``core.buckets.flat_order`` says the simulator's syncs and fragments cut."""
    exp = load(workload=workload)
    model = build_model(exp.workload.model)
    flat = flatten_(model)
    grouped = [p for g in build_optimizer(model.parameters(), exp.train).param_groups for p in g["params"]]
    view = flat_view(grouped)
    assert view is not None and view.data_ptr() == flat.data_ptr() and view.numel() == flat.numel()
    facts = model_facts(exp.workload.model)
    assert facts.param_ndims == tuple(p.ndim for p in model.parameters())
    assert facts.int_buffer_numels == tuple(b.numel() for b in model.buffers() if not b.is_floating_point())
    assert [p.numel() for p in grouped] == [facts.param_numels[i] for i in buckets.flat_order(facts.param_ndims)]
