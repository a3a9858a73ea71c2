"""The evaluation suites' registry. A suite is a function of the shared `Evaluator`
(eval/context.py) returning a JSON-able dict, registered with its name, a one-line help, the
headline numbers it puts in metrics.jsonl (`flat`), where it needs files a check run before
any work (`needs`), and its section of report.md (`report(result, page) -> markdown lines`,
plots written through eval/report.py's `Page`). One file per suite in eval/suites/; a new
suite is a new file (or a `register` call anywhere before the command runs) and nothing else
to edit: `--suite`, its help, report.md, eval.during_training and train.eval_every all read
this registry.

Built in, in their default order: probe, regress, classify, tad, transfer, recon, steps, fid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from .context import Evaluator, SuiteUnavailable


@dataclass(frozen=True)
class Suite:
    name: str
    run: Callable[[Evaluator], dict]
    doc: str
    flat: Callable[[dict], dict[str, float]]  # result -> {"eval_*": number}
    needs: Callable[[Evaluator], str | None] | None = None  # what stops it, before any work
    warns: Callable[[Evaluator], str | None] | None = None  # what it will leave out
    lines: Callable[[dict], list[str]] | None = None  # the command's summary (default: flat)
    report: Callable[[dict, Any], list[str]] | None = None  # its report.md section (eval/report.py)


SUITES: dict[str, Suite] = {}


def register(name: str, doc: str, *, flat=None, needs=None, warns=None, lines=None, report=None):
    """Decorator: add `fn(ev) -> dict` as the suite `name` (a name already taken is an
    error, so a plug-in cannot silently replace a built-in suite)."""

    def add(fn):
        if name in SUITES:
            raise ValueError(f"evaluation suite {name!r} is registered twice")
        SUITES[name] = Suite(name, fn, doc, flat or (lambda r: {}), needs, warns, lines, report)
        return fn

    return add


def get(name: str) -> Suite:
    if name not in load():
        raise KeyError(f"unknown evaluation suite {name!r}; suites: {', '.join(SUITES)}")
    return SUITES[name]


def unknown(names) -> str | None:
    """The first name that is not a registered suite, or None."""
    return next((n for n in names if n not in load()), None)


def check(ev: Evaluator, names) -> tuple[dict[str, str], dict[str, str]]:
    """({suite: what stops it}, {suite: what it will leave out}), from the suites' checks of
    their files, before any work: a missing weight file is reported at once, not after the
    encoding and decoding."""
    stops, warnings = {}, {}
    for n in names:
        for fn, into in ((get(n).needs, stops), (get(n).warns, warnings)):
            why = fn(ev) if fn else None
            if why:
                into[n] = why
    return stops, warnings


def run(ev: Evaluator, names) -> dict[str, dict]:
    """{suite: results}; {suite: {"skipped": why}} for one that cannot run here."""
    out = {}
    for name in names:
        try:
            out[name] = get(name).run(ev)
        except SuiteUnavailable as e:
            out[name] = {"skipped": str(e)}
    return out


def summary(results: dict[str, dict]) -> list[str]:
    """The command's summary: each suite's lines (its headline numbers by default)."""
    out = []
    for name, r in results.items():
        suite = SUITES.get(name)
        if "skipped" in r or suite is None:
            out.append(f"{name}: not run")
        elif suite.lines:
            out += suite.lines(r)
        else:
            out.append(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in suite.flat(r).items()))
    return out


def flat(results: dict[str, dict]) -> dict[str, float]:
    """The headline numbers as flat "eval_*" keys (for metrics.jsonl)."""
    out = {}
    for name, r in results.items():
        if "skipped" not in r and name in SUITES:
            out.update(SUITES[name].flat(r))
    return out


def load() -> dict[str, Suite]:
    """The registry with the built-in suites in it (importing eval.suites registers them)."""
    import_module("arcdae_fast.eval.suites")
    return SUITES
