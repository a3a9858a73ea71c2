"""What the evaluation suites share: the splits' images and codes, the reconstructions and
the Inception features, each computed once per evaluation (`Evaluator`), and the helpers
the suites call on them. The suites themselves are in eval/suites/, one file each."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from ..config.schema import Config, EvalConfig
from ..data.datasets import ImageDataset
from ..latent import LatentDDIM
from ..nn.weights import WeightsError
from . import fid as fid_mod
from .codes import Codes, batches, encode_split
from .data import split_dataset
from .probe import ProbeSettings

STARTS = ("inverted", "random")  # where the decoder starts: DDIM-inverted x_T, random x_T


class SuiteUnavailable(RuntimeError):
    """A suite cannot run on this data or machine (the reason is the message)."""


@dataclass
class Reconstructions:
    originals: torch.Tensor  # (N, 3, R, R) in [-1, 1], on the CPU
    decoded: dict[str, torch.Tensor]  # start -> (N, 3, R, R)
    steps: int


@dataclass
class Evaluator:
    cfg: Config
    method: Any
    nets: Mapping[str, torch.nn.Module]  # the evaluation weights (the EMA)
    device: torch.device
    split: str = "test"
    progress: bool = False
    max_images: int | None = None  # overrides eval.max_images (train-time evaluation)
    recon_steps: int | None = None  # overrides eval.recon_steps
    latent: LatentDDIM | None = None  # the run's latent DDIM: the fid suite's sample FID
    _datasets: dict[str, ImageDataset] = field(default_factory=dict)
    _codes: dict[str, Codes] = field(default_factory=dict)
    _recon: Reconstructions | None = None
    _features: Any = None

    @property
    def ec(self) -> EvalConfig:
        return self.cfg.eval

    def dataset(self, split: str) -> ImageDataset:
        if split not in self._datasets:
            limit = self.ec.max_images if self.max_images is None else self.max_images
            self._datasets[split] = split_dataset(self.cfg.data, split, self.ec.split_seed, limit)
        return self._datasets[split]

    def codes(self, split: str) -> Codes:
        if split not in self._codes:
            self._codes[split] = self.encode(self.dataset(split), f"encoding {split}")
        return self._codes[split]

    def encode(self, ds: ImageDataset, desc: str, method=None, **readout) -> Codes:
        """Codes of ds by `method` (default: the evaluated one), with encode's `readout`."""
        return encode_split(
            method or self.method,
            self.nets,
            ds,
            batch_size=self.ec.batch_size,
            device=self.device,
            desc=desc,
            progress=self.progress,
            **readout,
        )

    def probe_splits(self) -> tuple[Codes, Codes, Codes]:
        """(fit, pick the regularisation, report): train, valid, the evaluated split (with
        split "valid", as during training, the validation score is the one reported)."""
        return self.codes("train"), self.codes("valid"), self.codes(self.split)

    def settings(self) -> ProbeSettings:
        ec = self.ec
        return ProbeSettings(
            ec.probe_protocol,
            ec.label_fraction,
            ec.seed,
            ec.probe_epochs,
            ec.probe_lr,
            ec.probe_batch_size,
        )

    def eval_images(self) -> ImageDataset:
        """The evaluated split, cut to eval.recon_images (the decoding suites' images)."""
        ds = self.dataset(self.split)
        if self.ec.recon_images and len(ds) > self.ec.recon_images:
            ds = ds.subset(np.arange(self.ec.recon_images))
        return ds

    def reconstructions(self) -> Reconstructions:
        if self._recon is None:
            steps = self.recon_steps or self.ec.recon_steps
            g = torch.Generator(device=self.device).manual_seed(self.ec.seed)
            originals, decoded = [], {s: [] for s in STARTS}
            desc = f"reconstructing ({steps} steps)"
            for batch in batches(self.eval_images(), self.ec.batch_size, desc, self.progress):
                x0 = batch["image"].to(self.device)
                z = self.method.encode(x0, self.nets)
                starts = {
                    "inverted": self.method.invert(x0, z, steps=steps, nets=self.nets),
                    "random": torch.randn(x0.shape, generator=g, device=self.device),
                }
                for s in STARTS:
                    decoded[s].append(self.decode(z, starts[s], steps))
                originals.append(x0.float().cpu())
            self._recon = Reconstructions(
                torch.cat(originals), {s: torch.cat(v) for s, v in decoded.items()}, steps
            )
        return self._recon

    def decode(self, z, x_T: torch.Tensor, steps: int) -> torch.Tensor:
        x = self.method.decode(z, x_T, steps=steps, nets=self.nets)
        return x.float().clamp(-1, 1).cpu()

    def inception(self):
        if self._features is None:
            try:
                self._features = fid_mod.inception(self.ec.weights_dir, self.device)
            except (WeightsError, ImportError) as e:
                raise SuiteUnavailable(str(e)) from None
        return self._features

    def fid_against(self, real: torch.Tensor, fake: torch.Tensor, feats) -> float:
        a = fid_mod.stats_of(chunks(real, self.ec.batch_size), feats)
        b = fid_mod.stats_of(chunks(fake, self.ec.batch_size), feats)
        return fid_mod.frechet_distance(*a.mean_cov(), *b.mean_cov())

    def samples(self, draw, n: int) -> Iterator[torch.Tensor]:
        """n unconditional images in batches: codes from `draw`, decoded from random x_T with
        eval.recon_steps DDIM steps (seeded by eval.seed)."""
        g = torch.Generator(device=self.device).manual_seed(self.ec.seed)
        steps = self.recon_steps or self.ec.recon_steps
        r = self.cfg.data.resolution
        for lo in tqdm(
            range(0, n, self.ec.batch_size), "sampling", disable=not self.progress, leave=False
        ):
            k = min(self.ec.batch_size, n - lo)
            z = draw(k, g, self.device)
            x_T = torch.randn((k, self.cfg.data.channels, r, r), generator=g, device=self.device)
            yield self.decode(z, x_T, steps)


def mse(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image MSE in [0, 1] pixel units of two (N, 3, H, W) batches in [-1, 1]."""
    return (((a - b) / 2) ** 2).flatten(1).mean(1).numpy()


def ssim(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Per-image SSIM of (N, 3, H, W) arrays in [0, 1] (Wang et al.'s Gaussian window)."""
    return [
        structural_similarity(
            a,
            b,
            data_range=1.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(x, y)
    ]


def chunks(x: torch.Tensor, n: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(x), n):
        yield x[i : i + n]
