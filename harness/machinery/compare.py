"""Predicted vs measured: the comparison table and its error summary.

comparison.csv, one row per (case, algorithm, metric):

    case, workload, network, ranks, algorithm, metric, predicted, measured, error_pct

``error_pct`` = 100 (predicted - measured) / measured for times; for ``speedup_vs_ddp`` it is the
difference in percentage points of speedup, 100 (predicted - measured), which is what "within 5
percentage points" means.

Times are compared only where the simulator sends what the run sent: an algorithm whose predicted
bytes sent per worker differ from the measured ones by more than ``BYTES_TOLERANCE`` gets a single
``bytes_sent_per_worker`` row instead, since its time errors would measure the wrong communication.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...core.schema import COMPARED_METRICS

SUMMARISED = (*COMPARED_METRICS, "wait_s")
"""``wait_s`` (time idle at barriers) is compared where the workers' speeds vary (the cluster suite)."""
BYTES = "bytes_sent_per_worker"
BYTES_TOLERANCE = 0.01
"""Relative difference of bytes sent beyond which sim and run do not model the same communication."""
COMPARISON_COLUMNS = ("case", "workload", "network", "ranks", "algorithm", "metric", "predicted", "measured",
                      "error_pct")


def compare(predicted: pd.DataFrame, measured: pd.DataFrame, *, case: str = "", workload: str = "",
            network: str = "", ranks: int = 0, metrics: tuple[str, ...] = COMPARED_METRICS) -> pd.DataFrame:
    """Rows of the comparison table for one experiment; Monte-Carlo runs are averaged first."""
    columns = [*metrics, BYTES]
    pred = predicted.groupby("algorithm", sort=False)[columns].mean()
    meas = measured.groupby("algorithm", sort=False)[columns].mean()
    rows = []
    for algorithm in meas.index.intersection(pred.index):
        sent_p, sent_m = float(pred.loc[algorithm, BYTES]), float(meas.loc[algorithm, BYTES])
        if bytes_differ(sent_p, sent_m):
            rows.append((case, workload, network, ranks, algorithm, BYTES, sent_p, sent_m,
                         error_pct(BYTES, sent_p, sent_m)))
            continue
        for metric in metrics:
            p, m = float(pred.loc[algorithm, metric]), float(meas.loc[algorithm, metric])
            if metric == "speedup_vs_ddp" and algorithm == "ddp":
                continue  # 1 by definition on both sides
            rows.append((case, workload, network, ranks, algorithm, metric, p, m, error_pct(metric, p, m)))
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def bytes_differ(predicted: float, measured: float) -> bool:
    """More than BYTES_TOLERANCE apart (relative to the measured bytes; any bytes against none)."""
    return abs(predicted - measured) > BYTES_TOLERANCE * abs(measured)


def error_pct(metric: str, predicted: float, measured: float) -> float:
    if not (np.isfinite(predicted) and np.isfinite(measured)):
        return float("nan")
    if metric == "speedup_vs_ddp":
        return 100.0 * (predicted - measured)
    return 100.0 * (predicted - measured) / measured if measured else float("nan")


def summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per metric: rows, median, geometric-mean and maximum of |error|."""
    out = []
    for metric, g in comparison[comparison["metric"].isin(SUMMARISED)].groupby("metric", sort=False):
        err = g["error_pct"].abs().dropna()
        if err.empty:
            continue
        gmean = float(np.exp(np.log(np.maximum(err, 1e-9)).mean()))
        unit = "pp" if metric == "speedup_vs_ddp" else "%"
        out.append({"metric": metric, "rows": len(err), "median_abs_error": float(err.median()),
                    "gmean_abs_error": gmean, "max_abs_error": float(err.max()), "unit": unit})
    return pd.DataFrame(out, columns=["metric", "rows", "median_abs_error", "gmean_abs_error", "max_abs_error",
                                      "unit"])


def format_comparison(comparison: pd.DataFrame) -> str:
    mismatched = comparison[comparison["metric"] == BYTES]
    lines = [f"{row.algorithm}: not compared: the simulator predicts {row.predicted:,.0f} bytes sent per "
             f"worker, the run measured {row.measured:,.0f} ({row.error_pct:+.1f} %); its times would "
             "measure a different communication" for row in mismatched.itertuples()]
    view = comparison[comparison["metric"].isin(COMPARED_METRICS)].copy()
    if view.empty:
        return "\n".join([*lines, "no comparable rows"])
    view["error"] = [f"{e:+.1f} {'pp' if m == 'speedup_vs_ddp' else '%'}"
                     for e, m in zip(view["error_pct"], view["metric"], strict=True)]
    cols = [c for c in ("case", "algorithm", "metric", "predicted", "measured", "error") if c in view]
    lines = [*lines, view[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    for row in summary(comparison).itertuples():
        lines.append(f"{row.metric}: median |error| {row.median_abs_error:.1f} {row.unit}, geometric mean "
                     f"{row.gmean_abs_error:.1f} {row.unit}, max {row.max_abs_error:.1f} {row.unit} ({row.rows} rows)")
    return "\n".join(lines)
