"""A convergence prior from published results: DiLoCo's steps to DDP's final loss, from the DiLoCo
scaling-law paper (Charles et al. 2025, arXiv 2503.09799; the numbers and where each comes from are in
``core/presets/priors/diloco-scaling-laws.toml``).

The paper gives final held-out losses, not loss curves: Data-Parallel (DDP) and DiLoCo with M = 1, 2, 4, 8
replicas, H = 30, each at its best hyper-parameters, after the same D = 20 N tokens, for N = 35M..2.4B
(v1 Table 4), and DDP and DiLoCo M <= 4 at 4B and 10B (v1 Table 5). Two steps turn that into steps:

1. **The loss gap** g(N, M) = ln(L_DiLoCo / L_DDP) at the same tokens. For 35M..2.4B it is the paper's
   independent power-law fits (L = A N^alpha per algorithm, fitted by least squares on log L, v1 Table 7)
   taken as a ratio, i.e. a straight line in ln N fitted to the table, per M. Extrapolated, that line misses
   the 4B and 10B runs by more than its residuals (docs/validation.md), so above 2.4B the gap is interpolated
   in ln N between the fit at 2.4B and the measured 4B and 10B gaps; M = 8 was not run there. Between
   M = 1, 2, 4, 8 the gap is interpolated in ln M.
2. **Gap to tokens.** At fixed N the Chinchilla form L = E + A/N^a + B/D^b gives the loss a data term T(D)
   = B/D^b whose slope is -dL/dlnD = b T. DiLoCo is assumed to follow DDP's data term, shifted by the gap, so
   it reaches DDP's final loss after D' = D (1 - dL/T(D))^(-1/b) tokens, dL = L_DDP (e^g - 1); a negative
   gap gives D' < D. T(D) at D = 20 N comes either from the paper's own fit, split equally between the N
   and D terms as at the compute-optimal allocation (the first-order condition a A/N^a = b B/D^b; the
   paper trains at the Chinchilla-optimal D = 20 N): b T = 0.5 |alpha_DDP| L_DDP; or from the data term of a
   published Chinchilla fit (Hoffmann et al. 2022 Eq. 10; Besiroglu et al. 2024) at (N, 20 N).

The answer is the tokens ratio, which is the steps ratio when both algorithms use the same global batch.
The central value uses the equal split with Hoffmann's b; the band spans every conversion above and the
gap +- two residual standard deviations of its fit (and, at 4B and 10B, the spread between the runs with
independent- and joint-fit hyper-parameters, v1 Table 12).
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass

import numpy as np

from . import presets
from .errors import ConfigError

NAME = "diloco-scaling-laws"
Z_RESIDUALS = 2.0
"""The band holds the fitted gap +- this many residual standard deviations of the fit."""
PAPER_FAMILIES = ("gpt_neo",)
"""Workload model families that are decoder-only transformer language models, as the paper's are."""
PAYLOADS = ("fp32", "bf16")
"""The paper syncs bf16 weights and outer gradients; fp32 is at least as precise, quantized payloads are not
in its evidence."""


@dataclass(frozen=True)
class Estimate:
    """Steps to DDP's final loss relative to DDP's (None outside the evidence), its band, and why."""

    steps_vs_ddp: float | None
    low: float | None
    high: float | None
    why: str


@dataclass(frozen=True)
class Evidence:
    """The paper's tables as arrays (``core/presets/priors/<name>.toml``)."""

    paper: str
    sync_every: int
    tokens_per_param: float
    params: np.ndarray
    ddp: np.ndarray
    diloco: dict[int, np.ndarray]
    check_params: np.ndarray
    check_ddp: np.ndarray
    check_joint: dict[int, np.ndarray]
    check_independent: dict[int, np.ndarray]
    fits: dict
    conversions: tuple[dict, ...]

    @property
    def replicas(self) -> tuple[int, ...]:
        return tuple(sorted(self.diloco))


def _by_m(table: dict) -> dict[int, np.ndarray]:
    return {int(m): np.asarray(v, dtype=float) for m, v in table.items()}


@functools.cache
def evidence(name: str = NAME) -> Evidence:
    path = presets.path_of("prior", name)
    if not path.is_file():
        raise ConfigError(f"unknown prior; known: {', '.join(presets.names('prior'))}", key="prior", value=name)
    with open(path, "rb") as f:
        d = tomllib.load(f)
    losses, checks = d["losses"], d["checks"]
    return Evidence(paper=d["prior"]["paper"], sync_every=d["prior"]["sync_every"],
                    tokens_per_param=d["prior"]["tokens_per_param"], params=np.asarray(losses["params"]),
                    ddp=np.asarray(losses["ddp"]), diloco=_by_m(losses["diloco"]),
                    check_params=np.asarray(checks["params"]), check_ddp=np.asarray(checks["ddp"]),
                    check_joint=_by_m(checks["diloco_joint"]),
                    check_independent=_by_m(checks["diloco_independent"]), fits=d["fits"],
                    conversions=tuple(d["conversion"]))


