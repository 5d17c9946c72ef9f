""" "Use this learning rate / batch size": the value a page chose (the range test, the sweep, an
auto-tune study), carried to every other page's inputs, and said where it is shown.

`use("lr", 0.03, "range test (steepest)")` records a choice. A page seeds its widget with
`seed(key, "lr", fallback)` before drawing it: the key takes the chosen value (through
`transform`, e.g. a range around it) when nothing was chosen for it yet or a new value was
chosen since; a value the user typed afterwards is kept until the next choice. `caption(...)`
says where the value came from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from lrbs.methods.range_test import lr_range_around
from pages.common.state import default

KEYS = {"lr": ("chosen_lr", "chosen_lr_source"), "batch": ("chosen_batch", "chosen_batch_source")}
WHAT = {"lr": "lr", "batch": "batch"}
APPLIED = "_chosen_applied"  # key -> the chosen value it last took


def use(kind: str, value: float | int, source: str) -> None:
    """Make `value` the default of every page's `kind` ("lr" or "batch") input."""
    value_key, source_key = KEYS[kind]
    st.session_state[value_key] = int(value) if kind == "batch" else float(value)
    st.session_state[source_key] = source


def chosen(kind: str) -> tuple[float | int, str] | None:
    """The chosen value and where it came from, or None."""
    value_key, source_key = KEYS[kind]
    value = st.session_state.get(value_key)
    if value is None:
        return None
    return value, st.session_state.get(source_key) or "another page"


def seed(key: str, kind: str, fallback: Any, transform: Callable[[Any], Any] | None = None) -> bool:
    """Seed widget `key` (before it is drawn): the chosen value (transformed), when this key
    has not taken this choice yet, else keep what it has, else `fallback`. True when the key
    now holds what the choice gave it."""
    found = chosen(kind)
    applied = st.session_state.setdefault(APPLIED, {})
    if found is not None and applied.get(key) != found[0]:
        value = transform(found[0]) if transform else found[0]
        st.session_state[key] = value
        applied[key] = found[0]
        applied[key + "/value"] = value
    default(key, fallback)
    return found is not None and applied.get(key + "/value") == st.session_state.get(key)


def note(kind: str, key: str | None = None) -> str | None:
    """ "From the range test (steepest): lr 0.03", and whether `key` still holds it."""
    found = chosen(kind)
    if found is None:
        return None
    value, source = found
    shown = f"{value:.3g}" if kind == "lr" else f"{int(value):,}"
    text = f"From {source}: {WHAT[kind]} {shown}"
    if key is not None:
        applied = st.session_state.get(APPLIED, {})
        if applied.get(key + "/value") != st.session_state.get(key):
            text += " (changed here)"
    return text


def caption(*pairs: tuple[str, str | None], target=None) -> None:
    """One caption naming where each chosen value (`(kind, key)` pairs) came from."""
    parts = [n for kind, key in pairs if (n := note(kind, key))]
    if parts:
        (target or st).caption("; ".join(parts) + ".")


def lr_range(centre: float, decades: float = 1.0) -> tuple[float, float]:
    """`decades` of learning rate centred (geometrically) on `centre`, rounded to 3 digits."""
    return lr_range_around(centre, decades, digits=3)
