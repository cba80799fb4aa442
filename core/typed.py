"""Plain dicts (from TOML and ``--set``) to frozen dataclasses and back, type-checked field by field."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal

from .errors import ConfigError


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type, data: object, skip: tuple[str, ...] = ()) -> Any:
    """``cls(**data)`` with every value checked against the field's type; unknown keys rejected.

    Fields named in ``skip`` are passed through unchecked (already built by the caller).
    """
    if not isinstance(data, dict):
        raise ConfigError("must be a table", value=data)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key; expected one of: {', '.join(sorted(fields))}",
                          key=unknown[0])
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        if name in skip:
            kwargs[name] = value
            continue
        try:
            kwargs[name] = _convert(value, hints[name])
        except ConfigError as err:
            raise err.located("", name) from None
    return cls(**kwargs)


def _convert(value: object, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # e.g. int | Literal["worker", "node"]
        return _convert_union(value, typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return build(hint, value)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"must be one of: {', '.join(map(str, allowed))}", value=value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError("must be true or false", value=value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("must be an integer", value=value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError("must be a number", value=value)
        if not math.isfinite(value):
            raise ConfigError("must be a finite number", value=value)
        return float(value)
    if hint is dict:  # a table its own module checks (workload.convergence)
        if not isinstance(value, dict):
            raise ConfigError("must be a table", value=value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError("must be a string", value=value)
        return value
    raise TypeError(f"unsupported field type {hint!r}")  # a bug in a spec, not bad input


def _convert_union(value: object, arms: tuple) -> Any:
    """The first arm that accepts ``value``; otherwise one error naming every accepted form."""
    for arm in arms:
        try:
            return _convert(value, arm)
        except ConfigError:
            continue
    forms = [", ".join(map(str, typing.get_args(a))) if typing.get_origin(a) is Literal else
             {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(a, str(a))
             for a in arms]
    raise ConfigError(f"must be one of: {' or '.join(forms)}", value=value)


def set_path(target: dict, parts: list[str], value: object) -> None:
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def merge(into: dict, new: dict, origin: dict[str, str], source: str, prefix: str = "") -> None:
    """Deep-merge ``new`` into ``into`` (tables merge, everything else replaces), recording in
    ``origin`` which source set each dotted key."""
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value, origin, source, dotted + ".")
        else:
            into[key] = _copy(value)
            origin[dotted] = source
            _mark(value, origin, source, dotted + ".")


def _copy(value: object) -> object:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _mark(value: object, origin: dict[str, str], source: str, prefix: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            origin[f"{prefix}{k}"] = source
            _mark(v, origin, source, f"{prefix}{k}.")


def to_dict(obj: object) -> Any:
    """A dataclass tree as plain dicts, lists and scalars (TOML- and JSON-ready)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj
