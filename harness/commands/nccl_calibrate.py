"""`palsgd calibrate --from-nccl-tests FILE... --out PROFILE.toml [--cluster BASE]`: a cluster profile from
the output of NVIDIA's nccl-tests, fitted with the same model and code as ``palsgd calibrate``
(``harness/machinery/fit_transport.py``) in NCCL's form: one-way step latency, the base cluster's launch latency.

A one-node file fits the intra-node tier (ranks of one node); a multi-node file the inter-node tier (the
flat ring over all its ranks, which waits for its slowest hop, the network). A multi-node file with several
GPUs per node needs the intra tier from BASE or from a one-node file given too. Each tier is fitted to one
run: its all-reduce if the files hold one, else its reduce-scatter or all-gather (half a ring). Bandwidths
are effective (efficiency 1), as with ``palsgd calibrate``; a BASE intra link is taken at line rate x its
efficiency. The profile prices a flat ring (``allreduce = "ring"``), the algorithm the fit assumed.

Writes PROFILE.toml and PROFILE.fit.csv (``tier, size_bytes, measured_s, fitted_s, error_pct``; fitted_s is
what ``palsgd simulate --cluster PROFILE.toml`` charges on the measured ranks), both atomically, after every
file has been read and checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import tomli_w

from ...core import io, nccl_tests
from ...core.cluster import ClusterSpec, LinkSpec
from ...core.config import load
from ...core.errors import ConfigError
from ...core.typed import to_dict
from ..machinery.fit_transport import Series, fit_tiers, series_time

KEY = "--from-nccl-tests"


@dataclass(frozen=True)
class Tier:
    name: str
    """``intra`` (one node) or ``inter`` (several nodes)."""
    path: Path
    run: nccl_tests.Run

    @property
    def series(self) -> Series:
        rows = self.run.rows
        return Series(tuple(float(r.size_bytes) for r in rows), tuple(r.time_s for r in rows), len(self.run.ranks),
                      collective=self.run.collective)

    def describe(self) -> str:
        r = self.run
        return (f"nccl-tests {self.path.name} ({r.collective}_perf, {len(r.ranks)} ranks on {r.nodes} node"
                f"{'s' if r.nodes > 1 else ''} x {r.gpus_per_node} {', '.join(r.devices)})")


def calibrate_from_nccl_tests(files: list[Path], out: Path, base_ref: str | None = None,
                              command: str = "", min_bytes: int = 0) -> tuple[Path, str]:
    """Read, fit (the rows of at least ``min_bytes``), write; returns the profile and the fit table to print."""
    if not files:
        raise ConfigError("give one or more nccl-tests output files", key=KEY)
    tiers = _tiers([Path(f) for f in files], min_bytes)
    base = load(cluster=base_ref).cluster if base_ref else ClusterSpec()
    if len(tiers) == 1 and tiers[0].name == "inter" and tiers[0].run.gpus_per_node > 1 and base_ref is None:
        raise ConfigError(f"{tiers[0].path}: a multi-node file fits the inter-node tier only; give --cluster BASE "
                          "or a one-node nccl-tests file for the intra-node tier", key=KEY)
    io.check_writable(out, "--out")
    fit = _fit(tiers, base, _base_intra(base) if base_ref else None)
    cluster = _profile(tiers, fit, base, base_ref, command)
    table = fit_table(tiers, cluster)
    io.write_csv(Path(out).with_suffix(".fit.csv"), table)
    io.write_text(out, tomli_w.dumps({"cluster": to_dict(cluster)}))
    return Path(out), format_fit(table, tiers, cluster)


def _tiers(files: list[Path], min_bytes: int = 0) -> list[Tier]:
    """At most one run per tier, every file read (and checked) first; rows below ``min_bytes`` dropped."""
    runs = [(path, run) for path in files for run in nccl_tests.read(path)]
    for path, run in runs:
        if len(run.ranks) < 2:
            raise ConfigError("one rank: a collective needs two or more to measure the network", source=str(path))
        if sum(r.size_bytes >= min_bytes for r in run.rows) < 2:
            raise ConfigError(f"fewer than two rows of {min_bytes} bytes or more to fit", key="--fit-min-bytes",
                              source=str(path))
    runs = [(p, dataclasses.replace(r, rows=tuple(x for x in r.rows if x.size_bytes >= min_bytes)))
            for p, r in runs]
    tiers = []
    for name, wanted in (("intra", lambda r: r.nodes == 1), ("inter", lambda r: r.nodes > 1)):
        found = [(p, r) for p, r in runs if wanted(r)]
        if found:  # the all-reduce first: it is what the simulator prices
            path, run = min(found, key=lambda pr: (pr[1].collective != "all_reduce", -len(pr[1].rows)))
            tiers.append(Tier(name, path, run))
    return tiers


def _effective(link: LinkSpec, base: ClusterSpec) -> LinkSpec:
    """A BASE link as the profile holds links: effective (line rate x BASE's efficiency)."""
    return LinkSpec(link.bandwidth_gbps * base.transport.efficiency, link.latency_us)


def _base_intra(base: ClusterSpec) -> LinkSpec:
    return _effective(base.intra_node, base)


def _fit(tiers: list[Tier], base: ClusterSpec, base_intra: LinkSpec | None):
    """The tiers together (one transport); a multi-node run with several GPUs per node is fitted on its own
    shape, whose flat ring also crosses the intra-node link: BASE's, or the one-node file's fitted first."""
    series = [t.series for t in tiers]
    outer = tiers[-1]
    if outer.name == "inter" and outer.run.gpus_per_node > 1:
        intra = base_intra
        if tiers[0].name == "intra":
            intra = fit_tiers(series[:1], kind="nccl", base=base, step_latency="one_way").links[0]
        shape = dataclasses.replace(base, nodes=outer.run.nodes, gpus_per_node=outer.run.gpus_per_node,
                                    intra_node=intra)
        series[-1] = dataclasses.replace(series[-1], shape=shape)
    return fit_tiers(series, kind="nccl", base=base, step_latency="one_way")


def _profile(tiers: list[Tier], fit, base: ClusterSpec, base_ref: str | None, command: str) -> ClusterSpec:
    fitted = {t.name: link for t, link in zip(tiers, fit.links, strict=True)}
    outer = tiers[-1].run
    nodes, gpus = (outer.nodes, outer.gpus_per_node) if tiers[-1].name == "inter" else (1, len(outer.ranks))
    intra = fitted.get("intra") or (_base_intra(base) if base_ref else fitted["inter"])
    inter = fitted.get("inter") or (_effective(base.inter_node, base) if base_ref else intra)
    provenance = _provenance(tiers, base, base_ref)
    source = (f"Fitted by `{command or 'palsgd calibrate --from-nccl-tests'}` to "
              + "; ".join(t.describe() for t in tiers)
              + f" (rms log error {fit.rms_log_error:.3f}); bandwidths are effective (efficiency 1)."
              + (f" Other figures from {base_ref}: {base.source}" if base_ref else ""))
    return dataclasses.replace(
        base, name=f"nccl-tests-{outer.hosts[0]}", source=source, nodes=nodes, gpus_per_node=gpus,
        description=f"{nodes} x {gpus} {', '.join(outer.devices)} (from nccl-tests)",
        intra_node=intra, inter_node=inter, transport=fit.transport, allreduce="auto",
        wan=dataclasses.replace(base.wan, groups=1), provenance=provenance)


def _provenance(tiers: list[Tier], base: ClusterSpec, base_ref: str | None) -> dict[str, str]:
    """Measured: what the files fitted; the rest as BASE says (its links made effective), or palsgd's default
    (an assumption)."""
    out = dict(base.provenance) if base_ref else {
        **{k: "assumed: palsgd's default, not in nccl-tests output"
           for k in ("compute.peak_tflops", "compute.utilization", "compute.memory_gbytes_per_s")},
        "transport.base_latency_us": "published: NCCL src/graph/tuning.cc ring/simple launch latency"}
    if base_ref:
        for link in ("intra_node", "inter_node"):
            key = f"{link}.bandwidth_gbps"
            kind, _, why = out.get(key, f"given: {base_ref}").partition(":")
            out[key] = f"{kind}: {why.strip()}, x {base_ref}'s efficiency {base.transport.efficiency:g} (effective)"
    how = "fitted by palsgd calibrate --from-nccl-tests"
    outer = tiers[-1]
    out["nodes"] = out["gpus_per_node"] = f"measured: header of {outer.path.name}"
    for tier in tiers:
        for field in ("bandwidth_gbps", "latency_us"):
            out[f"{tier.name}_node.{field}"] = f"measured: {tier.describe()}, {how}"
    for field in ("efficiency", "segment_bytes", "window_bytes", "step_latency", "step_overhead_us", "kind"):
        out[f"transport.{field}"] = f"measured: {outer.describe()}, {how}"
    out["allreduce"] = "assumed: auto (ring, tree or hierarchical per size, as NCCL's tuner), as fitted"
    if len(tiers) == 1 and not base_ref and (outer.name == "intra" or outer.run.gpus_per_node == 1):
        for field in ("bandwidth_gbps", "latency_us"):  # one node, or one GPU per node: never priced
            out[f"{'intra' if outer.name == 'inter' else 'inter'}_node.{field}"] = \
                "assumed: repeats the measured tier; this cluster never prices it"
    return out


def fit_table(tiers: list[Tier], cluster: ClusterSpec) -> pd.DataFrame:
    """Each measured size against what the profile charges on the ranks that measured it."""
    parts = []
    for tier in tiers:
        run = tier.run
        shape = (dataclasses.replace(cluster, nodes=1, gpus_per_node=len(run.ranks)) if tier.name == "intra"
                 else dataclasses.replace(cluster, nodes=run.nodes, gpus_per_node=run.gpus_per_node))
        sizes = [r.size_bytes for r in run.rows]
        measured = [r.time_s for r in run.rows]
        fitted = [series_time(shape, run.collective, s) for s in sizes]
        parts.append(pd.DataFrame({"tier": tier.name, "size_bytes": sizes, "measured_s": measured,
                                   "fitted_s": fitted}))
    table = pd.concat(parts, ignore_index=True)
    table["error_pct"] = (table["fitted_s"] / table["measured_s"] - 1) * 100
    return table


def format_fit(table: pd.DataFrame, tiers: list[Tier], cluster: ClusterSpec) -> str:
    lines = [f"{'tier':>6} {'size_bytes':>12} {'measured_us':>12} {'fitted_us':>12} {'error':>8}"]
    for row in table.itertuples():
        lines.append(f"{row.tier:>6} {row.size_bytes:>12} {row.measured_s * 1e6:>12.1f} {row.fitted_s * 1e6:>12.1f} "
                     f"{row.error_pct:>+7.1f}%")
    for tier in tiers:
        link = cluster.intra_node if tier.name == "intra" else cluster.inter_node
        err = table.loc[table["tier"] == tier.name, "error_pct"].abs()
        lines.append(f"fit {tier.name}: {tier.describe()}: bandwidth {link.bandwidth_gbps:.1f} Gbit/s effective, "
                     f"latency {link.latency_us:.1f} us per step; |error| median {err.median():.1f}%, "
                     f"max {err.max():.1f}%")
    devices = {d for t in tiers for d in t.run.devices}
    if len(devices) > 1:
        lines.append(f"note: the files ran on different devices ({', '.join(sorted(devices))})")
    t = cluster.transport
    lines.append(f"fit transport: launch {t.base_latency_us:g} us, segment {t.segment_bytes} B, "
                 f"window {t.window_bytes} B")
    return "\n".join(lines)
