"""One look for every figure: colours per algorithm and per phase, fonts, units, and SVG export.

Figures are inline SVG with text kept as text (``svg.fonttype = none``): sharp at any zoom, small, and
printable. Each figure gets its own id salt, so the clip paths of two figures in one page never collide.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import seaborn as sns

from ..core.algorithms import ALGORITHMS, FACTS

# Colours, labels and order of the algorithms: core/algorithms.py FACTS. Used by every figure.
PALETTE = {name: f.colour for name, f in FACTS.items()}
ALGORITHM_ORDER = ALGORITHMS
LABELS = {name: f.label for name, f in FACTS.items()}
# Local SGD and DiLoCo often time alike: DiLoCo, drawn after, is dashed so the line under it still shows.
MARKERS = {"ddp": "X", "local_sgd": "o", "diloco": "s", "palsgd": "D", "streaming_diloco": "^", "sparseloco": "v"}
DASHES = {"ddp": (1, 1), "local_sgd": "", "diloco": (4, 2), "palsgd": "", "streaming_diloco": (2, 1),
          "sparseloco": (3, 1, 1, 1)}

# Where a worker's time goes: (label, run-table column, step-table phases, colour). The run table's
# compute_s is data + compute + optimizer (core/schema.py); hidden all-reduce costs no wall-clock.
CATEGORIES = (
    ("compute", "compute_s", ("data", "compute", "optimizer"), "#9ecae1"),
    ("exposed communication", "comm_exposed_s", ("allreduce",), "#d62728"),
    ("waiting at barriers", "wait_s", ("wait",), "#ffbf00"),
    ("pseudo-sync", "pseudo_sync_s", ("pseudo_sync",), "#9467bd"),
    ("outer step", "outer_step_s", ("outer_step",), "#2ca02c"),
    ("failure", "failure_s", ("failure",), "#222222"),
)
PHASE_CATEGORY = {phase: label for label, _, phases, _ in CATEGORIES for phase in phases}
CATEGORY_COLOR = {label: color for label, _, _, color in CATEGORIES}

_salt = itertools.count()


def label(algorithm: str) -> str:
    return LABELS.get(algorithm, algorithm)


def color(algorithm: str) -> str:
    return PALETTE.get(algorithm, "#7f7f7f")


def ordered(algorithms) -> list[str]:
    """Algorithms in the one order every figure and table uses: DDP first, then as in ALGORITHM_ORDER."""
    rank = {a: i for i, a in enumerate(ALGORITHM_ORDER)}
    return sorted(set(algorithms), key=lambda a: (rank.get(a, len(rank)), a))


@contextmanager
def figure(width_in: float, height_in: float, nrows: int = 1, ncols: int = 1, **kwargs):
    """A figure in the report's style; yields (fig, axes)."""
    rc = {"svg.fonttype": "none", "svg.hashsalt": f"palsgd-fig-{next(_salt)}",
          "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85), plt.rc_context(rc):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width_in, height_in), squeeze=False,
                                 layout="constrained", **kwargs)
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def to_svg(fig) -> str:
    """The figure as an ``<svg>`` element ready to inline in HTML (no XML prolog, no fixed size)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # Scale with the page: keep the viewBox, drop the fixed width/height in pt.
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="figure" role="img"', text, count=1)


# --- units ---------------------------------------------------------------------------------------------

_TIME_UNITS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3), ("µs", 1e-6))


def time_unit(max_seconds: float) -> tuple[str, float]:
    """A unit in which ``max_seconds`` reads as a number from 1 to about 1000 (minutes from 2 min on)."""
    if not math.isfinite(max_seconds) or max_seconds <= 0:
        return "s", 1.0
    for name, size in _TIME_UNITS:
        if max_seconds >= (2 * size if size > 1 else size) or name == "µs":
            return name, size
    return "s", 1.0


def number(value: float) -> str:
    """Three significant digits without scientific notation for what a time unit leaves (< 10^4)."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def key_label(key: str) -> str:
    """Axis label for a dotted experiment key, with its unit from the name (``_gbps`` -> Gbit/s)."""
    units = {"_gbps": "Gbit/s", "_us": "µs", "_s": "s", "_bytes": "bytes", "_flops": "FLOP",
             "_tflops": "TFLOP/s", "_mb": "MB"}
    name = key.split(".")[-1]
    for suffix, unit in units.items():
        if name.endswith(suffix):
            return f"{key} ({unit})"
    return key
