"""YAML presets + `key=value` overrides -> a validated `Config`: type conversion with
errors naming the key, what is valid and what was given; the method registry picks the
`method` section's class; the key listing of `python -m arcdae_fast.info --keys`."""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..data import layout, layouts  # noqa: F401  (layouts: the built-ins register)
from ..methods import registry
from .aliases import REMOVED, flatten, new_keys, replace_removed_value, set_key, translate
from .option import fields_of, plain
from .schema import Config, ConfigError, MethodConfig, changes_of


# ---- building and validating ----------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return {int: "int", float: "float", bool: "bool (true/false)", str: "str"}.get(
        tp, str(tp).replace("typing.", "")
    )


def _convert(key: str, value: Any, tp: Any, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(key, value, args[0], meta)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config: {key} must be a list of {_type_name(inner)}, got {value!r}")
        return tuple(_convert(f"{key}[{i}]", v, inner, {}) for i, v in enumerate(value))
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    ok = (
        isinstance(value, bool)
        if tp is bool
        else isinstance(value, int) and not isinstance(value, bool)
        if tp is int
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if tp is float
        else isinstance(value, str)
    )
    if not ok:
        raise ConfigError(f"config: {key} must be of type {_type_name(tp)}, got {value!r}")
    value = float(value) if tp is float else value
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"config: {key} must be one of {list(meta['choices'])}, got {value!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"config: {key} must be >= {meta['min']}, got {value!r}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"config: {key} must be <= {meta['max']}, got {value!r}")
    return value


def build_section(name: str, cls: type, raw: Any) -> Any:
    """A dataclass instance from a mapping, nested sections included; `name` is its dotted
    key (for messages)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: section '{name}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in fields_of(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"config: unknown key '{name}.{unknown[0]}'; valid keys in '{name}': "
            f"{', '.join(fields)}{_other_method_hint(name, unknown[0], cls)}"
        )
    kwargs = {}
    for k, v in raw.items():
        key = f"{name}.{k}"
        if dataclasses.is_dataclass(hints[k]):
            kwargs[k] = build_section(key, hints[k], v)
        else:
            kwargs[k] = _convert(key, v, hints[k], dict(fields[k].metadata))
    return cls(**kwargs)


def _other_method_hint(section: str, key: str, cls: type) -> str:
    """For method keys: which registered methods have the unknown key."""
    if section != "method":
        return ""
    owners = [
        n for n in registry.names() if key in {f.name for f in fields_of(registry.get(n).Config)}
    ]
    return f" (method.{key} is a key of {', '.join(owners)})" if owners else ""


def _method_class(name: Any) -> type:
    if not isinstance(name, str):
        raise ConfigError(f"config: method.name must be of type str, got {name!r}")
    try:
        return registry.get(name)
    except KeyError:
        raise ConfigError(
            f"config: method.name must be one of {registry.names()}, got {name!r}"
        ) from None


def _checks(obj: Any, cfg: Config) -> None:
    for f in fields_of(type(obj)):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _checks(v, cfg)
    if hasattr(obj, "check") and obj is not cfg:
        obj.check(cfg)


def from_dict(raw: dict[str, Any], notes: list[str] | None = None) -> Config:
    """A validated Config from a raw mapping in any layout; `notes`: renames already noted."""
    notes = list(notes or [])
    raw = translate(raw, notes)
    sections = [f.name for f in fields_of(Config)]
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(
            f"config: unknown section '{unknown[0]}'; valid sections: {', '.join(sections)}"
        )
    method = dict(raw.get("method") or {})
    method_cls = _method_class(method.setdefault("name", MethodConfig.name))
    hints = typing.get_type_hints(Config)
    built = {
        n: build_section(n, method_cls.Config if n == "method" else hints[n], raw.get(n))
        for n in sections
        if n != "method"
    }
    cfg = Config(**built, method=build_section("method", method_cls.Config, method))
    renamed = sorted({n for n in notes if " -> " in n})
    cfg.notes = ["config: " + n for n in dict.fromkeys(notes) if " -> " not in n]
    if renamed:
        cfg.notes.append("config: old key names (still accepted): " + ", ".join(renamed))
    if cfg.data.dataset not in layout.LAYOUTS:
        raise ConfigError(
            f"config: data.dataset must be one of {layout.names()}, got {cfg.data.dataset!r}"
        )
    _checks(cfg, cfg)
    return cfg


def resolve_config_path(name: str) -> Path:
    """A path relative to the cwd, else a packaged preset (`ffhq.yaml` or `ffhq`)."""
    p = Path(name)
    if p.is_file():
        return p
    stem = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    packaged = resources.files("arcdae_fast") / "configs" / stem
    if p.parent == Path(".") and packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(
        f"config: no file {name!r} in the current directory and no packaged preset "
        f"of that name; presets: {', '.join(list_presets())}"
    )


def list_presets() -> list[str]:
    folder = resources.files("arcdae_fast") / "configs"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))


def parse_override(item: str) -> tuple[list[str], Any]:
    key, eq, value = item.partition("=")
    if not eq or not key or "." not in key or "" in key.split("."):
        raise ConfigError(
            f"config: override {item!r} must look like section.key=value (e.g. "
            "train.batch_size=32, model.denoiser.channel_mult=[1,2])"
        )
    try:
        parsed = yaml.safe_load(value) if value else None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"config: cannot parse the value of override {item!r}: {yaml_problem(e)} of the value"
        ) from None
    return key.split("."), parsed


def yaml_problem(e: yaml.YAMLError) -> str:
    """YAML's error as one phrase: what, and where (line:column, 1-based)."""
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else what


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path} is not a text (YAML) file") from None
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must hold a mapping of sections")
    return raw


