"""Time-dilated emulation: a small, loaded testbed standing for a larger, faster cluster.

With ``--time-dilation K`` every emulated resource runs K times slower: emulated compute sleeps K·c, K·o,
K·u and K·m (``real/emulated_compute.py``), every emulated link carries rate/K with K·delay and K·jitter
(``NetemSpec.dilated``), and every time measured is divided by K before it is stored, compared or
calibrated (``undilate``). What the emulated cluster does is unchanged; what the host adds on its own
(copies, reductions, Python, gloo's threads, veth and bridge forwarding) shrinks to 1/K of it.

Sources: D. Gupta et al., "To Infinity and Beyond: Time-Warped Network Emulation", NSDI 2006 (a time
dilation factor makes a host's resources appear K times faster to the guests it runs); D. Gupta et al.,
"DieCast: Testing Distributed Systems with an Accurate Scale Model", NSDI 2008 (dilating a scaled-down
testbed so it reproduces the full system's behaviour).
"""

from __future__ import annotations

import math

import pandas as pd

from ...core.errors import ConfigError

KEY = "--time-dilation"
TIME_COLUMNS = ("start_s", "end_s")
"""The columns of the step and metrics tables that are times (``core/schema.py``)."""


def check(factor: float, *, emulated_compute: bool, emulated_network: bool) -> float:
    """``factor`` if it can apply; else one line why. Only emulated compute and an emulated network can be
    slowed down: anything real (compute on the CPU, an unshaped loopback) would be divided by K too."""
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor >= 1):
        raise ConfigError("must be a finite number >= 1", key=KEY, value=factor, source="command line")
    if factor != 1 and not (emulated_compute and emulated_network):
        raise ConfigError("applies only with both --emulate-compute and --emulate-network (real compute or an "
                          "unshaped network cannot be slowed down)", key=KEY, value=factor, source="command line")
    return float(factor)


def undilate(table: pd.DataFrame, factor: float) -> pd.DataFrame:
    """A step or metrics table measured under dilation ``factor``, on the emulated cluster's clock: every
    time column divided by ``factor`` (the columns a table lacks are skipped)."""
    if factor == 1:
        return table
    cols = [c for c in TIME_COLUMNS if c in table.columns]
    return table.assign(**{c: table[c] / factor for c in cols})


def label(factor: float) -> str:
    """How every output names the dilation used."""
    return f"time dilation {factor:g}x" + (" (emulated times measured K times slower, divided by K)"
                                           if factor != 1 else " (none)")
