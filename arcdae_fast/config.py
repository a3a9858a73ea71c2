"""Typed, validated configuration: YAML presets + `key=value` overrides -> `Config`.

Sections (each a dataclass; a field whose type is a dataclass is a nested section):
`data`, `model` (`model.denoiser.*`, `model.encoder.*`), `diffusion`, `method` (the
registered method named by `method.name`, with that method's own keys), `ops`, `train`.
Unknown keys and bad values raise `ConfigError` naming the key, what is valid and what was
given. A section (or a method's config) with a `check(cfg)` method validates constraints that
span sections after everything is built.

Keys of the pre-methods layout (`objective.*`, flat `model.*`) are accepted as documented
aliases of their new names (`ALIASES`); the resolved config is always written in the new
layout, and `Config.notes` says what was renamed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import UserError


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
) -> Any:
    meta = {"choices": choices, "min": min, "max": max, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type, doc: str = "") -> Any:
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass
class DataConfig:
    dataset: str = option(
        "synthetic",
        choices=(
            "synthetic",
            "folder",
            "ffhq",
            "celeba",
            "celebahq",
            "lfw",
            "imagenet",
            "prepared",
            "fashion_mnist",
            "cifar10",
        ),
        doc="synthetic: the bundled generator; folder: any image tree; celebahq: CelebAMask-HQ's "
        "layout with its attributes; lfw: LFW with lfw_attributes.txt; imagenet: "
        "train/<class>/ and val/<class>/; prepared: the output of python -m "
        "arcdae_fast.data.prepare; fashion_mnist: the IDX files (default root: Debian's "
        "dataset-fashion-mnist); cifar10: the cifar-10-batches-py folder",
    )
    root: str | None = option(None, doc="dataset folder (synthetic: generated there if missing)")
    resolution: int = option(64, min=8, doc="training resolution (square)")
    loader: str = option(
        "auto",
        choices=("auto", "dali", "torch"),
        doc="input pipeline; auto: DALI when importable, else the torch DataLoader",
    )
    num_workers: int = option(2, min=0, doc="DataLoader workers / DALI threads")
    prefetch: int = option(2, min=1, doc="batches prepared ahead (DALI prefetch queue depth)")
    channels_last: bool = option(False, doc="deliver NCHW images in channels_last memory")
    dali_output: str = option(
        "float",
        choices=("float", "uint8"),
        doc="DALI's output: float in [-1, 1], or uint8 converted on device",
    )
    flip: bool = option(True, doc="random horizontal flip")
    crop: str = option(
        "center",
        choices=("center", "random"),
        doc="training crop of the resized image: centred, or at a random position (DGAE's "
        "ImageNet training); evaluation always crops the centre",
    )
    synthetic_count: int = option(2048, min=16, doc="images the bundled generator writes")
    synthetic_size: int = option(64, min=16, doc="side of the generated images")
    celeba_crop: bool = option(True, doc="CelebA: DiffAE's 128px centre crop before resizing")
    max_image_pixels: int = option(
        100_000_000, min=1, doc="an image with more pixels is refused by name (and skipped)"
    )
    split: str = option(
        "train",
        choices=("train", "valid", "test", "all"),
        doc="split when the dataset has a partition file",
    )


def _check_levels(key: str, mult: tuple[int, ...], resolution: int) -> None:
    if not mult or any(x < 1 for x in mult):
        raise ConfigError(f"config: {key} must be a non-empty list of ints >= 1, got {list(mult)}")
    if resolution % 2 ** (len(mult) - 1):
        raise ConfigError(
            f"config: data.resolution={resolution} must be divisible by "
            f"2**(len({key}) - 1) = {2 ** (len(mult) - 1)}"
        )


@dataclass
class NetConfig:
    """Sizes shared by the ADM networks (the denoiser's and the encoder's sections)."""

    KEY: ClassVar[str] = "model.*"
    base_channels: int = option(128, min=1)
    channel_mult: tuple[int, ...] = option((1, 1, 2, 3, 4))
    num_res_blocks: int = option(2, min=1)
    attn_resolutions: tuple[int, ...] = option((16,))
    num_heads: int = option(1, min=1, doc="attention heads (when head_channels is 0)")
    head_channels: int = option(
        0, min=0, doc="channels per attention head; 0: num_heads heads (DiffAE: one head)"
    )
    max_groups: int = option(32, min=1, doc="GroupNorm groups (the largest divisor <= this)")

    def check(self, cfg: Config) -> None:
        if self.KEY.rpartition(".")[2] not in cfg.method.NETWORKS:
            return  # a network this method does not build (DDAE++ has no encoder)
        _check_levels(f"{self.KEY}.channel_mult", self.channel_mult, cfg.data.resolution)
        from .models.layers import attention_heads

        res, sites = cfg.data.resolution, []
        for m in self.channel_mult:  # attention at the listed resolutions, and the middle's
            if res in self.attn_resolutions:
                sites.append(self.base_channels * m)
            res //= 2
        for ch in [*sites, self.base_channels * self.channel_mult[-1]]:
            try:
                attention_heads(ch, self.num_heads, self.head_channels)
            except ValueError as e:
                raise ConfigError(
                    f"config: {self.KEY}.num_heads={self.num_heads} / head_channels="
                    f"{self.head_channels}: {e}"
                ) from None


@dataclass
class DenoiserConfig(NetConfig):
    """The ADM U-Net denoiser (arcdae_fast/models/unet.py); defaults: DiffAE's FFHQ-128."""

    KEY: ClassVar[str] = "model.denoiser"
    dropout: float = option(0.1, min=0.0, max=0.99)
    embed_channels: int = option(512, min=1, doc="width of the time embedding (DiffAE: 512)")


