"""Built-in presets: TOML files under ``workloads/`` and ``clusters/``, each with its sources stated.

A workload preset is a partial experiment (``[workload]``, ``[train]``, ``[algorithm]``, ``[budget]``);
a cluster preset holds a ``[cluster]`` table. ``--workload`` and ``--cluster`` take a preset name or a
path to such a file (a calibration profile written by ``palsgd calibrate`` is a cluster file).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..errors import ConfigError

HERE = Path(__file__).parent
KINDS = {"workload": "workloads", "cluster": "clusters", "convergence": "convergence", "prior": "priors"}
DEFAULT_WORKLOAD = "gpt-neo-125m"
DEFAULT_CLUSTER = "a100-4x8-ib100"


def names(kind: str) -> list[str]:
    return sorted(p.stem for p in (HERE / KINDS[kind]).glob("*.toml"))


def path_of(kind: str, name: str) -> Path:
    return HERE / KINDS[kind] / f"{name}.toml"


def resolve(kind: str, ref: str, source: str) -> Path:
    """A preset name or a file path -> the file; unknown names raise ConfigError listing the known."""
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"must name a {kind} preset or file", key=kind, value=ref, source=source)
    candidate = Path(ref).expanduser()
    if ref.endswith(".toml") or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"{kind} file not found", key=kind, value=ref, source=source)
        return candidate
    path = path_of(kind, ref)
    if not path.is_file():
        raise ConfigError(f"unknown {kind} preset; known: {', '.join(names(kind))}", key=kind, value=ref,
                          source=source)
    return path


def read(kind: str, name: str) -> dict:
    with open(path_of(kind, name), "rb") as f:
        return tomllib.load(f)


def read_toml(path: str | Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", source=str(path)) from None
