"""Fit the simulator's all-reduce cost model to measured all-reduce times.

The model is the simulator's own (``sim/collectives.py``, ``allreduce_time``), evaluated on the cluster
the profile will describe (one node, n workers, the link in ``intra_node``), so a profile reproduces the
measurements in the simulator by construction. For a ring of n ranks and a message of S bytes:

    T(S) = base + 2(n-1)·step(S/n),   step(c) = α + c/B               (c <= segment, or no segment)
                                      step(c) = max(c/B + α/k, α + s/B), k = ceil(c/s)   (pipelined)
    α = 2·latency + step_overhead  (step_latency = "rtt": a gloo ring step waits about one round trip)
    B = bandwidth x efficiency, capped at window / (2·latency)

Fixed: latency = half the TCP round trip measured between the ranks (on one tier it cannot be told apart from
the software overhead by all-reduce timings alone), efficiency = 1 (the fitted B is the *effective*
bandwidth; line rate and efficiency cannot be told apart either), base = 0 (at one n it is
indistinguishable from α). Fitted: B and step_overhead (continuous, Nelder-Mead on the squared error of
log-time, i.e. relative error), segment and window (a small grid). Between grid points the Bayesian
information criterion n·ln(SSE/n) + k·ln(n) decides (Schwarz 1978; k counts B, overhead, and segment and
window when they are used), so a pipelining or window term is kept only when it explains the data better
than noise would.

``fit_tiers`` fits one series, or several tiers (all-reduce among the ranks of one node, then among one rank per
node), each on its own: its bandwidth and its step latency α. A profile holds one transport, so the segment and
window are those that fit the last, outermost tier best (on a cluster of several nodes every step of the flat
ring waits for its slowest, inter-node hop: that tier prices the run's all-reduces), and each tier's α is split
as 2·latency + step_overhead with the overhead of the first, innermost tier, whose wire latency is the least
(loopback); a tier's α beyond its ping round trip plus that overhead is its link's latency. Measured on 2
emulated nodes (1 Gbit/s, 5 ms; ``docs/validation.md``): a joint fit with one shared overhead left the
inter-node tier at rms log error 0.16-0.18 (its all-reduce α exceeds the ping's round trip by 1-2 ms, the
loopback's by 0.15 ms), fitted on its own 0.12; and the loopback is memory-bound beyond the 32 MiB cache (2
ranks: 16 MiB in 16 ms, 32 MiB in 75 ms), which no single bandwidth fits. The simulator then prices each tier
of the whole cluster with its own link.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...core.cluster import ClusterSpec, LinkSpec, TransportSpec
from ...sim.collectives import allreduce_time, flat_tier, ring_half

SEGMENTS = (0, 2**16, 2**18, 2**20, 2**22)
WINDOWS = (0, 2**18, 2**20, 2**22)


@dataclass(frozen=True)
class Series:
    """All-reduce times of one tier: ``sizes`` bytes on ``ranks`` ranks, whose ring runs over one kind of
    link with TCP round trip ``rtt_s`` (the ranks of one node, or a ring over nodes priced at its inter-node hop)."""

    sizes: tuple[float, ...]
    times: tuple[float, ...]
    ranks: int
    rtt_s: float = 0.0
    collective: str = "all_reduce"
    """``all_reduce``, or ``reduce_scatter`` / ``all_gather`` (nccl-tests): half a ring, (n-1) steps."""
    shape: ClusterSpec | None = None
    """The cluster that ran it, when the fitted link is its inter-node link among several GPUs per node (its flat
    ring also crosses the intra-node link, known); None: ``ranks`` ranks ringing over the fitted link alone."""

    @property
    def latency_s(self) -> float:
        """The one-way latency the model takes: half the round trip."""
        return max(self.rtt_s, 0.0) / 2


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
                  overhead_s: float, segment: int, window: int, step_latency: str = "rtt",
                  shape: ClusterSpec | None = None) -> ClusterSpec:
    """One node of ``ranks`` workers whose ring runs over ``intra_node`` with these transport values (or
    ``shape`` with the link as its inter-node link). A gloo step waits a round trip and pays no launch cost; an
    NCCL step waits one way, and each call pays the base cluster's launch latency (NCCL ``tuning.cc``)."""
    link = LinkSpec(bandwidth_gbps=bandwidth_Bps * 8 / 1e9, latency_us=latency_s * 1e6)
    launch_us = 0.0 if step_latency == "rtt" else base.transport.base_latency_us
    transport = TransportSpec(kind=kind, efficiency=1.0, base_latency_us=launch_us,
                              step_overhead_us=overhead_s * 1e6, step_latency=step_latency,
                              window_bytes=int(window), segment_bytes=int(segment))
    # gloo only rings; NCCL's tuner picks ring, tree or (here) hierarchical per size, as the simulator's "auto"
    allreduce = "ring" if step_latency == "rtt" else "auto"
    if shape is not None:
        return dataclasses.replace(shape, inter_node=link, transport=transport, allreduce=allreduce,
                                   wan=dataclasses.replace(shape.wan, groups=1))
    return dataclasses.replace(one_node(base, ranks, link, transport), allreduce=allreduce)


