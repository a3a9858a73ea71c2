"""The dataset layouts as a registry: `data.dataset` names one. A layout is one file in
data/layouts/ that registers how it finds its images, labels and splits (`build`), whether
it has an official train/valid/test split (`partition`; evaluation splits the others 80/10/10
with a seed) and what to tell a user whose data is missing (`help`). A new layout is a new
file there and nothing else to edit: the config check, the loader and evaluation read this
registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config.schema import DataConfig
from .datasets import DataError, ImageDataset


@dataclass(frozen=True)
class Layout:
    name: str
    build: Callable[[DataConfig], ImageDataset]  # the images of cfg.split
    partition: Callable[[DataConfig], bool]  # whether it has an official split
    help: str = ""  # where to get the data and how to lay it out
    needs_root: bool = True  # data.root must be set (else: a default place)


LAYOUTS: dict[str, Layout] = {}


def register(name: str, *, partition=False, help: str = "", needs_root: bool = True):
    """Decorator: `build(cfg) -> ImageDataset` as the layout `name`; `partition`: a bool or
    `fn(cfg) -> bool`."""

    def add(build):
        if name in LAYOUTS:
            raise ValueError(f"dataset layout {name!r} is registered twice")
        part = partition if callable(partition) else (lambda cfg, p=bool(partition): p)
        LAYOUTS[name] = Layout(name, build, part, help, needs_root)
        return build

    return add


def get(name: str) -> Layout:
    """The layout `name` (the built-ins are registered once data/layouts/ is imported, as
    data/loader.py and the config loader do)."""
    if name not in LAYOUTS:
        raise DataError(f"data.dataset must be one of {names()}, got {name!r}")
    return LAYOUTS[name]


def names() -> list[str]:
    return list(LAYOUTS)


def root_of(cfg: DataConfig, help_text: str = "") -> Path:
    """data.root; when it is not set, an error with the layout's help."""
    if not cfg.root:
        raise DataError(
            f"data.root is not set for data.dataset={cfg.dataset!r}. {help_text}".strip()
        )
    return Path(cfg.root).expanduser()
