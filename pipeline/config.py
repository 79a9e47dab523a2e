"""Params flow one way: a params.yaml group -> a typed dataclass -> function arguments.

Library code never reads params.yaml; a stage reads its group and calls `from_group`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import ParamsError

T = TypeVar("T")


def from_group(cls: type[T], group: dict[str, Any] | None, name: str) -> T:
    """Build dataclass `cls` from a params group; unknown keys are an error, not silently ignored."""
    group = dict(group or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(group) - set(fields))
    if unknown:
        raise ParamsError(f"params group {name!r}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for key, value in group.items():
        field_type = fields[key].type
        if dataclasses.is_dataclass(field_type) or (isinstance(field_type, str) and key in _NESTED.get(cls, {})):
            sub = _NESTED[cls][key]
            value = from_group(sub, value, f"{name}.{key}")
        kwargs[key] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


# Nested dataclass fields, registered by the module that defines them: {cls: {field: subclass}}.
_NESTED: dict[type, dict[str, type]] = {}


def nested(cls: type, **fields: type) -> None:
    _NESTED.setdefault(cls, {}).update(fields)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no params file")
    return yaml.safe_load(path.read_text()) or {}
