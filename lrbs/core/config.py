"""Settings as frozen dataclasses whose fields say what they are.

`option(...)` is a dataclass field carrying its help text, its command-line flag and its
bounds in the field's metadata: the CLI is generated from it (lrbs/cli/flags.py), `check`
validates an instance against it, and `from_dict` rebuilds one from the run history's JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import types
import typing
from dataclasses import MISSING, field
from typing import Any

from lrbs.core.errors import ConfigError


def option(
    default: Any = MISSING,
    *,
    help: str = "",
    flag: str | None = None,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    factory: Any = MISSING,
    cli: bool = True,
    label: str | None = None,
) -> Any:
    """A config field. `low`/`high` bound numbers (inclusive) and every number of a tuple;
    `flag` overrides the generated `--field-name`; `cli=False` keeps it off the command line;
    `label` names the setting in messages (default: the field name in words)."""
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "low": low,
        "high": high,
        "cli": cli,
        "label": label,
    }
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def label_of(f: dataclasses.Field) -> str:
    return f.metadata.get("label") or f.name.replace("_", " ")


def check(obj: Any) -> None:
    """Every number finite and inside its field's bounds, every choice known. Call it first
    in `__post_init__`; cross-field rules follow it there."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        meta = f.metadata
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if v is None:
                continue
            if meta.get("choices") is not None and v not in meta["choices"]:
                known = ", ".join(map(str, meta["choices"]))
                raise ConfigError(f"{label_of(f)}: unknown value {v!r}; known: {known}")
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if not math.isfinite(v):
                raise ConfigError(f"{label_of(f)} must be a finite number, got {v!r}")
            if meta.get("low") is not None and v < meta["low"]:
                raise ConfigError(f"{label_of(f)} must be at least {meta['low']:g}, got {v:g}")
            if meta.get("high") is not None and v > meta["high"]:
                raise ConfigError(f"{label_of(f)} must be at most {meta['high']:g}, got {v:g}")


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, else (tp, False)."""
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return functools.reduce(operator.or_, rest), True
    return tp, False


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config dataclass from its JSON form (store.jsonable's output)."""
    types_ = hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data or not f.init:
            continue
        kwargs[f.name] = _value(types_[f.name], data[f.name])
    return cls(**kwargs)


def _value(tp: Any, value: Any) -> Any:
    tp, _ = unwrap_optional(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if typing.get_origin(tp) is tuple and isinstance(value, list | tuple):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return tuple(_value(inner, v) for v in value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value
