"""Messages through Python's logging: each module logs to `logging.getLogger(__spec__.name)`
(under the `arcdae_fast` logger), `setup` gives the package one stderr handler with a rank
prefix under torchrun (`[rank 1] ...`, from RANK / WORLD_SIZE), and every command takes
`--quiet` (warnings and errors only; no progress bars) and `--verbose` (debug messages).
A command's one-line `error:` (errors.run) is printed whatever the level. Known-harmless
warnings of the libraries we call are filtered here, at their source and by their text."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

ROOT = "arcdae_fast"


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is at the time (pytest swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def prefix() -> str:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""


def setup(quiet: bool = False, verbose: bool = False) -> None:
    """Configure the package's logger (idempotent: one handler)."""
    root = logging.getLogger(ROOT)
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        root.addHandler(_Stderr())
    for h in root.handlers:
        h.setFormatter(logging.Formatter(prefix() + "%(message)s"))
    quiet_library_warnings()


def ensure() -> None:
    """The package's handler at the default level, unless a command or the embedding program
    configured logging already (Trainer and the other entry classes call it: used from Python,
    as tests/ddp_worker.py does, they report as the commands do)."""
    root = logging.getLogger(ROOT)
    if not root.handlers and not logging.getLogger().handlers:
        setup()


def quiet() -> bool:
    """Whether the package logs below warnings (progress bars go with info messages)."""
    return not logging.getLogger(ROOT).isEnabledFor(logging.INFO)


def quiet_library_warnings() -> None:
    # Inductor's lowering calls its own deprecated helper (torch 2.13): three FutureWarnings
    # per compiled run that say nothing about our code
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\._prims_common\.check` is deprecated",
        category=FutureWarning,
    )


class _Level(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        setup(
            quiet=getattr(namespace, "quiet", False), verbose=getattr(namespace, "verbose", False)
        )


def add_flags(p: argparse.ArgumentParser) -> None:
    """--quiet / --verbose on a command's parser (its parser is built per call: the level
    starts at info)."""
    setup()
    p.add_argument(
        "-q",
        "--quiet",
        nargs=0,
        action=_Level,
        default=False,
        help="only warnings and errors; no progress bar",
    )
    p.add_argument(
        "-v", "--verbose", nargs=0, action=_Level, default=False, help="also debug messages"
    )


def bars(no_progress: bool = False) -> bool:
    """Whether progress bars show: not asked off, not --quiet, and stderr is a terminal (in a
    log file a bar is noise; the trainer logs a line per interval instead)."""
    return not no_progress and not quiet() and sys.stderr.isatty()
