"""Plot the cluster suite's error against time dilation K (the CSV of benchmarks/bench_dilation_error.py):

    .venv/bin/python scripts/plot_dilation_error.py docs/data/dilation_error.csv docs/img/dilation-error.png

One panel per case; step time error (predicted / measured - 1, %) per algorithm and the speedup's relative
error |predicted / measured - 1| against K on a log2 axis, each point labelled with the load average
during that run. Prints the table the figure shows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from palsgd.core.algorithms import FACTS

METRICS = {"step_time_mean_s": "step time error (%)", "speedup_vs_ddp": "speedup, |predicted/measured − 1| (%)"}


def tidy(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows[rows["metric"].isin(METRICS)].copy()
    rows["error"] = rows["error_pct"].where(rows["metric"] == "step_time_mean_s", rows["rel_error_pct"])
    rows["algorithm"] = rows["algorithm"].map(lambda a: FACTS[a].label)
    return rows


def plot(rows: pd.DataFrame, out: Path) -> None:
    cases = list(dict.fromkeys(rows["case"]))
    palette = {FACTS[a].label: FACTS[a].colour for a in FACTS}
    fig, axes = plt.subplots(len(METRICS), len(cases), figsize=(5 * len(cases), 7), squeeze=False, sharex=True)
    for i, (metric, label) in enumerate(METRICS.items()):
        for j, case in enumerate(cases):
            ax, part = axes[i][j], rows[(rows["case"] == case) & (rows["metric"] == metric)]
            sns.lineplot(part, x="time_dilation", y="error", hue="algorithm", palette=palette, marker="o", ax=ax,
                         legend=i == 0 and j == 0)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xscale("log", base=2)
            ks = sorted(part["time_dilation"].unique())
            ax.set_xticks(ks, [f"{k:g}" for k in ks])
            ax.set(xlabel="time dilation K", ylabel=label if j == 0 else "", title=case if i == 0 else "")
            if i == 0:
                for k, load in part.groupby("time_dilation")["load_mean"].first().items():
                    ax.annotate(f"load {load:.1f}", (k, ax.get_ylim()[1]), fontsize=7, ha="center", va="top")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    rows = tidy(pd.read_csv(sys.argv[1]))
    plot(rows, Path(sys.argv[2]))
    view = rows.pivot_table(index=["case", "algorithm", "metric"], columns="time_dilation", values="error")
    print(view.round(1).to_string())
    print(rows.groupby(["case", "time_dilation"])[["load_mean", "load_max", "wall_s"]].first().to_string())


if __name__ == "__main__":
    main()
