"""Waits like for like: with the same seed, the simulator and the emulated accelerators of a real run draw
the same compute factor for the same worker and step (``core/variability.py``), although the simulator
draws a run in blocks (one per sync interval, DDP in chunks) and an accelerator all its steps at once."""

import numpy as np
import pytest

from palsgd.core.config import load
from palsgd.core.variability import ComputeFactors
from palsgd.real.emulated_compute import emulate
from palsgd.real.models import build_model
from palsgd.real.optim import build_optimizer
from palsgd.sim.engine import simulate

C_S = 0.2
VARIES = ["cluster.variability.jitter_cv=0.3", "cluster.variability.straggler_prob=0.1",
          "cluster.variability.straggler_factor=3", "cluster.variability.slow_workers=1",
          "cluster.variability.slow_factor=1.5"]


def _experiment(algorithm):
    return load(workload="gpt-tiny", steps=14, algorithms=[algorithm], overrides=[
        'train.compute="emulated"', "cluster.nodes=1", "cluster.gpus_per_node=3", f"cluster.compute.step_time_s={C_S}",
        "cluster.compute.data_time_s=0", "workload.data_time_s=0", "algorithm.sync_every=4",
        "algorithm.warmup_steps=3", "cluster.failures.mtbf_s=0", *VARIES])


def _real_factors(exp, steps):
    out = []
    for rank in range(exp.workers):
        model = build_model(exp.workload.model)
        emu, _ = emulate(model, build_optimizer(model.parameters(), exp.train), exp, rank, steps)
        out.append(emu.factors)
    return np.array(out)


@pytest.mark.parametrize("algorithm", ["ddp", "local_sgd", "diloco"])
def test_simulator_and_emulated_accelerators_draw_the_same_factors(algorithm):
    exp = _experiment(algorithm).replace(repeats=1)
    steps = simulate(exp, record_steps=True).steps
    compute = steps[(steps["phase"] == "compute") & (steps["run"] == 0)]
    sim = np.full((exp.workers, exp.nominal_steps), np.nan)
    sim[compute["worker"].to_numpy(), compute["step"].to_numpy()] = (compute["end_s"] - compute["start_s"]) / C_S
    real = _real_factors(exp, exp.nominal_steps)
    drawn = ~np.isnan(sim)  # every gradient step of every worker
    assert drawn.sum() >= exp.workers * (exp.nominal_steps - 4)
    np.testing.assert_allclose(sim[drawn], real[drawn], rtol=1e-9)
    assert real.std() > 0.1  # the factors vary: the check is not of ones against ones


def test_draws_do_not_depend_on_how_the_steps_are_blocked():
    exp = _experiment("local_sgd")
    whole = ComputeFactors(exp.cluster.variability, 3, 11).draw(20)
    blocks = ComputeFactors(exp.cluster.variability, 3, 11)
    np.testing.assert_array_equal(np.hstack([blocks.draw(n) for n in (3, 4, 4, 9)]), whole)
