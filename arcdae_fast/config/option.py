"""A config key (`option`) and a nested section (`section`): a dataclass field with its
default and its checks (choices, limits), its help, and what a new value changes (`changes`,
one of CHANGE_LEVELS; config/schema.py explains the levels)."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from ..errors import UserError

CHANGE_LEVELS = ("nothing", "training", "network")


class ConfigError(UserError, ValueError):
    """A configuration problem, reported to the user without a traceback."""


# A config key: its default and how it is checked; `doc` shows in --help listings.
def option(
    default: Any,
    *,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    doc: str = "",
    changes: str | None = None,
) -> Any:
    """A key; `changes`: what a new value changes (CHANGE_LEVELS; None: its section's)."""
    if changes is not None and changes not in CHANGE_LEVELS:
        raise ValueError(f"changes must be one of {CHANGE_LEVELS}, got {changes!r}")
    meta = {"choices": choices, "min": min, "max": max, "doc": doc, "changes": changes}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str = "") -> Any:
    return field(default_factory=cls, metadata={"doc": doc})


def fields_of(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name != "notes"]


def plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: plain(getattr(v, f.name)) for f in fields_of(type(v))}
    return list(v) if isinstance(v, tuple) else v
