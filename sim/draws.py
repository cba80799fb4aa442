"""Step-time draws for the fast path (``sim/fast.py``): the factors of ``core/variability.py`` drawn
cell by cell, or, for many workers and long intervals, their sums and maxima drawn from their
distributions instead of summing and comparing the cells.

The per-step factor of worker k is X = slow_k · J · S with J ~ LogNormal(μ, σ²) (E[J] = 1, sd = cv)
and S = f with probability q, else 1 (``ComputeFactors``). What the engine needs of a block of steps is

* the sum of n factors of one worker (the time to its next barrier): K ~ Binomial(n, q) of them are
  stragglers, so Σ X = slow_k · (Σ_{n-K} J + f · Σ_K J), and each sum of m i.i.d. log-normals is drawn
  as the log-normal with the same mean and variance (Fenton 1960; Fenton-Wilkinson): exact for m = 1,
  and for m > 1 its skewness 3·cv/√m + O(cv³) equals the sum's to first order in cv, so its upper
  tail, which sets the barrier, is right to O(cv²/m) (docs/benchmarks-sim.md measures the fit);
* the maximum of a DDP step over m i.i.d. workers: K ~ Binomial(m, q) stragglers, and the maximum of
  j i.i.d. log-normals is exp(μ + σ·Φ⁻¹(U^{1/j})) (the j-th power of the CDF, inverted exactly).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from ..core.cluster import VariabilitySpec

RARE_SPIKES = 0.05
"""Straggler probability up to which spikes are drawn as gaps between them (``Factors.sums``)."""


class Factors:
    """Draws of the variability factors, without the slow_k part (the caller multiplies it in)."""

    def __init__(self, var: VariabilitySpec, rng: np.random.Generator):
        self.cv, self.q, self.f = var.jitter_cv, var.straggler_prob, var.straggler_factor
        self.sigma2 = float(np.log1p(self.cv ** 2))
        self.sigma, self.mu = float(np.sqrt(self.sigma2)), -self.sigma2 / 2
        self.rng = rng

    def cells(self, shape: tuple[int, ...]) -> np.ndarray:
        """J · S of every cell, as ``ComputeFactors.draw`` makes them (another stream)."""
        out = self.rng.lognormal(self.mu, self.sigma, shape) if self.cv > 0 else np.ones(shape)
        if self.q > 0:
            out[self.rng.random(shape) < self.q] *= self.f
        return out

    def sums(self, n, shape: tuple[int, ...]) -> np.ndarray:
        """Σ of ``n`` (integers broadcast to ``shape``) i.i.d. J · S, one draw per element."""
        n = np.asarray(n, dtype=np.int64)
        if n.size == 1:
            return self._sums_of(int(n.ravel()[0]), shape)
        n = np.broadcast_to(n, shape)
        if self.q <= 0:
            return self._lognormal_sums(n)
        k = self._straggler_counts(n)
        out = self._lognormal_sums(n - k)
        hit = np.flatnonzero(k)  # few cells hold a straggler step: draw their sums alone
        out.ravel()[hit] += self.f * self._lognormal_sums(k.ravel()[hit])
        return out

    def _sums_of(self, n: int, shape: tuple[int, ...]) -> np.ndarray:
        """``sums`` of the same n everywhere: every cell drawn without spikes, then the few cells with
        spikes drawn again with them (each cell's draw is independent, so replacing it is exact)."""
        size = int(np.prod(shape))
        out = self._lognormal_sums_of(n, shape)
        if self.q > 0 and n > 0:
            if self.q > RARE_SPIKES:
                k = self.rng.binomial(n, self.q, size)
                cells, k = np.flatnonzero(k), k[k > 0]
            else:
                cells, k = np.unique(self._spikes(n * size) // n, return_counts=True)
            out.ravel()[cells] = self._lognormal_sums(n - k) + self.f * self._lognormal_sums(k)
        return out

    def _lognormal_sums_of(self, n: int, shape: tuple[int, ...]) -> np.ndarray:
        """Σ of n i.i.d. J per cell (the log-normal fit below), drawn in float32: its rounding (1e-7)
        is far below the spread of a sum."""
        if self.cv == 0 or n == 0:
            return np.full(shape, float(n))
        s2 = np.log1p(self.cv ** 2 / n)
        z = self.rng.standard_normal(shape, dtype=np.float32)
        z *= np.float32(np.sqrt(s2))
        z += np.float32(np.log(n) - s2 / 2)
        return np.exp(z).astype(float)

    def _spikes(self, total: int) -> np.ndarray:
        """Positions (0-based) of the spikes among ``total`` steps laid end to end: a Bernoulli(q)
        sequence drawn as the geometric gaps between its successes."""
        parts, reached = [np.zeros(0, dtype=np.int64)], 0
        while reached < total:
            expected = (total - reached) * self.q
            step = np.cumsum(self.rng.geometric(self.q, int(expected + 10 * np.sqrt(expected) + 16))) + reached
            parts.append(step)
            reached = int(step[-1])
        where = np.concatenate(parts) - 1
        return where[where < total]

    def _straggler_counts(self, n: np.ndarray) -> np.ndarray:
        """K ~ Binomial(n, q) per element: the spikes among the elements' steps laid end to end
        (``_spikes``), counted per element; far fewer draws than one binomial per element."""
        if self.q > RARE_SPIKES:
            return self.rng.binomial(n, self.q)
        ends = np.cumsum(n.ravel())
        cell = np.searchsorted(ends, self._spikes(int(ends[-1]) if len(ends) else 0), side="right")
        return np.bincount(cell, minlength=n.size).reshape(n.shape)

    def _lognormal_sums(self, m: np.ndarray) -> np.ndarray:
        """Σ of m i.i.d. J as the log-normal of the same mean m and variance m·cv² (0 where m = 0)."""
        m = np.asarray(m, dtype=np.int64)
        if self.cv == 0:
            return m.astype(float)
        top = int(m.max()) if m.size else 0
        count = np.maximum(np.arange(top + 1), 1)
        s2 = np.log1p(self.cv ** 2 / count)
        sd, log_mean = np.sqrt(s2), np.log(count) - s2 / 2
        out = np.exp(sd[m] * self.rng.standard_normal(m.shape) + log_mean[m])
        out[m == 0] = 0.0
        return out

    def maxima(self, m: int, shape: tuple[int, ...]) -> np.ndarray:
        """max over ``m`` i.i.d. workers of J · S, ``shape`` independent draws (m >= 1)."""
        k = self.rng.binomial(m, self.q, shape) if self.q > 0 else np.zeros(shape, dtype=np.int64)
        out = self._lognormal_maxima(m - k)
        if self.q > 0:
            out = np.maximum(out, self.f * self._lognormal_maxima(k))
        return out

    def _lognormal_maxima(self, j: np.ndarray) -> np.ndarray:
        """max of j i.i.d. J: P(max <= x) = F(x)^j, so max = F⁻¹(U^{1/j}); 0 where j = 0."""
        j = np.asarray(j)
        if self.cv == 0:
            return np.where(j > 0, 1.0, 0.0)
        u = self.rng.random(j.shape)
        # the upper tail 1 - U^{1/j}, computed without cancellation: Φ⁻¹(1 - t) = -Φ⁻¹(t)
        tail = -np.expm1(np.log(u) / np.maximum(j, 1))
        out = np.exp(self.mu - self.sigma * ndtri(tail))
        return np.where(j > 0, out, 0.0)
