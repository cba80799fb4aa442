"""The run table is derived from the step table by one function; numbers checked by hand."""

import numpy as np
import pandas as pd

from palsgd.core import schema


def _steps(rows):
    return pd.DataFrame(rows, columns=list(schema.STEP_COLUMNS))


def test_summarize_by_hand():
    rows = []
    for algo, comm in (("ddp", 0.5), ("local_sgd", 0.0)):
        for w in range(2):
            t = 0.0
            for step in range(2):
                rows.append(("sim", algo, 0, w, step, "compute", t, t + 1.0, 0.0))
                t += 1.0
                if comm:
                    rows.append(("sim", algo, 0, w, step, "allreduce", t, t + comm, 100.0))
                    t += comm
    runs = schema.summarize_steps(_steps(rows))
    ddp = runs[runs.algorithm == "ddp"].iloc[0]
    local = runs[runs.algorithm == "local_sgd"].iloc[0]
    assert ddp.wall_clock_s == 3.0 and ddp.steps == 2 and ddp.workers == 2
    assert ddp.compute_s == 2.0 and ddp.comm_exposed_s == 1.0 and ddp.syncs == 2
    assert ddp.bytes_sent_per_worker == 200.0 and ddp.step_time_mean_s == 1.5
    assert local.wall_clock_s == 2.0 and local.speedup_vs_ddp == 1.5
    assert ddp.speedup_vs_ddp == 1.0
    assert list(runs.columns) == list(schema.RUN_COLUMNS)


def test_speedup_is_nan_without_ddp():
    rows = [("sim", "palsgd", 0, 0, 0, "compute", 0.0, 1.0, 0.0)]
    assert np.isnan(schema.summarize_steps(_steps(rows)).speedup_vs_ddp.iloc[0])


def test_phase_totals_and_trace():
    rows = [("real", "ddp", 0, 0, 0, "compute", 0.0, 1.0, 0.0), ("real", "ddp", 0, 0, 0, "wait", 1.0, 1.25, 0.0),
            ("real", "ddp", 0, 0, 1, "compute", 1.25, 2.25, 0.0)]
    totals = schema.phase_totals(_steps(rows))
    compute = totals[totals.phase == "compute"].iloc[0]
    assert compute.duration_s == 2.0 and compute["count"] == 2
    trace = schema.to_chrome_trace(_steps(rows))
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [e["ts"] for e in events] == [0.0, 1e6, 1.25e6] and events[1]["dur"] == 250000.0


def test_validate_rejects_unknown_phase():
    bad = _steps([("sim", "ddp", 0, 0, 0, "teleport", 0.0, 1.0, 0.0)])
    try:
        schema.validate_steps(bad)
    except ValueError as err:
        assert "teleport" in str(err)
    else:
        raise AssertionError("an unknown phase was accepted")
