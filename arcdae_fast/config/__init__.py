"""Typed, validated configuration: YAML presets + `key=value` overrides -> `Config`.

config/schema.py: the sections and keys (types, defaults, limits, help, what a change
changes) and `ConfigError`; models and methods import only it. config/load.py: YAML,
overrides, type conversion, the method registry, the key listing. config/aliases.py: old
key names and removed keys. Unknown keys and bad values raise `ConfigError` naming the key,
what is valid and what was given.

Importing this package loads only the schema (the models import it, and the loader imports
the method registry, which imports the models); the loader's names below are read from
config/load.py when first asked for.
"""

from .schema import (
    CHANGE_LEVELS,
    Config,
    ConfigError,
    DataConfig,
    DenoiserConfig,
    DiffusionConfig,
    EncoderConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    NetConfig,
    OpsConfig,
    TrainConfig,
    changes_of,
    option,
)

LOADER = (
    "changed_keys",
    "diff_keys",
    "from_dict",
    "key_table",
    "legacy_model",
    "list_presets",
    "load_config",
    "resolve_config_path",
    "with_overrides",
)


def __getattr__(name: str):
    if name in LOADER:
        from . import aliases, load

        return getattr(aliases if name == "legacy_model" else load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHANGE_LEVELS",
    "Config",
    "ConfigError",
    "DataConfig",
    "DenoiserConfig",
    "DiffusionConfig",
    "EncoderConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "NetConfig",
    "OpsConfig",
    "TrainConfig",
    "changes_of",
    "option",
    *LOADER,
]
