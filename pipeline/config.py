"""Params flow one way: a params.yaml group -> a typed dataclass -> function arguments.

Library code never reads params.yaml; a stage reads its group and calls `from_group`.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import ParamsError

T = TypeVar("T")


def _nested_type(f: dataclasses.Field):
    """The dataclass type of a field whose default is a dataclass instance, else None."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return type(value)
    return None


def _as_declared(value: Any, hint: Any) -> Any:
    """A whole number given for a float field, as a float.

    YAML and `dvc exp run -S key=40` write 40 where the field is a float; the config saved beside a model
    must not depend on that spelling, or the same run would write different bytes.
    """
    allowed = typing.get_args(hint) or (hint,)
    if float in allowed and int not in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_group(cls: type[T], group: dict[str, Any] | None, name: str) -> T:
    """Build dataclass `cls` from a params group; unknown keys are an error, not silently ignored."""
    group = dict(group or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(group) - set(fields))
    if unknown:
        raise ParamsError(f"params group {name!r}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for key, value in group.items():
        sub = _nested_type(fields[key])
        if sub is not None:
            if not isinstance(value, dict):
                raise ParamsError(f"params {name}.{key}: expected a mapping, got {value!r}")
            value = from_group(sub, value, f"{name}.{key}")
        kwargs[key] = _as_declared(value, hints.get(key))
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no params file")
    return yaml.safe_load(path.read_text()) or {}
