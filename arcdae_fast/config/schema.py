"""The configuration's schema: every section and key with its type, default, limits, help
and what changing it changes (`changes`), and `ConfigError`. It imports nothing of the
package but its errors, so the models and methods that read their sections import only this.
Reading YAML, overrides and old key names is config/load.py and config/aliases.py.

Sections (each a dataclass; a field whose type is a dataclass is a nested section):
`data`, `model` (`model.denoiser.*`, `model.encoder.*`), `diffusion`, `method` (the
registered method named by `method.name`, with that method's own keys), `ops`, `train`,
`eval`. A section (or a method's config) with a `check(cfg)` method validates constraints
that span sections after everything is built.

What a key changes (`option(..., changes=...)`, else the section's `CHANGES`):
- "nothing": neither the trained function nor the network (logging, checkpoints, backends,
  the compiled or eager step, evaluation): may differ when a run resumes and when it is
  loaded for evaluation or inference;
- "training": how the network is trained (data, optimizer, batch): fixed on resume, free
  when a trained run is loaded;
- "network": the network itself (model.*, method.*, diffusion.*): fixed on resume and load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .option import CHANGE_LEVELS, ConfigError, fields_of, option, plain, section

__all__ = ["CHANGE_LEVELS", "ConfigError", "option"]


@dataclass
class DataConfig:
    CHANGES: ClassVar[str] = "training"
    dataset: str = option(
        "synthetic",
        doc="synthetic: the bundled generator; folder: any image tree; celebahq: CelebAMask-HQ's "
        "layout with its attributes; lfw: LFW with lfw_attributes.txt; imagenet: "
        "train/<class>/ and val/<class>/; prepared: the output of python -m "
        "arcdae_fast.data.prepare; fashion_mnist: the IDX files (default root: Debian's "
        "dataset-fashion-mnist); cifar10: the cifar-10-batches-py folder; one of the "
        "layouts in arcdae_fast/data/layouts/ (checked by config/load.py)",
    )
    root: str | None = option(
        None, doc="dataset folder (synthetic: generated there if missing)", changes="nothing"
    )
    resolution: int = option(64, min=8, doc="training resolution (square)")
    channels: int = option(
        3,
        choices=(1, 3),
        doc="channels of the images the networks see (their input and output follow it, as "
        "their size follows data.resolution): 3, RGB (grey images replicated); 1, grey "
        "images as one channel (grey datasets only: fashion_mnist)",
        changes="network",
    )
    loader: str = option(
        "auto",
        choices=("auto", "dali", "torch"),
        doc="input pipeline; auto: DALI when importable, else the torch DataLoader",
        changes="nothing",
    )
    num_workers: int = option(2, min=0, doc="DataLoader workers / DALI threads", changes="nothing")
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
    CHANGES: ClassVar[str] = "network"
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
        from ..models.layers import attention_heads

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
    CHANGES: ClassVar[str] = "network"
    arch: str = option(
        "diffae",
        choices=("diffae", "adm_conv"),
        doc="diffae: DiffAE's network (resampling ResBlocks, single-conv encoder blocks, "
        "per-head qkv); adm_conv: the engine's first, lighter denoiser (conv resampling, "
        "two-conv encoder blocks)",
    )
    denoiser: DenoiserConfig = section(DenoiserConfig)
    encoder: EncoderConfig = section(EncoderConfig)
    attn_backend: str = option(
        "auto",
        choices=("auto", "sdpa", "flash_attn", "xformers"),
        doc="the self-attention kernel (arcdae_fast/nn/attention.py): auto picks flash_attn, "
        "then xformers, then SDPA, the first that runs here; a forced one that cannot is an "
        "error listing why",
        changes="nothing",
    )


@dataclass
class DiffusionConfig:
    CHANGES: ClassVar[str] = "network"
    schedule: str = option("linear", choices=("linear", "cosine"))
    T: int = option(1000, min=2)
    parameterization: str = option("eps", choices=("eps", "v", "x0"))


@dataclass
class MethodConfig:
    """Base of every method's config section (`method.*`); `name` picks the method from
    the registry (arcdae_fast/methods). Subclasses add their own typed keys."""

    CHANGES: ClassVar[str] = "network"

    name: str = option("arcdae", doc="the training method (python -m arcdae_fast.info lists them)")
    # the model.* networks the method builds (their sections are checked against the data)
    NETWORKS: ClassVar[tuple[str, ...]] = ("denoiser", "encoder")

    def check(self, cfg: Config) -> None:
        """Constraints that involve other sections; raise ConfigError."""


@dataclass
class OpsConfig:
    CHANGES: ClassVar[str] = "nothing"  # every backend computes the same function (tests)
    backend: str = option(
        "auto",
        doc="op backends for the whole process: auto, one backend for every op "
        "(reference, cpp, triton, cuda), or per op: 'infonce=triton,adagn=reference'; "
        "the ARCDAE_FAST_BACKEND environment variable applies where this is auto",
    )

    def check(self, cfg: Config) -> None:
        from ..ops import _backends

        try:
            _backends.parse_spec(self.backend, "ops.backend")
        except ValueError as e:
            raise ConfigError(f"config: {e}") from None


@dataclass
class EvalConfig:
    """The evaluation suites (python -m arcdae_fast.eval; train.eval_every), SPEC section 6."""

    CHANGES: ClassVar[str] = "nothing"  # evaluation never changes the training

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
    CHANGES: ClassVar[str] = "training"
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
    max_steps: int = option(1000, min=1, changes="nothing")
    grad_clip: float = option(1.0, min=0.0, doc="0 disables clipping")
    weight_decay: float = option(0.0, min=0.0)
    adam_betas: tuple[float, ...] = option((0.9, 0.999))
    adam_eps: float = option(1e-8, min=0.0)
    ema_decay: float = option(0.9999, min=0.0, doc="evaluation EMA; warm-up min(d, (1+t)/(10+t))")
    seed: int = option(0, min=0, max=2**63 - 1)
    log_every: int = option(10, min=1, changes="nothing")
    ckpt_every: int = option(500, min=1, changes="nothing")
    keep_checkpoints: int = option(3, min=1, changes="nothing")
    sample_every: int = option(
        1000, min=0, doc="PNG grid of reconstructions; 0 disables", changes="nothing"
    )
    sample_steps: int = option(20, min=1, doc="DDIM steps for the grids", changes="nothing")
    eval_every: int = option(
        0,
        min=0,
        doc="run eval.during_training on the EMA weights every N steps (0: never)",
        changes="nothing",
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
        choices=("auto", "eager", "compiled"),
        doc="compiled: the step under torch.compile with Inductor (arcdae_fast/step.py); "
        "eager: the same step uncompiled, the ground truth; auto: compiled where step agreement "
        "recorded it equal and >= 1.1x (arcdae_fast/evidence.json), else eager. The old "
        "words fast and reference still work",
        changes="nothing",
    )
    compile_mode: str = option(
        "default",
        choices=("default", "reduce-overhead", "max-autotune"),
        doc="torch.compile mode of the compiled step (reduce-overhead: CUDA graphs)",
        changes="nothing",
    )
    num_threads: int = option(
        0, min=0, doc="torch intra-op threads; 0 keeps torch's default", changes="nothing"
    )
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
        changes="nothing",
    )
    on_nonfinite: str = option(
        "stop",
        choices=("stop", "eager"),
        doc="a NaN/inf loss: stop (exit 1, checkpoints untouched); eager: a compiled run "
        "goes on with the eager step from its last checkpoint (and says so)",
        changes="nothing",
    )
    loggers: tuple[str, ...] = option(
        ("jsonl",),
        doc="where the numbers go (arcdae_fast/tracking.py): jsonl (RUN/metrics.jsonl, always "
        "written), tensorboard (RUN/tensorboard/), wandb (offline unless WANDB_MODE is set)",
        changes="nothing",
    )
    dist_timeout_s: float = option(
        600.0,
        min=1.0,
        doc="under torchrun: how long a collective waits for the other ranks before this "
        "rank stops with an error (a dead or hung peer never hangs the run)",
        changes="nothing",
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
class LatentConfig:
    """DiffAE's latent DDIM over a trained run's codes (python -m arcdae_fast.train_latent,
    arcdae_fast/latent.py); defaults: DiffAE's FFHQ-128 latent model. What a key changes
    refers to the latent model: the autoencoder's run never reads this section."""

    CHANGES: ClassVar[str] = "network"
    hidden: int = option(2048, min=1, doc="MLPSkipNet width")
    layers: int = option(10, min=1, doc="MLPSkipNet layers")
    loss: str = option("l1", choices=("l1", "l2"), doc="eps-prediction loss")
    schedule: str = option("const0.008", doc="VP schedule (DiffAE: a constant beta of 0.008)")
    T: int = option(1000, min=2)
    max_steps: int = option(
        395_000, min=1, changes="nothing", doc="training steps (DiffAE: 101M codes at batch 256)"
    )
    batch_size: int = option(256, min=1, changes="training")
    lr: float = option(1e-4, min=0.0, changes="training")
    weight_decay: float = option(0.01, min=0.0, changes="training")
    ema_decay: float = option(0.9999, min=0.0, changes="training")
    seed: int = option(0, min=0, max=2**63 - 1, changes="training")
    sample_steps: int = option(20, min=1, changes="nothing", doc="DDIM steps when sampling")
    ckpt_every: int = option(5000, min=1, changes="nothing")

    def check(self, cfg: Config | None = None) -> None:
        if self.loss not in ("l1", "l2"):
            raise ConfigError(f"config: latent.loss must be l1 or l2, got {self.loss!r}")
        for k in ("hidden", "layers", "max_steps", "batch_size", "T", "sample_steps"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"config: latent.{k} must be an int >= 1, got {v!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"config: latent.ema_decay must be in [0, 1), got {self.ema_decay!r}")


@dataclass
class Config:
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    diffusion: DiffusionConfig = section(DiffusionConfig)
    method: MethodConfig = section(MethodConfig)
    ops: OpsConfig = section(OpsConfig)
    train: TrainConfig = section(TrainConfig)
    eval: EvalConfig = section(EvalConfig)
    latent: LatentConfig = section(LatentConfig)
    # what the alias translation renamed (not part of the configuration)
    notes: list[str] = field(default_factory=list, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields_of(type(self))}


def changes_of(cfg: Config, key: str) -> str:
    """What changing the dotted `key` of `cfg` changes (CHANGE_LEVELS); a key `cfg` does not
    have (another method's) changes the network."""
    *path, name = key.split(".")
    node = cfg
    for part in path:
        node = getattr(node, part, None)
        if not dataclasses.is_dataclass(node):
            return "network"
    meta = next((f.metadata for f in fields_of(type(node)) if f.name == name), None)
    if meta is None:
        return "network"
    return meta.get("changes") or type(node).CHANGES