def with_overrides(
    raw: dict[str, Any], overrides: list[str] | tuple[str, ...], notes: list[str] | None = None
) -> dict[str, Any]:
    """raw (any layout) with `key=value` overrides applied, in the new layout; renamed old
    keys are appended to `notes`."""
    out = translate(raw, notes)
    for item in overrides:
        keys, value = parse_override(item)
        method = out.get("method") or {}
        if new_keys(".".join(keys))[0] == "method.name" and value != method.get(
            "name", MethodConfig.name
        ):
            # another method: the file's method section was written for the one it names
            dropped = sorted(k for k in method if k != "name")
            if dropped and notes is not None:
                notes.append(f"method.name={value} drops the file's {', '.join(dropped)}")
            out["method"] = {}
        key = ".".join(keys)
        if key in REMOVED:
            if value is not True:
                raise ConfigError(f"config: {key} was removed; {REMOVED[key]}")
            continue
        value = replace_removed_value(key, value, notes)
        for new in new_keys(key):
            if new != key and notes is not None:
                notes.append(f"{key} -> {new}")
            set_key(out, new, value)
    return out


def load_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    notes: list[str] = []
    raw = with_overrides(read_yaml(resolve_config_path(name)), overrides, notes)
    return from_dict(raw, notes)


def diff_keys(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two `Config.to_dict()` results."""
    fa, fb = flatten(a), flatten(b)
    return [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def changed_keys(
    old: Config, new: Config, allowed: tuple[str, ...], section: str | None = None
) -> list[str]:
    """The dotted keys that differ between two configs and whose `changes` (schema.py) is
    not in `allowed`: the resume check allows ("nothing",), the load check ("nothing",
    "training"). `section`: only its keys (train_latent: "latent"); None: the autoencoder's
    (every section but `latent`, which only train_latent reads)."""
    keys = diff_keys(old.to_dict(), new.to_dict())
    mine = [
        k for k in keys if (k.split(".")[0] == section if section else k.split(".")[0] != "latent")
    ]
    return [k for k in mine if changes_of(new, k) not in allowed]


def describe(cls: type, prefix: str) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) for every key of a section class, nested included."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in fields_of(cls):
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        doc = f.metadata.get("doc", "")
        if f.metadata.get("choices"):
            doc = (
                (doc + "; " if doc else "") + "one of " + ", ".join(map(str, f.metadata["choices"]))
            )
        rows.append((key, _type_name(hints[f.name]), plain(default), doc))
    return rows


def key_table(method: str) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) of every key of a config whose method is `method`."""
    hints = typing.get_type_hints(Config)
    rows = []
    for f in fields_of(Config):
        cls = _method_class(method).Config if f.name == "method" else hints[f.name]
        rows += describe(cls, f.name)
    return rows