@dataclass(frozen=True)
class Line:
    """y = intercept + slope ln N, least squares (the paper's fit of log L), with the residuals' std."""

    intercept: float
    slope: float
    sigma: float

    def __call__(self, params: float) -> float:
        return self.intercept + self.slope * math.log(params)


def fit_line(params: np.ndarray, y: np.ndarray) -> Line:
    x = np.log(params)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    return Line(float(intercept), float(slope), float(np.sqrt((resid ** 2).sum() / max(len(x) - 2, 1))))


@dataclass(frozen=True)
class Model:
    """The gap and DDP loss as functions of ln N: knots (ln N, value, band half-width) per M."""

    ddp_slope: float
    """d ln L_DDP / d ln N of the paper's DDP fit (v1 Table 7: -0.0953)."""
    ddp_knots: tuple[tuple[float, float], ...]
    gap_knots: dict[int, tuple[tuple[float, float, float], ...]]
    max_params: dict[int, float]
    ddp_line: Line
    """ln L_DDP vs ln N fitted to the table (the paper's DDP power law)."""
    gap_lines: dict[int, Line]
    """ln(L_DiLoCo / L_DDP) vs ln N fitted to the table, per M (the ratio of the paper's power laws)."""

    def ddp_loss(self, params: float) -> float:
        x, y = zip(*self.ddp_knots, strict=True)
        return math.exp(float(np.interp(math.log(params), x, y)))

    def gap(self, params: float, replicas: float) -> tuple[float, float]:
        """(gap, half-width) at N, interpolated in ln M between the measured M."""
        ms = sorted(self.gap_knots)
        lo = max(m for m in ms if m <= replicas)
        hi = min(m for m in ms if m >= replicas)
        g_lo, h_lo = self._at(lo, params)
        if hi == lo:
            return g_lo, h_lo
        g_hi, h_hi = self._at(hi, params)
        t = math.log(replicas / lo) / math.log(hi / lo)
        return g_lo + t * (g_hi - g_lo), h_lo + t * (h_hi - h_lo)

    def _at(self, m: int, params: float) -> tuple[float, float]:
        x, g, h = zip(*self.gap_knots[m], strict=True)
        q = math.log(params)
        return float(np.interp(q, x, g)), float(np.interp(q, x, h))


def model(ev: Evidence, keep: np.ndarray | None = None, *, checks: bool = True) -> Model:
    """The gap model from the sizes ``keep`` (a mask over ``ev.params``; all by default); with ``checks``,
    the 4B and 10B runs are knots above the fitted range."""
    keep = np.ones(len(ev.params), bool) if keep is None else keep
    params = ev.params[keep]
    ddp = fit_line(params, np.log(ev.ddp[keep]))
    ends = (params.min(), params.max())
    ddp_knots = [(math.log(n), ddp(n)) for n in ends]
    gap_knots, max_params, lines = {}, {}, {}
    for m, losses in ev.diloco.items():
        line = lines[m] = fit_line(params, np.log(losses[keep] / ev.ddp[keep]))
        knots = [(math.log(n), line(n), Z_RESIDUALS * line.sigma) for n in ends]
        if checks and m in ev.check_joint:
            for i, n in enumerate(ev.check_params):
                joint = math.log(ev.check_joint[m][i] / ev.check_ddp[i])
                spread = abs(math.log(ev.check_independent[m][i] / ev.check_joint[m][i]))
                knots.append((math.log(n), joint, max(Z_RESIDUALS * line.sigma, spread)))
        gap_knots[m] = tuple(knots)
        max_params[m] = math.exp(knots[-1][0])
    if checks:
        ddp_knots += [(math.log(n), math.log(v)) for n, v in zip(ev.check_params, ev.check_ddp, strict=True)]
    return Model(ddp.slope, tuple(ddp_knots), gap_knots, max_params, ddp, lines)


def tokens_ratio(gap: float, ddp_loss: float, ddp_slope: float, params: float, conversion: dict, *,
                 equal_split: bool, tokens_per_param: float = 20.0) -> float:
    """Tokens DiLoCo needs to reach DDP's final loss / DDP's tokens (inf when the data term cannot close the
    gap). ``equal_split``: the data term from the paper's own slope, else from ``conversion``'s B/D^b."""
    beta = conversion["beta"]
    if equal_split:
        data_term = 0.5 * abs(ddp_slope) * ddp_loss / beta
    else:
        data_term = conversion["b"] * (tokens_per_param * params) ** -beta
    excess = ddp_loss * math.expm1(gap)
    if excess >= data_term:
        return math.inf
    return (1 - excess / data_term) ** (-1 / beta)


