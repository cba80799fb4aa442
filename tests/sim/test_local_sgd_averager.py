"""Local SGD as PyTorch's PeriodicModelAverager (default) or torchft's LocalSGD runs it: one whole average
apart, in the bytes, the step table and the note ``palsgd simulate`` prints."""

import pytest

from palsgd.core.config import load
from palsgd.harness.commands.simulate import averager_notes
from palsgd.sim.costs import step_costs
from palsgd.sim.engine import simulate

# 29 steps (0..28), W = 4 DDP steps, H = 8: PyTorch averages after steps 4, 12, 20 and 28 (four),
# torchft after 11, 19 and 27 (three).
SETS = ["algorithm.warmup_steps=4", "algorithm.sync_every=8", "cluster.variability.jitter_cv=0"]


def experiment(averager: str):
    return load(workload="gpt-tiny", steps=29, algorithms=["local_sgd"],
                overrides=[*SETS, f'algorithm.local_sgd.averager="{averager}"'])


def test_pytorch_schedule_sends_one_average_more_than_torchft():
    runs = {a: simulate(experiment(a), record_steps=True) for a in ("pytorch", "torchft")}
    rows = {a: r.runs.iloc[0] for a, r in runs.items()}
    spec = experiment("pytorch").algorithms[0]
    assert rows["pytorch"]["syncs"] - rows["torchft"]["syncs"] == 1
    one_average = step_costs(experiment("pytorch"), spec).sync_bytes
    assert rows["pytorch"]["bytes_sent_per_worker"] - rows["torchft"]["bytes_sent_per_worker"] == \
        pytest.approx(one_average)
    for averager, after in (("pytorch", [4, 12, 20, 28]), ("torchft", [11, 19, 27])):
        steps = runs[averager].steps
        local = steps[(steps["step"] >= 4) & (steps["worker"] == 0)]  # DDP's warm-up all-reduces every step
        synced = sorted(local.loc[local["phase"] == "allreduce", "step"].unique())
        assert [int(s) for s in synced] == after


def test_simulate_says_so_for_the_default_only():
    (note,) = averager_notes(experiment("pytorch"))
    assert "4 averages in this run, 1 more than torchft's LocalSGD (3" in note
    assert averager_notes(experiment("torchft")) == []
