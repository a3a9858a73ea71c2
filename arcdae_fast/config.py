"""Typed, validated configuration: YAML presets + `key=value` overrides -> `Config`.

Unknown keys and bad values raise `ConfigError` naming the key, what is valid and what was
given. `objective.preset` (arcdae | diffae) fills every objective key the user did not set.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem, reported to the user without a traceback."""


def _f(
    default: Any, *, choices: tuple | None = None, min: float | None = None, doc: str = ""
) -> Any:
    meta = {"choices": choices, "min": min, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: str = _f(
        "synthetic",
        choices=("synthetic", "folder", "ffhq", "celeba"),
        doc="synthetic: the bundled generator; folder: any image tree",
    )
    root: str | None = _f(None, doc="dataset folder (synthetic: generated there if missing)")
    resolution: int = _f(64, min=8, doc="training resolution (square)")
    loader: str = _f(
        "auto",
        choices=("auto", "dali", "torch"),
        doc="input pipeline; auto: DALI when importable, else the torch DataLoader",
    )
    num_workers: int = _f(2, min=0, doc="DataLoader workers / DALI threads")
    prefetch: int = _f(2, min=1, doc="batches prepared ahead (DALI prefetch queue depth)")
    channels_last: bool = _f(False, doc="deliver NCHW images in channels_last memory")
    dali_output: str = _f(
        "float",
        choices=("float", "uint8"),
        doc="DALI's output: float in [-1, 1], or uint8 converted on device",
    )
    flip: bool = _f(True, doc="random horizontal flip")
    synthetic_count: int = _f(2048, min=16, doc="images the bundled generator writes")
    synthetic_size: int = _f(64, min=16, doc="side of the generated images")
    celeba_crop: bool = _f(True, doc="CelebA: DiffAE's 128px centre crop before resizing")
    split: str = _f(
        "train",
        choices=("train", "valid", "test", "all"),
        doc="split when the dataset has a partition file",
    )


@dataclass
class ModelConfig:
    base_channels: int = _f(128, min=1)
    channel_mult: tuple[int, ...] = _f((1, 1, 2, 3, 4))
    num_res_blocks: int = _f(2, min=1)
    attn_resolutions: tuple[int, ...] = _f((16,))
    dropout: float = _f(0.1, min=0.0)
    head_channels: int = _f(64, min=1)
    max_groups: int = _f(32, min=1)
    enc_base_channels: int = _f(128, min=1)
    enc_channel_mult: tuple[int, ...] = _f((1, 1, 2, 3, 4, 4))
    enc_num_res_blocks: int = _f(2, min=1)
    enc_attn_resolutions: tuple[int, ...] = _f((16,))
    z_dim: int = _f(512, min=1)
    num_parts: int = _f(8, min=0)
    part_key_dim: int = _f(64, min=1)
    part_dim: int = _f(128, min=1)
    fused_adagn: bool = _f(
        True,
        doc="U-Net AdaGN through objective.backend (the fused C++/CUDA "
        "op when available); false: the eager reference composition",
    )


@dataclass
class DiffusionConfig:
    schedule: str = _f("linear", choices=("linear", "cosine"))
    T: int = _f(1000, min=2)
    parameterization: str = _f("eps", choices=("eps", "v", "x0"))


@dataclass
class ObjectiveConfig:
    preset: str = _f("arcdae", choices=("arcdae", "diffae"))
    lambda_align: float = _f(1.0, min=0.0)
    lambda_jac: float = _f(0.1, min=0.0)
    tau_nce: float = _f(0.1, min=1e-6)
    tau_snr: float = _f(1.0, min=1e-6)
    gamma_max: float = _f(1.0, min=0.0)
    gamma_p: float = _f(1.0, min=1e-6)
    teacher: bool = _f(True, doc="keep an EMA teacher encoder")
    teacher_momentum: float = _f(0.999, min=0.0)
    cond: str = _f(
        "student",
        choices=("student", "teacher", "clean"),
        doc="code the denoiser is conditioned on",
    )
    share_noise: bool = _f(False, doc="student input uses the denoiser's noise draw")
    symmetric: bool = _f(False, doc="symmetric InfoNCE")
    jac_estimator: str = _f("fd", choices=("fd", "jvp"))
    jac_probes: int = _f(1, min=1)
    jac_every: int = _f(1, min=1, doc="lazy Jacobian term: every k steps, scaled by k")
    fd_eps: float = _f(1e-3, min=1e-12)
    jac_fp32: bool = _f(
        True,
        doc="run the fd Jacobian's encoder call in float32 under "
        "autocast (1e-3 is below bf16 resolution)",
    )
    backend: str = _f("auto", doc="backend of the fused ops (auto, reference, ...)")
    gather_negatives: bool = _f(
        True,
        doc="multi-process (torchrun): InfoNCE over the global batch, negatives gathered from "
        "every rank; false: each rank's own batch",
    )


OBJECTIVE_PRESETS: dict[str, dict[str, Any]] = {
    "arcdae": {},
    "diffae": {
        "lambda_align": 0.0,
        "lambda_jac": 0.0,
        "gamma_max": 0.0,
        "teacher": False,
        "cond": "clean",
    },
}


@dataclass
class TrainConfig:
    batch_size: int = _f(
        32, min=1, doc="global batch; with torchrun each of N ranks takes batch_size / N"
    )
    lr: float = _f(1e-4, min=0.0)
    warmup_steps: int = _f(0, min=0)
    max_steps: int = _f(1000, min=1)
    grad_clip: float = _f(1.0, min=0.0, doc="0 disables clipping")
    weight_decay: float = _f(0.0, min=0.0)
    adam_betas: tuple[float, ...] = _f((0.9, 0.999))
    ema_decay: float = _f(0.9999, min=0.0, doc="evaluation EMA; warm-up min(d, (1+t)/(10+t))")
    seed: int = _f(0, min=0)
    log_every: int = _f(10, min=1)
    ckpt_every: int = _f(500, min=1)
    keep_checkpoints: int = _f(3, min=1)
    sample_every: int = _f(1000, min=0, doc="PNG grid of reconstructions; 0 disables")
    sample_steps: int = _f(20, min=1, doc="DDIM steps for the grids")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"))
    precision: str = _f(
        "auto",
        choices=("auto", "fp32", "bf16"),
        doc="auto: bf16 autocast where the device computes bf16 natively "
        "(CUDA; CPUs with AVX512-BF16/AMX), else fp32",
    )
    step: str = _f(
        "fast",
        choices=("reference", "fast"),
        doc="fast: the compiled step (arcdae_fast/step.py); reference: eager",
    )
    compile_mode: str = _f(
        "default",
        choices=("default", "reduce-overhead", "max-autotune"),
        doc="torch.compile mode of the fast step (reduce-overhead: CUDA graphs)",
    )
    num_threads: int = _f(0, min=0, doc="torch intra-op threads; 0 keeps torch's default")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = dataclasses.asdict(self)
        for sec in out.values():
            for k, v in sec.items():
                if isinstance(v, tuple):
                    sec[k] = list(v)
        return out


# Keys that may differ when a run resumes from its checkpoints.
RESUME_MUTABLE = {
    "train.max_steps",
    "train.log_every",
    "train.ckpt_every",
    "train.sample_every",
    "train.sample_steps",
    "train.keep_checkpoints",
    "train.num_threads",
    "train.step",  # the fast and reference steps compute the same function
    "train.compile_mode",
    "data.root",
    "data.num_workers",
    "data.loader",
}


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
    return value


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: section '{name}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"config: unknown key '{name}.{unknown[0]}'; valid keys in '{name}': "
            f"{', '.join(fields)}"
        )
    kwargs = {
        k: _convert(f"{name}.{k}", v, hints[k], dict(fields[k].metadata)) for k, v in raw.items()
    }
    return cls(**kwargs)


