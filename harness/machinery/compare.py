"""Predicted vs measured: the comparison table and its error summary.

comparison.csv, one row per (case, algorithm, metric):

    case, workload, network, ranks, algorithm, metric, predicted, measured, error_pct

``error_pct`` = 100 (predicted - measured) / measured for times; for ``speedup_vs_ddp`` it is the
difference in percentage points of speedup, 100 (predicted - measured), which is what "within 5
percentage points" means. Beside it the summary and the printed table give the relative error of every
metric, 100 |predicted / measured - 1| (``rel_error_pct``): at a 2-3.5x speedup a 10 % error in step time
is 20-35 pp, so pp alone overstates the error of large speedups.

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
PAIRED = ("wait_s",)
"""Compared with the simulated run of the same seed even with real compute: the waits at barriers depend on
which worker drew a slow step when, and emulated accelerators draw exactly the simulator's run-0 factors
(with emulated accelerators every metric is paired: ``pipeline.paired_metrics``)."""
BYTES = "bytes_sent_per_worker"
BYTES_TOLERANCE = 0.01
"""Relative difference of bytes sent beyond which sim and run do not model the same communication."""
COMPARISON_COLUMNS = ("case", "workload", "network", "ranks", "algorithm", "metric", "predicted", "measured",
                      "error_pct")


def compare(predicted: pd.DataFrame, measured: pd.DataFrame, *, case: str = "", workload: str = "",
            network: str = "", ranks: int = 0, metrics: tuple[str, ...] = COMPARED_METRICS,
            paired: tuple[str, ...] = PAIRED) -> pd.DataFrame:
    """Rows of the comparison table for one experiment; Monte-Carlo runs are averaged first, except for
    the ``paired`` metrics: those come from the simulated run of the real run's seed (run 0), which drew the
    real run's plan and, with emulated accelerators, its compute factors (``core/variability.py``)."""
    columns = [*metrics, BYTES]
    pred = predicted.groupby("algorithm", sort=False)[columns].mean()
    same_seed = predicted[predicted["run"] == 0] if "run" in predicted else predicted.iloc[:0]
    for metric in (m for m in paired if m in metrics and len(same_seed)):
        pred[metric] = same_seed.groupby("algorithm", sort=False)[metric].mean()
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


def rel_error_pct(predicted, measured):
    """100 |predicted / measured - 1|, for any metric (NaN where nothing was measured)."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m != 0, 100.0 * np.abs(p / m - 1), np.nan)


def summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per metric: rows, median, geometric-mean and maximum of |error| (in the metric's unit), and the
    median and maximum relative error 100 |predicted / measured - 1| (%)."""
    out = []
    for metric, g in comparison[comparison["metric"].isin(SUMMARISED)].groupby("metric", sort=False):
        g = g[g["error_pct"].notna()]
        err = g["error_pct"].abs()
        if err.empty:
            continue
        gmean = float(np.exp(np.log(np.maximum(err, 1e-9)).mean()))
        unit = "pp" if metric == "speedup_vs_ddp" else "%"
        rel = pd.Series(rel_error_pct(g["predicted"], g["measured"])).dropna()
        out.append({"metric": metric, "rows": len(err), "median_abs_error": float(err.median()),
                    "gmean_abs_error": gmean, "max_abs_error": float(err.max()), "unit": unit,
                    "median_rel_error_pct": float(rel.median()), "max_rel_error_pct": float(rel.max())})
    return pd.DataFrame(out, columns=["metric", "rows", "median_abs_error", "gmean_abs_error", "max_abs_error",
                                      "unit", "median_rel_error_pct", "max_rel_error_pct"])


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
    # for times |error| is already relative; a speedup's pp gets its relative error beside it
    view["relative"] = [f"{r:.1f} %" if m == "speedup_vs_ddp" else ""
                        for r, m in zip(rel_error_pct(view["predicted"], view["measured"]), view["metric"],
                                        strict=True)]
    cols = [c for c in ("case", "algorithm", "metric", "predicted", "measured", "error", "relative") if c in view]
    lines = [*lines, view[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    for row in summary(comparison).itertuples():
        rel = (f"; relative |predicted/measured - 1| median {row.median_rel_error_pct:.1f} %, max "
               f"{row.max_rel_error_pct:.1f} %" if row.unit == "pp" else "")
        lines.append(f"{row.metric}: median |error| {row.median_abs_error:.1f} {row.unit}, geometric mean "
                     f"{row.gmean_abs_error:.1f} {row.unit}, max {row.max_abs_error:.1f} {row.unit} ({row.rows} rows)"
                     + rel)
    return "\n".join(lines)
