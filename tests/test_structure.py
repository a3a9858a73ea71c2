"""The package's shape: no import cycle (imports inside functions counted too), no file over
500 lines, and every config key saying what changing it changes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from arcdae_fast.config import (
    CHANGE_LEVELS,
    changed_keys,
    changes_of,
    key_table,
    list_presets,
    load_config,
)
from arcdae_fast.methods import names

PKG = Path(__file__).resolve().parents[1] / "arcdae_fast"


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules `name` imports anywhere in its file; an edge from a module up to
    its own package's __init__ is left out (how re-exported names travel, not a loop)."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            found.add(stem)
            found.update(f"{stem}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's modules (depth-first search; a back edge closes a cycle)."""
    found, state, stack = [], {}, []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == "open":
                found.append(stack[stack.index(w) :] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = "done"

    for v in sorted(graph):
        if v not in state:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    known = modules()
    graph = {m: imports(m, f, known) for m, f in known.items()}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # it finds one
    assert cycles(graph) == []
    # the models and methods read the schema, never the loader; inside the package every
    # module names the config layer it uses (the package's __init__ is for users)
    for m in graph:
        if m.startswith(("arcdae_fast.models", "arcdae_fast.methods")):
            assert "arcdae_fast.config.load" not in graph[m], m
        if not m.startswith("arcdae_fast.config"):
            assert "arcdae_fast.config" not in graph[m], m


def test_no_file_over_500_lines():
    long = {f.name: n for f in PKG.rglob("*.py") if (n := len(f.read_text().splitlines())) > 500}
    assert long == {}


@pytest.mark.parametrize("method", names())
def test_every_key_says_what_it_changes(method):
    own = f"{method}-quickstart.yaml"
    if own in list_presets():
        cfg = load_config(own)
    else:
        cfg = load_config("quickstart.yaml", [f"method.name={method}"])
    for key, *_ in key_table(method):
        assert changes_of(cfg, key) in CHANGE_LEVELS, key


def test_resume_and_load_checks_follow_the_metadata():
    a = load_config("quickstart.yaml")
    b = load_config(
        "quickstart.yaml",
        [
            "train.log_every=3",
            "eval.seed=5",
            "train.lr=0.1",
            "data.resolution=16",
            "model.encoder.z_dim=8",
        ],
    )
    assert changes_of(a, "train.log_every") == "nothing"
    assert changes_of(a, "train.lr") == "training" and changes_of(a, "eval.seed") == "nothing"
    assert changes_of(a, "method.lambda_jac") == "network"
    resume = changed_keys(a, b, allowed=("nothing",))
    load = changed_keys(a, b, allowed=("nothing", "training"))
    assert resume == ["data.resolution", "model.encoder.z_dim", "train.lr"]
    assert load == ["model.encoder.z_dim"]
    other = load_config("quickstart.yaml", ["method.name=diffae"])
    assert "method.name" in changed_keys(a, other, allowed=("nothing", "training"))


@pytest.mark.parametrize(
    "module",
    [
        "arcdae_fast.models",
        "arcdae_fast.config.schema",
        "arcdae_fast.methods",
        "arcdae_fast.fsdp",
        "arcdae_fast.data.layouts",
        "arcdae_fast.data.loader",
    ],
)
def test_each_layer_imports_first_in_a_fresh_process(module):
    """A loop through a package's __init__ shows only at run time, when that module is the
    first one imported (seen: models -> config -> loader -> methods -> models)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