_SECTION_CLASSES = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "objective": ObjectiveConfig,
    "train": TrainConfig,
}


def from_dict(raw: dict[str, Any]) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: the top level must be a mapping of sections, got {raw!r}")
    unknown = sorted(set(raw) - set(_SECTION_CLASSES))
    if unknown:
        raise ConfigError(
            f"config: unknown section '{unknown[0]}'; valid sections: {', '.join(_SECTION_CLASSES)}"
        )
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    obj = raw.setdefault("objective", {})
    if isinstance(obj, dict):
        preset = obj.get("preset", "arcdae")
        if preset in OBJECTIVE_PRESETS:
            for k, v in OBJECTIVE_PRESETS[preset].items():
                obj.setdefault(k, v)
    cfg = Config(**{n: _build_section(n, c, raw.get(n)) for n, c in _SECTION_CLASSES.items()})
    _cross_check(cfg)
    return cfg


def _cross_check(cfg: Config) -> None:
    r, m = cfg.data.resolution, cfg.model
    for key, mult in (
        ("model.channel_mult", m.channel_mult),
        ("model.enc_channel_mult", m.enc_channel_mult),
    ):
        if not mult or any(x < 1 for x in mult):
            raise ConfigError(
                f"config: {key} must be a non-empty list of ints >= 1, got {list(mult)}"
            )
        if r % 2 ** (len(mult) - 1):
            raise ConfigError(
                f"config: data.resolution={r} must be divisible by "
                f"2**(len({key}) - 1) = {2 ** (len(mult) - 1)}"
            )
    if len(cfg.train.adam_betas) != 2 or not all(0 <= b < 1 for b in cfg.train.adam_betas):
        raise ConfigError(
            f"config: train.adam_betas must be two numbers in [0, 1), got "
            f"{list(cfg.train.adam_betas)}"
        )
    for key in ("objective.teacher_momentum", "train.ema_decay"):
        sec, name = key.split(".")
        if not getattr(getattr(cfg, sec), name) <= 1:
            raise ConfigError(f"config: {key} must be in [0, 1]")
    if cfg.objective.cond == "teacher" and not cfg.objective.teacher:
        raise ConfigError("config: objective.cond='teacher' needs objective.teacher=true")
    if cfg.objective.lambda_align > 0 and not cfg.objective.teacher:
        raise ConfigError(
            "config: objective.lambda_align > 0 needs objective.teacher=true "
            "(the alignment target is the teacher's code)"
        )
    o = cfg.objective
    if cfg.train.step == "fast" and o.lambda_jac > 0 and o.jac_estimator != "fd":
        raise ConfigError(
            "config: train.step=fast needs objective.jac_estimator=fd (forward-mode AD "
            "through GroupNorm does not compile); use train.step=reference for jvp"
        )


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
    if not eq or not key or "." not in key:
        raise ConfigError(
            f"config: override {item!r} must look like section.key=value (e.g. train.batch_size=32)"
        )
    try:
        parsed = yaml.safe_load(value) if value else None
    except yaml.YAMLError as e:
        raise ConfigError(f"config: cannot parse the value in override {item!r}: {e}") from None
    return key.split("."), parsed


def load_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = resolve_config_path(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must hold a mapping of sections")
    for item in overrides:
        keys, value = parse_override(item)
        if len(keys) != 2:
            raise ConfigError(f"config: override key {'.'.join(keys)!r} must be section.key")
        sec = raw.setdefault(keys[0], {})
        if not isinstance(sec, dict):
            raise ConfigError(f"config: section '{keys[0]}' must be a mapping")
        sec[keys[1]] = value
    return from_dict(raw)


def diff_keys(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two `Config.to_dict()` results."""
    out = []
    for sec in sorted(set(a) | set(b)):
        sa, sb = a.get(sec, {}), b.get(sec, {})
        out += [f"{sec}.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    return out
