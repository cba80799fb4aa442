"""The assumptions behind a result, stamped into the report from the folder's manifest: cluster, workload,
algorithm parameters (``manifest["experiment"]``, see ``core.config.experiment_to_dict``), calibration fit,
versions, git revision and dates. A prediction is only as good as these, so they travel with it."""

from __future__ import annotations

from ..core.algorithms import FACTS
from ..core.cluster import provenance_lines
from .style import label, ordered
from .tables import Cell, Table

# Long prose fields are shown once, under the table, not as a row.
_PROSE = ("description", "source", "provenance")


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v))
    return str(v)


def key_value_table(caption: str, d: dict, skip: tuple[str, ...] = ()) -> Table | None:
    flat = {k: v for k, v in flatten(d).items()
            if k.split(".")[-1] not in _PROSE and k.split(".")[0] != "provenance" and k not in skip}
    if not flat:
        return None
    notes = [f"{k}: {v}" for k, v in d.items() if k in _PROSE and v and isinstance(v, str)]
    return Table(["key", "value"], [[Cell(k), Cell(_value(v))] for k, v in flat.items()], caption=caption,
                 notes=notes, css="kv")


# Parameters an algorithm does not use (core/algorithms.py FACTS) show "–".
_KNOWN = {key for facts in FACTS.values() for key in facts.keys}


def algorithm_table(experiment: dict) -> Table | None:
    """Parameters (rows) per algorithm of the experiment (columns); "–" where an algorithm has no use
    for a parameter (DDP has no sync_every)."""
    params = experiment.get("algorithm", {})
    algos = ordered(a for a in experiment.get("algorithms", params.keys()) if a in params)
    if not algos:
        return None
    keys = list(dict.fromkeys(k for a in algos for k in params[a]))

    def cell(algo: str, key: str) -> Cell:
        used = key not in _KNOWN or algo not in FACTS or key in FACTS[algo].keys
        return Cell(_value(params[algo].get(key, "")) if used else "–", css="num")

    rows = [[Cell(k)] + [cell(a, k) for a in algos] for k in keys]
    return Table(["parameter", *[label(a) for a in algos]], rows, caption="algorithm parameters",
                 css="kv wide", notes=_overlap_notes(params, algos))


def _overlap_notes(params: dict, algos: list[str]) -> list[str]:
    """What a whole round of delay or eager outer steps assume (docs/algorithms.md, docs/model.md)."""
    spec = params.get("streaming_diloco", {}) if "streaming_diloco" in algos else {}
    notes = []
    period = spec.get("sync_every", 0) // max(1, spec.get("fragments", 1))
    if period and spec.get("fragment_sync_delay") == period:
        notes.append("Streaming DiLoCo, fragment_sync_delay = sync_every / fragments: each all-reduce runs "
                     "under the whole next round and is applied a round late; the first sync sends nothing "
                     "and the last round's outer gradient is never sent.")
    if spec.get("eager_outer"):
        notes.append("Streaming DiLoCo, eager_outer: each worker's own share is applied fresh and the others' "
                     "from the all-reduce, so the global model differs by worker; its extra pass is timed "
                     "within the outer step u.")
    return notes


# ModelSpec holds the fields of both families; show only those of the family in use.
_FAMILY_FIELDS = {"gpt_neo": ("hidden", "layers", "heads", "vocab", "seq_len", "positions"),
                  "resnet": ("variant", "depth", "width", "num_classes", "image_size", "in_channels")}


def _other_family(exp: dict) -> tuple[str, ...]:
    family = (exp.get("workload", {}).get("model") or {}).get("family")
    if family not in _FAMILY_FIELDS:
        return ()
    return tuple(f"model.{k}" for fam, keys in _FAMILY_FIELDS.items() if fam != family for k in keys)


def provenance_table(cluster: dict) -> Table | None:
    """Which cluster figures are measured (by what), published, assumed or given (``[cluster.provenance]``)."""
    prov = cluster.get("provenance")
    lines = provenance_lines(prov) if isinstance(prov, dict) else []
    if not lines:
        return None
    rows = [[Cell(line.split(":")[0]), Cell(line.partition(":")[2].strip())] for line in lines]
    return Table(["kind", "figures (where from)"], rows, caption="cluster figures: measured or assumed", css="kv")


def provenance(manifest: dict) -> dict:
    # time_dilation: the emulated cluster ran that many times slower, its times divided by it (a run or
    # validation under --time-dilation K; docs/network-emulation.md)
    keys = ("kind", "status", "started_at", "ended_at", "git_revision", "host", "pid", "command", "time_dilation")
    out = {k: manifest[k] for k in keys if manifest.get(k) not in (None, "")}
    if isinstance(out.get("command"), list):
        out["command"] = " ".join(map(str, out["command"]))
    for k, v in (manifest.get("versions") or {}).items():
        out[f"versions.{k}"] = v
    return out


def assumption_tables(manifest: dict) -> list[Table]:
    """Cluster, workload + training, algorithms, budget, calibration, provenance: each when present."""
    exp = manifest.get("experiment") if isinstance(manifest.get("experiment"), dict) else {}
    calibration = manifest.get("calibration") or manifest.get("fit")
    budget = {k: exp[k] for k in ("budget", "seed", "repeats") if k in exp}
    if isinstance(manifest.get("vary"), list):
        budget["swept"] = [v.get("key", "") for v in manifest["vary"] if isinstance(v, dict)]
    tables = [
        algorithm_table(exp),
        key_value_table("budget and seeds", budget),
        key_value_table("cluster", exp.get("cluster", {})),
        provenance_table(exp.get("cluster", {})),
        key_value_table("workload", exp.get("workload", {}), skip=_other_family(exp)),
        key_value_table("training", exp.get("train", {})),
        key_value_table("calibration fit", calibration) if isinstance(calibration, dict) else None,
        key_value_table("provenance", provenance(manifest)),
    ]
    return [t for t in tables if t is not None]