@dataclass
class EncoderConfig(NetConfig):
    """The semantic encoder: the downsampling half of an ADM U-Net (models/encoder.py);
    defaults: DiffAE's FFHQ-128."""

    KEY: ClassVar[str] = "model.encoder"
    channel_mult: tuple[int, ...] = option((1, 1, 2, 3, 4, 4))
    z_dim: int = option(512, min=1, doc="width of the holistic code z")


@dataclass
class ModelConfig:
    arch: str = option(
        "diffae",
        choices=("diffae", "adm_conv"),
        doc="diffae: DiffAE's network (resampling ResBlocks, single-conv encoder blocks, "
        "per-head qkv); adm_conv: the engine's first, lighter denoiser (conv resampling, "
        "two-conv encoder blocks)",
    )
    denoiser: DenoiserConfig = _section(DenoiserConfig)
    encoder: EncoderConfig = _section(EncoderConfig)
    attn_backend: str = option(
        "auto",
        choices=("auto", "sdpa", "flash_attn", "xformers"),
        doc="the self-attention kernel (arcdae_fast/nn/attention.py): auto picks flash_attn, "
        "then xformers, then SDPA, the first that runs here; a forced one that cannot is an "
        "error listing why",
    )


@dataclass
class DiffusionConfig:
    schedule: str = option("linear", choices=("linear", "cosine"))
    T: int = option(1000, min=2)
    parameterization: str = option("eps", choices=("eps", "v", "x0"))


@dataclass
class MethodConfig:
    """Base of every method's config section (`method.*`); `name` picks the method from
    the registry (arcdae_fast/methods). Subclasses add their own typed keys."""

    name: str = option("arcdae", doc="the training method (python -m arcdae_fast.info lists them)")
    # the model.* networks the method builds (their sections are checked against the data)
    NETWORKS: ClassVar[tuple[str, ...]] = ("denoiser", "encoder")

    def check(self, cfg: Config) -> None:
        """Constraints that involve other sections; raise ConfigError."""


@dataclass
class OpsConfig:
    backend: str = option(
        "auto",
        doc="op backends for the whole process: auto, one backend for every op "
        "(reference, cpp, triton, cuda), or per op: 'infonce=triton,adagn=reference'; "
        "the ARCDAE_FAST_BACKEND environment variable applies where this is auto",
    )

    def check(self, cfg: Config) -> None:
        from .ops import _backends

        try:
            _backends.parse_spec(self.backend, "ops.backend")
        except ValueError as e:
            raise ConfigError(f"config: {e}") from None


