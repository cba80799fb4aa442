"""Fit the simulator's all-reduce cost model to measured all-reduce times.

The model is the simulator's own (``sim/collectives.py``, ``allreduce_time``), evaluated on the cluster
the profile will describe (one node, n workers, the link in ``intra_node``), so a profile reproduces the
measurements in the simulator by construction. For a ring of n ranks and a message of S bytes:

    T(S) = base + 2(n-1)·step(S/n),   step(c) = α + c/B               (c <= segment, or no segment)
                                      step(c) = max(c/B + α/k, α + s/B), k = ceil(c/s)   (pipelined)
    α = 2·latency + step_overhead  (step_latency = "rtt": a gloo ring step waits about one round trip)
    B = bandwidth x efficiency, capped at window / (2·latency)

Fixed: latency = half the TCP round trip measured between the ranks (it cannot be told apart from the
software overhead by all-reduce timings alone), efficiency = 1 (the fitted B is the *effective*
bandwidth; line rate and efficiency cannot be told apart either), base = 0 (at one n it is
indistinguishable from α). Fitted: B and step_overhead (continuous, Nelder-Mead on the squared error of
log-time, i.e. relative error), segment and window (a small grid). Between grid points the Bayesian
information criterion n·ln(SSE/n) + k·ln(n) decides (Schwarz 1978; k counts B, overhead, and segment and
window when they are used), so a pipelining or window term is kept only when it explains the data better
than noise would.

``fit_tiers`` fits one series, or several tiers together (all-reduce among the ranks of one node and among
one rank per node): one bandwidth and latency per tier, one step_overhead, segment and window for all,
since a profile holds one transport. The simulator then prices each tier of the whole cluster with its own link.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.cluster import ClusterSpec, LinkSpec, TransportSpec
from ..sim.collectives import allreduce_time

SEGMENTS = (0, 2**16, 2**18, 2**20, 2**22)
WINDOWS = (0, 2**18, 2**20, 2**22)


@dataclass(frozen=True)
class Series:
    """All-reduce times of one tier: ``sizes`` bytes on ``ranks`` ranks, whose ring runs over one kind of
    link with TCP round trip ``rtt_s`` (the ranks of one node, or one rank per node)."""

    sizes: tuple[float, ...]
    times: tuple[float, ...]
    ranks: int
    rtt_s: float = 0.0


@dataclass(frozen=True)
class TiersFit:
    """One transport shared by every tier (a profile has one), one link per tier."""

    transport: TransportSpec
    links: tuple[LinkSpec, ...]
    """Per series: effective bandwidth and latency (half its round trip)."""
    ranks: tuple[int, ...]
    predicted_s: tuple[tuple[float, ...], ...]
    rms_log_error: float
    """Root-mean-square of log(predicted / measured) over all sizes of all series."""

    def tier_cluster(self, tier: int, base: ClusterSpec | None = None) -> ClusterSpec:
        """The one-node cluster whose ring the simulator prices as series ``tier`` was fitted."""
        return one_node(base or ClusterSpec(), self.ranks[tier], self.links[tier], self.transport)


def model_cluster(base: ClusterSpec, ranks: int, kind: str, latency_s: float, bandwidth_Bps: float,
                  overhead_s: float, segment: int, window: int) -> ClusterSpec:
    """One node of ``ranks`` workers whose ring runs over ``intra_node`` with these transport values."""
    link = LinkSpec(bandwidth_gbps=bandwidth_Bps * 8 / 1e9, latency_us=latency_s * 1e6)
    transport = TransportSpec(kind=kind, efficiency=1.0, base_latency_us=0.0,
                              step_overhead_us=overhead_s * 1e6, step_latency="rtt",
                              window_bytes=int(window), segment_bytes=int(segment))
    return one_node(base, ranks, link, transport)


def one_node(base: ClusterSpec, ranks: int, link: LinkSpec, transport: TransportSpec) -> ClusterSpec:
    """``base`` reduced to one node of ``ranks`` workers, ringing over ``link``."""
    return dataclasses.replace(base, nodes=1, gpus_per_node=ranks, intra_node=link, inter_node=link,
                               transport=transport, allreduce="ring",
                               wan=dataclasses.replace(base.wan, groups=1))


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, step: float = 0.5, iters: int = 200,
                tol: float = 1e-9) -> np.ndarray:
    """Minimise ``f`` from ``x0`` (Nelder & Mead 1965; standard coefficients 1, 2, 0.5, 0.5)."""
    pts = [x0] + [x0 + step * e for e in np.eye(len(x0))]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < tol:
            break
        centroid = np.mean(pts[:-1], axis=0)
        refl = centroid + (centroid - pts[-1])
        fr = f(refl)
        if fr < vals[0]:
            exp = centroid + 2 * (centroid - pts[-1])
            fe = f(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = centroid + 0.5 * (pts[-1] - centroid)
            fc = f(con)
            if fc < vals[-1]:
                pts[-1], vals[-1] = con, fc
            else:  # shrink towards the best point
                pts = [pts[0]] + [pts[0] + 0.5 * (p - pts[0]) for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    return pts[int(np.argmin(vals))]


def _initial(sizes: np.ndarray, times: np.ndarray, ranks: int) -> tuple[float, float]:
    """α and B from a relative least-squares line T = a + b·S (a = 2(n-1)·α, b = 2(n-1)/n / B)."""
    w = 1 / times
    a, b = np.linalg.lstsq(np.c_[w, sizes * w], np.ones_like(times), rcond=None)[0]
    steps = 2 * (ranks - 1)
    alpha = max(a / steps, 1e-6)
    bw = steps / ranks / b if b > 0 else sizes.max() / times.min()
    return alpha, bw


def fit_tiers(series: Sequence[Series], *, kind: str = "gloo", base: ClusterSpec | None = None) -> TiersFit:
    """Fit one bandwidth per series and a shared step_overhead, segment and window to all of them (latency:
    half of each series' round trip)."""
    base = base or ClusterSpec()
    sizes = [np.asarray(s.sizes, float) for s in series]
    log_t = np.concatenate([np.log(np.asarray(s.times, float)) for s in series])
    latency = [max(s.rtt_s, 0.0) / 2 for s in series]
    starts = [_initial(x, np.asarray(s.times, float), s.ranks) for x, s in zip(sizes, series, strict=True)]
    alpha0 = min(a - 2 * lat for (a, _), lat in zip(starts, latency, strict=True))

    def clusters_of(x: np.ndarray, seg: int, win: int) -> list[ClusterSpec]:
        overhead = math.exp(x[-1]) if x[-1] > math.log(1e-7) else 0.0
        return [model_cluster(base, s.ranks, kind, lat, math.exp(log_bw), overhead, seg, win)
                for s, lat, log_bw in zip(series, latency, x[:-1], strict=True)]

    def predict(clusters: list[ClusterSpec]) -> list[np.ndarray]:
        return [np.array([allreduce_time(c, b) for b in x]) for c, x in zip(clusters, sizes, strict=True)]

    best = None
    x0 = np.array([*(math.log(bw) for _, bw in starts), math.log(max(alpha0, 1e-6))])
    for seg in SEGMENTS:
        for win in WINDOWS:
            def loss(x, seg=seg, win=win):
                if not -30 < x[-1] < 5 or not all(0 < v < 40 for v in x[:-1]):
                    return 1e9
                return float(np.sum((np.log(np.concatenate(predict(clusters_of(x, seg, win)))) - log_t) ** 2))
            x = nelder_mead(loss, x0, iters=200 * len(x0))
            val = loss(x)
            k = len(x) + (seg > 0) + (win > 0)
            bic = len(log_t) * math.log(max(val, 1e-30) / len(log_t)) + k * math.log(len(log_t))
            if best is None or bic < best[0]:
                best = (bic, val, x, seg, win)
    _, val, x, seg, win = best
    clusters = clusters_of(x, seg, win)
    return TiersFit(clusters[0].transport, tuple(c.intra_node for c in clusters), tuple(s.ranks for s in series),
                    tuple(tuple(p) for p in predict(clusters)), math.sqrt(val / len(log_t)))
