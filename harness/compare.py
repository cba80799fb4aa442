"""Predicted vs measured: the comparison table and its error summary.

comparison.csv, one row per (case, algorithm, metric):

    case, workload, network, ranks, algorithm, metric, predicted, measured, error_pct

``error_pct`` = 100 (predicted - measured) / measured for times; for ``speedup_vs_ddp`` it is the
difference in percentage points of speedup, 100 (predicted - measured), which is what "within 5
percentage points" means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("step_time_mean_s", "wall_clock_s", "speedup_vs_ddp")
COMPARISON_COLUMNS = ("case", "workload", "network", "ranks", "algorithm", "metric", "predicted", "measured",
                      "error_pct")


def compare(predicted: pd.DataFrame, measured: pd.DataFrame, *, case: str = "", workload: str = "",
            network: str = "", ranks: int = 0) -> pd.DataFrame:
    """Rows of the comparison table for one experiment; Monte-Carlo runs are averaged first."""
    pred = predicted.groupby("algorithm", sort=False)[list(METRICS)].mean()
    meas = measured.groupby("algorithm", sort=False)[list(METRICS)].mean()
    rows = []
    for algorithm in meas.index.intersection(pred.index):
        for metric in METRICS:
            p, m = float(pred.loc[algorithm, metric]), float(meas.loc[algorithm, metric])
            if metric == "speedup_vs_ddp" and algorithm == "ddp":
                continue  # 1 by definition on both sides
            rows.append((case, workload, network, ranks, algorithm, metric, p, m, error_pct(metric, p, m)))
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def error_pct(metric: str, predicted: float, measured: float) -> float:
    if not (np.isfinite(predicted) and np.isfinite(measured)):
        return float("nan")
    if metric == "speedup_vs_ddp":
        return 100.0 * (predicted - measured)
    return 100.0 * (predicted - measured) / measured if measured else float("nan")


def summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per metric: rows, median, geometric-mean and maximum of |error|."""
    out = []
    for metric, g in comparison.groupby("metric", sort=False):
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
    if comparison.empty:
        return "no comparable rows"
    view = comparison.copy()
    view["error"] = [f"{e:+.1f} {'pp' if m == 'speedup_vs_ddp' else '%'}"
                     for e, m in zip(view["error_pct"], view["metric"], strict=True)]
    cols = [c for c in ("case", "algorithm", "metric", "predicted", "measured", "error") if c in view]
    lines = [view[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    for row in summary(comparison).itertuples():
        lines.append(f"{row.metric}: median |error| {row.median_abs_error:.1f} {row.unit}, geometric mean "
                     f"{row.gmean_abs_error:.1f} {row.unit}, max {row.max_abs_error:.1f} {row.unit} ({row.rows} rows)")
    return "\n".join(lines)