@dataclass
class EvalConfig:
    """The evaluation suites (python -m arcdae_fast.eval; train.eval_every), SPEC section 6."""

    weights_dir: str | None = option(
        None, doc="folder of the pretrained feature networks (FID Inception, LPIPS AlexNet)"
    )
    cache_dir: str | None = option(
        None, doc="FID reference statistics (default ~/.cache/arcdae_fast)"
    )
    batch_size: int = option(64, min=1, doc="images per batch when encoding / reconstructing")
    split_seed: int = option(
        0, min=0, max=2**63 - 1, doc="80/10/10 split of datasets without an official one"
    )
    max_images: int = option(0, min=0, doc="images per split at most (0: all)")
    probe_protocol: str = option(
        "converged",
        choices=("converged", "diti"),
        doc="converged: L-BFGS logistic regression / ridge, strength picked on the validation "
        "split; diti: DiTi's Adam probe for the steps its paper ran (eval/probe.py)",
    )
    probe_epochs: int = option(15, min=1, doc="diti protocol: epochs of CelebA's train split")
    probe_lr: float = option(1e-3, min=0.0, doc="diti protocol: Adam's learning rate")
    probe_batch_size: int = option(128, min=1, doc="diti protocol: batch size")
    baselines: bool = option(
        True, doc="classify suite: also probe raw pixels and the network at random init"
    )
    knn_k: int = option(20, min=1, doc="classify suite: neighbours of the k-NN probe")
    knn_temperature: float = option(0.07, min=1e-6, doc="classify suite: k-NN vote temperature")
    label_fraction: float = option(1.0, min=1e-6, doc="share of the training labels the probes use")
    probe_grid_t: tuple[int, ...] = option(
        (),
        doc="the probe also sweeps a (layer x t) grid at these timestep indices (methods with "
        "readouts, e.g. ddaepp; the DDAE protocol) and reports the best cell; (): no sweep",
    )
    probe_grid_layers: tuple[str, ...] = option(
        (), doc="the grid's layers (the method's readouts); (): all of them"
    )
    tad_threshold: float = option(0.75, min=0.5, doc="best AUROC an attribute needs to count")
    tad_mi_threshold: float = option(
        0.2, min=0.0, doc="InfoDiffusion's filter: max shared information / entropy; 1 disables"
    )
    recon_steps: int = option(100, min=1, doc="DDIM steps of the reconstruction suite")
    recon_images: int = option(0, min=0, doc="images reconstructed (0: the whole split)")
    fid_samples: int = option(
        0,
        min=0,
        doc="unconditional samples of the fid suite's sample FID (0: as many as the split's "
        "images; the paper protocol: 50000); codes from the method's prior or the run's latent "
        "DDIM, decoded with recon_steps DDIM steps",
    )
    transfer_shift: float = option(
        0.3,
        min=0.0,
        max=1.0,
        doc="transfer suite without transfer_dataset: the test images' colours shifted (red "
        "x (1 + s), blue x (1 - s) in [0, 1], clamped)",
    )
    transfer_dataset: str | None = option(
        None, doc="transfer suite: test on this data.dataset's test split (same attributes)"
    )
    transfer_root: str | None = option(None, doc="its data.root")
    steps_grid: tuple[int, ...] = option(
        (1, 2, 5, 10), doc="decoding step counts of the steps suite (few-step decoding)"
    )
    seed: int = option(0, min=0, max=2**63 - 1, doc="random x_T and probe initialisation")
    during_training: tuple[str, ...] = option(
        ("probe", "recon"),
        doc="suites train.eval_every runs (cheap ones: probe, recon, classify); checked when "
        "the training starts",
    )
    during_training_images: int = option(256, min=8, doc="images per split at train time")
    during_training_recon_steps: int = option(20, min=1)

    def check(self, cfg: Config) -> None:
        if self.label_fraction > 1:
            raise ConfigError("config: eval.label_fraction must be in (0, 1]")