def series_time(cluster: ClusterSpec, collective: str, nbytes: float) -> float:
    """What the simulator charges for one collective of ``nbytes`` on ``cluster``."""
    if collective == "all_reduce":
        return allreduce_time(cluster, nbytes)
    return ring_half(nbytes, cluster.workers, flat_tier(cluster), cluster.transport)


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


def fit_tiers(series: Sequence[Series], *, kind: str = "gloo", base: ClusterSpec | None = None,
              step_latency: str = "rtt") -> TiersFit:
    """Fit each series on its own (bandwidth and step latency α), at the segment and window that fit the last,
    outermost one best; then split each α = 2·latency + overhead with the overhead of the first, innermost
    series, whose wire latency is the least. With ``step_latency="one_way"`` (NCCL, nccl-tests files: no
    round trip was measured) each tier's α is its link's latency and there is no per-step overhead."""
    base = base or ClusterSpec()
    *_, seg, win = _Fit(series[-1], kind, base, step_latency=step_latency).best()
    fits = [_Fit(s, kind, base, grid=((seg, win),), step_latency=step_latency).best() for s in series]
    if step_latency == "rtt":
        overhead = fits[0][1]
        clusters = [model_cluster(base, s.ranks, kind, max(s.latency_s + (own - overhead) / 2, 0.0),
                                  math.exp(log_bw), overhead, seg, win)
                    for s, (log_bw, own, _, _) in zip(series, fits, strict=True)]
    else:
        clusters = [model_cluster(base, s.ranks, kind, own, math.exp(log_bw), 0.0, seg, win, step_latency, s.shape)
                    for s, (log_bw, own, _, _) in zip(series, fits, strict=True)]
    predicted = [tuple(series_time(c, s.collective, b) for b in s.sizes) for c, s in zip(clusters, series, strict=True)]
    log_error = np.log(np.concatenate(predicted) / np.concatenate([s.times for s in series]))
    links = tuple(c.intra_node if s.shape is None else c.inter_node for c, s in zip(clusters, series, strict=True))
    return TiersFit(clusters[0].transport, links, tuple(s.ranks for s in series),
                    tuple(predicted), float(np.sqrt(np.mean(log_error ** 2))))


class _Fit:
    """Least squares of log-time for one series: its bandwidth and step overhead (latency: half the round trip),
    continuous (Nelder-Mead), at each (segment, window) of ``grid``; between grid points the Bayesian
    information criterion decides."""

    def __init__(self, series: Series, kind: str, base: ClusterSpec,
                 grid: Sequence[tuple[int, int]] = tuple((s, w) for s in SEGMENTS for w in WINDOWS),
                 step_latency: str = "rtt"):
        self.series, self.kind, self.base, self.grid = series, kind, base, grid
        self.step_latency = step_latency
        self.sizes = np.asarray(series.sizes, float)
        self.log_t = np.log(np.asarray(series.times, float))

    @staticmethod
    def overhead(x: np.ndarray) -> float:
        return math.exp(x[1]) if x[1] > math.log(1e-7) else 0.0

    def loss(self, x: np.ndarray, seg: int, win: int) -> float:
        if not 0 < x[0] < 40 or not -30 < x[1] < 5:
            return 1e9
        s = self.series
        if self.step_latency == "rtt":  # x[1]: the step overhead beyond the measured round trip
            cluster = model_cluster(self.base, s.ranks, self.kind, s.latency_s, math.exp(x[0]), self.overhead(x),
                                    seg, win)
        else:  # x[1]: the link's one-way latency, the whole of α
            cluster = model_cluster(self.base, s.ranks, self.kind, self.overhead(x), math.exp(x[0]), 0.0, seg, win,
                                    self.step_latency, s.shape)
        predicted = np.array([series_time(cluster, s.collective, b) for b in self.sizes])
        return float(np.sum((np.log(predicted) - self.log_t) ** 2))

    def best(self) -> tuple[float, float, int, int]:
        """(log bandwidth, step overhead, segment, window) with the lowest BIC."""
        alpha, bw = _initial(self.sizes, np.exp(self.log_t), self.series.ranks)
        x0 = np.array([math.log(bw), math.log(max(alpha - self.series.rtt_s, 1e-6))])
        n, best = len(self.log_t), None
        for seg, win in self.grid:
            x = nelder_mead(lambda v, seg=seg, win=win: self.loss(v, seg, win), x0, iters=200 * len(x0))
            k = len(x) + (seg > 0) + (win > 0)
            bic = n * math.log(max(self.loss(x, seg, win), 1e-30) / n) + k * math.log(n)
            if best is None or bic < best[0]:
                best = (bic, x, seg, win)
        _, x, seg, win = best
        return float(x[0]), self.overhead(x), seg, win
