"""Command-line flags generated from config dataclasses (see lrbs/core/config.py).

Each `option` field becomes a flag: `--field-name` unless its metadata names one, typed from
the annotation (numbers, text, `--x/--no-x` for booleans, several values for a tuple, `LO HI`
pairs for a tuple of pairs), with its help text and default. Nested dataclasses (an
`OptimSpec`, a `Budget`, the `Setup`) are flattened into their own flags; a flag two configs
share (`--seed`) is one flag. Values are read back into the dataclasses by `build`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from lrbs.core.config import hints, unwrap_optional

REGISTRY = "_lrbs_flags"  # on the parser: flag -> dest, so shared flags are added once


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _scalar_type(tp: Any):
    if tp is bool:
        return bool
    if tp in (int, float, str):
        return tp
    args = set(typing.get_args(tp))
    if args == {int, str}:
        return _int_or_text
    return str


def _dest(path: tuple[str, ...]) -> str:
    return "cfg__" + "__".join(path)


def add(parser: argparse.ArgumentParser, cls: type, path: tuple[str, ...] = (), title=None):
    """Add a flag for every command-line field of `cls` (and of its nested dataclasses)."""
    group = parser.add_argument_group(title) if title else parser
    known: dict[str, str] = parser.__dict__.setdefault(REGISTRY, {})
    types_ = hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not f.init or meta.get("cli") is False:
            continue
        tp, _ = unwrap_optional(types_[f.name])
        if dataclasses.is_dataclass(tp):
            add(parser, tp, (*path, f.name))
            continue
        flags = meta.get("flag") or "--" + f.name.replace("_", "-")
        flags = (flags,) if isinstance(flags, str) else tuple(flags)
        dest = _dest((*path, f.name))
        if flags[0] in known:  # shared with an outer config (e.g. --seed): one flag
            aliases = parser.__dict__.setdefault("_lrbs_alias", {})
            aliases[dest] = known[flags[0]]
            parser.set_defaults(_lrbs_alias=aliases)
            continue
        known[flags[0]] = dest
        kwargs: dict[str, Any] = {"dest": dest, "default": None}
        default = _default_text(f)
        text = meta.get("help", "")
        kwargs["help"] = f"{text} (default: {default})" if default is not None else text
        if meta.get("choices") is not None:
            kwargs["choices"] = list(meta["choices"])
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            inner = typing.get_args(tp)[0]
            if typing.get_origin(inner) is tuple:  # pairs, repeatable: --zoom LO HI
                kwargs.update(nargs=2, action="append", type=float, metavar=("LO", "HI"))
            else:
                kwargs.update(nargs="*" if meta.get("empty_ok") else "+")
                kwargs["type"] = _scalar_type(inner)
        else:
            kwargs["type"] = _scalar_type(tp)
        if "choices" not in kwargs and "metavar" not in kwargs and tp is not bool:
            kwargs["metavar"] = flags[0].lstrip("-").replace("-", "_").upper()
        group.add_argument(*flags, **kwargs)
    return parser


def _default_text(f: dataclasses.Field) -> str | None:
    if f.default is not dataclasses.MISSING:
        d = f.default
    elif f.default_factory is not dataclasses.MISSING:
        d = f.default_factory()
    else:
        return None
    if d is None:
        return None
    if isinstance(d, tuple):
        return " ".join(map(str, d)) if d else "none"
    if dataclasses.is_dataclass(d):
        return None
    return str(d)


def given(ns: argparse.Namespace, dest: str) -> Any:
    value = getattr(ns, dest, None)
    if value is None:
        alias = getattr(ns, "_lrbs_alias", {}).get(dest)
        value = getattr(ns, alias, None) if alias else None
    return value


def build(ns: argparse.Namespace, cls: type, path: tuple[str, ...] = (), base: Any = None):
    """An instance of `cls` from the parsed flags: the flags given, over `base` (or the
    class's defaults). A nested dataclass whose class sets EXCLUSIVE (a Budget) is replaced
    as a whole when any of its flags is given, not merged with its default."""
    types_ = hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, _ = unwrap_optional(types_[f.name])
        if dataclasses.is_dataclass(tp):
            inner_base = getattr(base, f.name) if base is not None else _default(f)
            sub = build_given(ns, tp, (*path, f.name))
            if sub:
                if getattr(tp, "EXCLUSIVE", False) or inner_base is None:
                    values[f.name] = build(ns, tp, (*path, f.name))
                else:
                    values[f.name] = build(ns, tp, (*path, f.name), inner_base)
            continue
        value = given(ns, _dest((*path, f.name)))
        if value is None:
            continue
        if typing.get_origin(tp) is tuple:
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[f.name] = value
    if base is not None:
        return dataclasses.replace(base, **values)
    return cls(**values)


def build_given(ns: argparse.Namespace, cls: type, path: tuple[str, ...]) -> bool:
    """Whether any flag of this nested dataclass was given."""
    types_ = hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, _ = unwrap_optional(types_[f.name])
        if dataclasses.is_dataclass(tp):
            if build_given(ns, tp, (*path, f.name)):
                return True
        elif given(ns, _dest((*path, f.name))) is not None:
            return True
    return False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None