@dataclass
class TrainConfig:
    batch_size: int = option(
        32, min=1, doc="global batch; with torchrun each of N ranks takes batch_size / N"
    )
    lr: float = option(1e-4, min=0.0)
    warmup_steps: int = option(0, min=0, doc="linear warm-up from 0 to train.lr")
    lr_schedule: str = option(
        "constant",
        choices=("constant", "cosine", "linear"),
        doc="after the warm-up: constant (DiffAE), or a cosine / linear decay to "
        "train.min_lr at train.max_steps (DGAE)",
    )
    min_lr: float = option(0.0, min=0.0, doc="where a decaying schedule ends")
    max_steps: int = option(1000, min=1)
    grad_clip: float = option(1.0, min=0.0, doc="0 disables clipping")
    weight_decay: float = option(0.0, min=0.0)
    adam_betas: tuple[float, ...] = option((0.9, 0.999))
    adam_eps: float = option(1e-8, min=0.0)
    ema_decay: float = option(0.9999, min=0.0, doc="evaluation EMA; warm-up min(d, (1+t)/(10+t))")
    seed: int = option(0, min=0, max=2**63 - 1)
    log_every: int = option(10, min=1)
    ckpt_every: int = option(500, min=1)
    keep_checkpoints: int = option(3, min=1)
    sample_every: int = option(1000, min=0, doc="PNG grid of reconstructions; 0 disables")
    sample_steps: int = option(20, min=1, doc="DDIM steps for the grids")
    eval_every: int = option(
        0, min=0, doc="run eval.during_training on the EMA weights every N steps (0: never)"
    )
    device: str = option("auto", choices=("auto", "cpu", "cuda"))
    precision: str = option(
        "auto",
        choices=("auto", "fp32", "bf16"),
        doc="auto: bf16 autocast where the device computes bf16 natively "
        "(CUDA; CPUs with AVX512-BF16/AMX), else fp32",
    )
    step: str = option(
        "auto",
        choices=("auto", "reference", "fast"),
        doc="fast: the compiled step (arcdae_fast/step.py); reference: eager; auto: fast "
        "where it was measured to win (CUDA; CPUs with native bf16), else reference",
    )
    compile_mode: str = option(
        "default",
        choices=("default", "reduce-overhead", "max-autotune"),
        doc="torch.compile mode of the fast step (reduce-overhead: CUDA graphs)",
    )
    num_threads: int = option(0, min=0, doc="torch intra-op threads; 0 keeps torch's default")
    grad_accum: int = option(
        1,
        min=1,
        doc="micro-batches per step on each rank (gradients summed; under DDP all-reduced "
        "once, on the last); the InfoNCE negatives are then a micro-batch's across ranks",
    )
    parallel: str = option(
        "ddp",
        choices=("ddp", "fsdp"),
        doc="under torchrun: ddp: DistributedDataParallel (replicated weights, gradient "
        "buckets all-reduced while backward runs); fsdp: FSDP2 fully_shard per U-Net stage "
        "and encoder (parameters, gradients, optimizer state and EMAs sharded; sharded "
        "checkpoints with torch.distributed.checkpoint)",
    )
    on_nonfinite: str = option(
        "stop",
        choices=("stop", "eager"),
        doc="a NaN/inf loss: stop (exit 1, checkpoints untouched); eager: a compiled run "
        "goes on with the eager step from its last checkpoint (and says so)",
    )
    loggers: tuple[str, ...] = option(
        ("jsonl",),
        doc="where the numbers go (arcdae_fast/tracking.py): jsonl (RUN/metrics.jsonl, always "
        "written), tensorboard (RUN/tensorboard/), wandb (offline unless WANDB_MODE is set)",
    )
    dist_timeout_s: float = option(
        600.0,
        min=1.0,
        doc="under torchrun: how long a collective waits for the other ranks before this "
        "rank stops with an error (a dead or hung peer never hangs the run)",
    )

    def check(self, cfg: Config) -> None:
        bad = [x for x in self.loggers if x not in ("jsonl", "tensorboard", "wandb")]
        if bad:
            raise ConfigError(
                f"config: train.loggers: unknown {bad[0]!r}; choose from jsonl, tensorboard, wandb"
            )
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(
                f"config: train.adam_betas must be two numbers in [0, 1), got "
                f"{list(self.adam_betas)}"
            )
        if not self.ema_decay <= 1:
            raise ConfigError("config: train.ema_decay must be in [0, 1]")
        if self.lr_schedule != "constant" and self.min_lr > self.lr:
            raise ConfigError(
                f"config: train.min_lr={self.min_lr} is above train.lr={self.lr}; a decaying "
                "schedule goes down to it"
            )