def estimate(params: float, replicas: float, ev: Evidence | None = None, mdl: Model | None = None) -> Estimate:
    """Steps to DDP's final loss of DiLoCo (N = ``params``, M = ``replicas``, H = 30), relative to DDP's."""
    ev = ev or evidence()
    mdl = mdl or _model()
    n_min, n_fit = float(ev.params.min()), float(ev.params.max())
    m_max = max(ev.replicas)
    if not 1 <= replicas <= m_max:
        return Estimate(None, None, None, f"M = {replicas:g} replicas is outside the paper's M = 1..{m_max}")
    reach = max(mdl.max_params[m] for m in ev.replicas if m >= replicas)
    if not n_min <= params <= reach:
        span = f"{n_min / 1e6:.0f}M..{reach / 1e9:g}B" + (f" for M = {replicas:g}" if reach < 1e10 else "")
        return Estimate(None, None, None, f"N = {_size(params)} parameters is outside the paper's evidence "
                                          f"({span}; fitted up to {n_fit / 1e9:g}B)")
    gap, half = mdl.gap(params, replicas)
    central, low, high = ratio_band(gap, half, mdl.ddp_loss(params), mdl.ddp_slope, params, ev)
    if not math.isfinite(central):
        return Estimate(None, None, None, "the gap is larger than the data term can close")
    why = (f"DiLoCo's final loss {100 * math.expm1(gap):+.2f}% vs DDP's (band {100 * math.expm1(gap - half):+.2f}% "
           f"to {100 * math.expm1(gap + half):+.2f}%) at N = {_size(params)}, M = {replicas:g}, H = "
           f"{ev.sync_every}, D = {ev.tokens_per_param:g} N tokens; gap to tokens by a Chinchilla data term")
    return Estimate(central, low, high, why)


def ratio_band(gap: float, half: float, ddp_loss: float, ddp_slope: float, params: float,
               ev: Evidence) -> tuple[float, float, float]:
    """(central, low, high) tokens ratio: the equal split with the first conversion's b; the band over every
    conversion and the gap's ends."""
    def ratio(g: float, conversion: dict, split: bool) -> float:
        return tokens_ratio(g, ddp_loss, ddp_slope, params, conversion, equal_split=split,
                            tokens_per_param=ev.tokens_per_param)

    ratios = [ratio(g, c, split) for g in (gap - half, gap + half) for c in ev.conversions for split in (True, False)]
    return ratio(gap, ev.conversions[0], True), min(ratios), max(ratios)


def optimal_batch_tokens(params: float, replicas: float | None = None, ev: Evidence | None = None) -> float:
    """The paper's fitted optimal global batch in tokens: DDP's (``replicas`` None, v2 Table 10) or DiLoCo's
    by the joint fit the paper recommends (v2 Table 11)."""
    fits = (ev or evidence()).fits
    if replicas is None:
        return fits["batch_tokens_ddp"]["a"] * params ** fits["batch_tokens_ddp"]["alpha"]
    j = fits["batch_tokens_joint"]
    return j["a"] * params ** j["alpha"] * replicas ** j["beta"]


def _size(params: float) -> str:
    return f"{params / 1e9:.3g}B" if params >= 1e9 else f"{params / 1e6:.3g}M"


@functools.cache
def _model() -> Model:
    return model(evidence())


def refusals(spec, exp, *, like: str | None = None) -> list[str]:
    """Why the prior says nothing about ``spec`` in ``exp``, every reason (empty when it applies, N and M
    aside: ``estimate`` checks those). ``like``: the algorithm the user chose to assume ``spec`` converges
    like (an explicit assumption, never the default)."""
    ev = evidence()
    out = []
    if (like or spec.name) != "diloco":
        out.append(f"the scaling-law paper measured DiLoCo only, not {spec.name} (an explicit assumption "
                   f"`--assume-like {spec.name}=diloco` would use DiLoCo's)")
    family = exp.workload.model.family
    if family not in PAPER_FAMILIES:
        out.append(f"the paper's models are decoder-only transformer language models; workload.model.family = "
                   f"{family} is not known to be one")
    if exp.train.optimizer != "adamw":
        out.append(f"the paper's inner optimizer is AdamW, not {exp.train.optimizer}")
    if spec.sync_every != ev.sync_every:
        out.append(f"H = {spec.sync_every}: the paper's losses are at H = {ev.sync_every} only")
    if spec.payload_dtype not in PAYLOADS:
        out.append(f"payload {spec.payload_dtype}: the paper syncs bf16 values, not quantized ones")
    return out


def replicas(exp, spec=None) -> int:
    """M, the number of DiLoCo replicas: the workers over the workers per replica group of ``spec``
    (``core/groups.py``; every worker is a replica by default, or without ``spec``)."""
    return exp.workers // (exp.group_size(spec) if spec is not None else 1)
