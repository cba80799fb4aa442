"""`time-to-target --export` leaves out a run with a balanced H: the description has no such axis."""

import pandas as pd

from palsgd.core import config, io, schema
from palsgd.harness.commands.convergence_export import export
from palsgd.harness.machinery import store


def test_a_balanced_run_on_a_cluster_of_mixed_speeds_is_left_out_with_a_note(tmp_path):
    exp = config.load(workload="gpt-tiny", cluster="cpu-2core-gloo", algorithms=["ddp", "diloco"], steps=60,
                      overrides=["algorithm.sync_every=balanced", "cluster.variability.slow_workers=1",
                                 "cluster.variability.slow_factor=1.5"])
    store.start(tmp_path, "run", exp)
    rows = [("real", algorithm, 0, w, step, 0.1 * step, 4.0 - step / 20, 1e-3, 4.0 - step / 20)
            for algorithm in ("ddp", "diloco") for step in range(0, 61, 5) for w in range(2)]
    store.write_table(tmp_path, io.METRICS, pd.DataFrame(rows, columns=list(schema.METRIC_COLUMNS)))
    store.finish(tmp_path)
    conv, notes = export([tmp_path], 3.0)
    assert conv.points == () and conv.ddp_steps == 20
    assert len(notes) == 1 and "diloco balances its H per replica" in notes[0] and "left out" in notes[0]