@dataclass
class Config:
    data: DataConfig = _section(DataConfig)
    model: ModelConfig = _section(ModelConfig)
    diffusion: DiffusionConfig = _section(DiffusionConfig)
    method: MethodConfig = _section(MethodConfig)
    ops: OpsConfig = _section(OpsConfig)
    train: TrainConfig = _section(TrainConfig)
    eval: EvalConfig = _section(EvalConfig)
    # what the alias translation renamed (not part of the configuration)
    notes: list[str] = field(default_factory=list, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in _fields(type(self))}


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name != "notes"]


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in _fields(type(v))}
    return list(v) if isinstance(v, tuple) else v


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
    "ops.backend",  # every backend computes the same function (tests/test_<op>.py)
    "model.attn_backend",  # likewise (the GPU check compares them)
    "train.eval_every",
    "train.parallel",  # ddp and fsdp compute the same average gradient
    "train.dist_timeout_s",
    "train.loggers",
    "train.on_nonfinite",
    "data.root",
    "data.num_workers",
    "data.loader",
}
RESUME_MUTABLE_SECTIONS = ("eval.",)  # evaluation settings never change the training

# ---- aliases: the pre-methods layout -> the new keys ---------------------------------------
ALIASES: dict[str, tuple[str, ...]] = {
    "objective.preset": ("method.name",),
    "objective.backend": ("ops.backend",),
    "model.base_channels": ("model.denoiser.base_channels",),
    "model.channel_mult": ("model.denoiser.channel_mult",),
    "model.num_res_blocks": ("model.denoiser.num_res_blocks",),
    "model.attn_resolutions": ("model.denoiser.attn_resolutions",),
    "model.dropout": ("model.denoiser.dropout",),
    "model.head_channels": ("model.denoiser.head_channels", "model.encoder.head_channels"),
    "model.max_groups": ("model.denoiser.max_groups", "model.encoder.max_groups"),
    "model.enc_base_channels": ("model.encoder.base_channels",),
    "model.enc_channel_mult": ("model.encoder.channel_mult",),
    "model.enc_num_res_blocks": ("model.encoder.num_res_blocks",),
    "model.enc_attn_resolutions": ("model.encoder.attn_resolutions",),
    "model.z_dim": ("model.encoder.z_dim",),
    "model.num_parts": ("method.num_parts",),
    "model.part_key_dim": ("method.part_key_dim",),
    "model.part_dim": ("method.part_dim",),
}
ALIAS_PREFIXES = {"objective.": "method."}  # every other objective.* key is a method key
# values that were removed: (key, old value) -> (the value that replaces it, why)
REMOVED_VALUES = {
    ("train.parallel", "manual"): (
        "ddp",
        "the hand-written all-reduce was removed (measured no faster than DDP, "
        "docs/measurements.md#data-parallel); DDP averages the same gradients",
    ),
}
REMOVED = {
    "model.fused_adagn": "the U-Net always calls the adagn op; for the unfused eager "
    "composition set ops.backend=adagn=reference",
}


def _replace_removed_value(key: str, value: Any, notes: list[str] | None) -> Any:
    """A removed value (REMOVED_VALUES) as the value that replaces it, noted; else value."""
    if not isinstance(value, str) or (key, value) not in REMOVED_VALUES:
        return value
    new, why = REMOVED_VALUES[key, value]
    if notes is not None:
        notes.append(f"{key}={value} -> {new}: {why}")
    return new


def legacy_model(model: dict[str, Any]) -> dict[str, Any]:
    """An old flat `model` section with what the old engine built written out: its network
    (arch adm_conv, a 4 x base_channels time embedding) and its defaults that changed (64
    channels per attention head). A config in the old layout keeps meaning what it meant."""
    out = dict(model)
    out["arch"] = "adm_conv"
    out.setdefault("head_channels", 64)
    denoiser = dict(out.get("denoiser") or {})
    denoiser.setdefault("embed_channels", 4 * out.get("base_channels", 128))
    out["denoiser"] = denoiser
    return out


