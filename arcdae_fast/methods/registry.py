"""The method registry: name -> Method subclass (a typed dict; no names built from strings).

Built-in methods register when `arcdae_fast.methods` is imported. A method defined elsewhere
registers itself with `register(MyMethod)` (its module imported before the config is read),
or is listed by its package under the `arcdae_fast.methods` entry-point group
(`mymethod = "mypkg.mymethod:MyMethod"`), which is loaded when its name is first asked for.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Method

METHODS: dict[str, type[Method]] = {}
ENTRY_POINT_GROUP = "arcdae_fast.methods"


def register(cls: type[Method]) -> type[Method]:
    """Add a Method subclass under its `name` (usable as a class decorator)."""
    from .base import Method

    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register() takes a Method subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__}.name must be a non-empty str")
    if METHODS.get(name, cls) is not cls:
        raise ValueError(f"method {name!r} is already registered ({METHODS[name].__qualname__})")
    for attr in ("Config", "Inputs"):
        if not isinstance(getattr(cls, attr, None), type):
            raise TypeError(f"{cls.__name__}.{attr} must be a dataclass type")
    METHODS[name] = cls
    return cls


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def _load_entry_point(name: str) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            register(ep.load())


def get(name: str) -> type[Method]:
    """The Method subclass registered as `name` (KeyError when there is none). The built-ins
    are registered already: importing this module runs the package's __init__, which imports
    them."""
    if name not in METHODS:
        _load_entry_point(name)
    return METHODS[name]


def names() -> list[str]:
    """Every registered method's name (the built-ins included)."""
    return sorted(METHODS)