def new_keys(key: str) -> tuple[str, ...]:
    """The key(s) an old dotted key stands for now (the key itself when it is not old)."""
    if key in ALIASES:
        return ALIASES[key]
    for old, new in ALIAS_PREFIXES.items():
        if key.startswith(old):
            return (new + key[len(old) :],)
    return (key,)


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for i, p in enumerate(parents):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config: '{'.'.join(parents[: i + 1])}' must be a mapping")
    node[last] = value


def translate(raw: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """raw config in any layout -> the new layout (a new dict); old keys are noted."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: the top level must be a mapping of sections, got {raw!r}")
    for name, v in raw.items():
        if not isinstance(v, dict) and v is not None:
            raise ConfigError(f"config: section '{name}' must be a mapping, got {v!r}")
    model = raw.get("model") or {}
    if "arch" not in model and any(f"model.{k}" in ALIASES for k in model):
        raw = {**raw, "model": legacy_model(model)}
        if notes is not None:
            notes.append("model in the old layout: the old engine's network (model.arch=adm_conv)")
    flat = _flatten({k: v for k, v in raw.items() if v is not None})
    out: dict[str, Any] = {k: {} for k, v in raw.items() if v is not None and k != "objective"}
    moved: dict[str, str] = {}
    for key, value in flat.items():
        if key in REMOVED:
            if value is True:  # the old default: nothing to do
                continue
            raise ConfigError(f"config: {key} was removed; {REMOVED[key]}")
        value = _replace_removed_value(key, value, notes)
        for new in new_keys(key):
            if new != key:
                if notes is not None:
                    notes.append(f"{key} -> {new}")
                if new in flat and flat[new] != value:
                    raise ConfigError(
                        f"config: {key} (old name of {new}) and {new} are both set, to "
                        f"{value!r} and {flat[new]!r}; keep only {new}"
                    )
                if moved.get(new, value) != value:
                    raise ConfigError(
                        f"config: {key} and {moved[new]} both set {new}, to different values"
                    )
                moved[new] = key
            _set(out, new, value)
    return out


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
    fields = {f.name: f for f in _fields(cls)}
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
    from .methods import registry

    owners = [
        n for n in registry.names() if key in {f.name for f in _fields(registry.get(n).Config)}
    ]
    return f" (method.{key} is a key of {', '.join(owners)})" if owners else ""


def _method_class(name: Any) -> type:
    from .methods import registry

    if not isinstance(name, str):
        raise ConfigError(f"config: method.name must be of type str, got {name!r}")
    try:
        return registry.get(name)
    except KeyError:
        raise ConfigError(
            f"config: method.name must be one of {registry.names()}, got {name!r}"
        ) from None


def _checks(obj: Any, cfg: Config) -> None:
    for f in _fields(type(obj)):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _checks(v, cfg)
    if hasattr(obj, "check") and obj is not cfg:
        obj.check(cfg)


def from_dict(raw: dict[str, Any], notes: list[str] | None = None) -> Config:
    """A validated Config from a raw mapping in any layout; `notes`: renames already noted."""
    notes = list(notes or [])
    raw = translate(raw, notes)
    sections = [f.name for f in _fields(Config)]
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
        value = _replace_removed_value(key, value, notes)
        for new in new_keys(key):
            if new != key and notes is not None:
                notes.append(f"{key} -> {new}")
            _set(out, new, value)
    return out


def load_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    notes: list[str] = []
    raw = with_overrides(read_yaml(resolve_config_path(name)), overrides, notes)
    return from_dict(raw, notes)


def flat_dict(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """A `Config.to_dict()` result as {dotted key: value}."""
    return _flatten(cfg_dict)


def diff_keys(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two `Config.to_dict()` results."""
    fa, fb = _flatten(a), _flatten(b)
    return [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def describe(cls: type, prefix: str) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) for every key of a section class, nested included."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in _fields(cls):
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
        rows.append((key, _type_name(hints[f.name]), _plain(default), doc))
    return rows


def key_table(method: str) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) of every key of a config whose method is `method`."""
    hints = typing.get_type_hints(Config)
    rows = []
    for f in _fields(Config):
        cls = _method_class(method).Config if f.name == "method" else hints[f.name]
        rows += describe(cls, f.name)
    return rows
