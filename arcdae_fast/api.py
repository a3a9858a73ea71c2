"""Using a trained model from Python: `load(run)` -> Model with encode, invert, decode,
reconstruct, sample, interpolate and manipulate, on any method preset, on the run's EMA
weights. The commands (`python -m arcdae_fast.sample | reconstruct | interpolate |
manipulate`) are thin wrappers over it.

    >>> from arcdae_fast import api
    >>> m = api.load("runs/quickstart")                  # a run folder or a converted one
    >>> x = m.images(8)                                  # the run's own test split
    >>> z = m.encode(x); x_T = m.invert(x, z)
    >>> same = m.decode(z, x_T)                          # the autoencoding reconstruction
    >>> new = m.sample(16, seed=0)                       # needs train_latent (or DMZ's prior)
    >>> strip = m.interpolate(x[0], x[1], n=8)
    >>> edits = m.manipulate(x[:2], "Smiling", scales=[-0.3, 0, 0.3])

Images are float32 (N, 3, R, R) in [-1, 1]. Unconditional sampling draws codes from the
method's prior when it has one (DMZ) and otherwise from the run's latent DDIM
(`python -m arcdae_fast.train_latent --run DIR`, RUN/latent/latent.pt); then x_T ~ N(0, I)
and decode. Interpolation is DiffAE's: slerp between the two inverted x_T, lerp between the
codes. Manipulation is DiffAE's: a linear attribute classifier on standardised codes
(eval/probe.py's attribute_classifier, trained on the run's labelled training split, its
epoch picked on the validation split), then z' = z + s * sqrt(D) * w / |w| in the
standardised space, decoded from the image's inverted x_T.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, session
from .config.schema import ConfigError
from .data.datasets import collate, load_image
from .eval.codes import encode_split
from .eval.data import split_dataset
from .latent import LatentDDIM, code_sampler, no_sampler
from .latent import find as find_latent


@dataclass
class Direction:
    """An attribute's manipulation direction: the classifier's unit weight row, and the
    standardisation it works in."""

    name: str
    w: torch.Tensor  # (D,) unit
    bias: float
    weight_norm: float
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        u = (z.reshape(z.shape[0], -1).float() - self.mean) / self.std
        return u @ self.w * self.weight_norm + self.bias


@dataclass
class Model:
    run: session.TrainedRun
    latent: LatentDDIM | None = None
    steps: int = 0  # decoding / inversion steps (default eval.recon_steps)
    _directions: dict[str, Direction] = field(default_factory=dict)
    _splits: dict[str, object] = field(default_factory=dict)  # the dataset splits, built once
    _codes: dict[str, object] = field(default_factory=dict)  # their codes, encoded once

    @property
    def cfg(self):
        return self.run.cfg

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def resolution(self) -> int:
        return self.cfg.data.resolution

    def split(self, name: str):
        """The run's dataset split `name` (train / valid / test), built once per Model."""
        if name not in self._splits:
            self._splits[name] = split_dataset(self.cfg.data, name, self.cfg.eval.split_seed)
        return self._splits[name]

    def _split_codes(self, name: str):
        if name not in self._codes:
            self._codes[name] = encode_split(
                self.run.method,
                self.run.ema,
                self.split(name),
                batch_size=self.cfg.eval.batch_size,
                device=self.device,
            )
        return self._codes[name]

    def _steps(self, steps: int | None) -> int:
        return steps or self.steps or self.cfg.eval.recon_steps

    # ---- images ---------------------------------------------------------------------------
    def images(
        self, n: int | None = None, split: str = "test", indices: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Images of the run's own dataset split: rows `indices`, or the first n."""
        ds = self.split(split)
        if indices is None:
            indices = range(min(len(ds), n or len(ds)))
        bad = [i for i in indices if not 0 <= i < len(ds)]
        if bad:
            raise ConfigError(
                f"image index {bad[0]} is outside the {split} split (0..{len(ds) - 1})"
            )
        batch = collate([ds[int(i)] for i in indices])
        if "image" not in batch:
            raise ConfigError(f"none of the chosen images of the {split} split could be read")
        return batch["image"]

    def load_images(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Image files, centre-cropped and resized to the model's resolution."""
        return torch.stack([load_image(Path(p), self.resolution) for p in paths])

    # ---- the autoencoder -------------------------------------------------------------------
    def _dev(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.float32)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.run.method.encode(self._dev(x), self.run.ema)

    def invert(self, x: torch.Tensor, z: torch.Tensor | None = None, steps: int | None = None):
        x = self._dev(x)
        z = self.encode(x) if z is None else z
        return self.run.method.invert(x, z, steps=self._steps(steps), nets=self.run.ema)

    def noise(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        r = self.resolution
        return torch.randn((n, self.cfg.data.channels, r, r), generator=g).to(self.device)

    def decode(
        self,
        z: torch.Tensor,
        x_T: torch.Tensor | None = None,
        steps: int | None = None,
        solver: str | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """Images from codes z, from x_T (default: seeded N(0, I) noise)."""
        x_T = self.noise(z.shape[0], seed) if x_T is None else self._dev(x_T)
        return self.run.method.decode(
            z, x_T, steps=self._steps(steps), nets=self.run.ema, solver=solver
        ).cpu()

    def reconstruct(
        self,
        x: torch.Tensor,
        start: str = "inverted",
        steps: int | None = None,
        solver: str | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """encode -> decode, from the inverted x_T or from random noise (start="random")."""
        if start not in ("inverted", "random"):
            raise ValueError(f"start must be inverted or random, got {start!r}")
        z = self.encode(x)
        x_T = self.invert(x, z, steps) if start == "inverted" else None
        return self.decode(z, x_T, steps, solver, seed)

    # ---- generation ------------------------------------------------------------------------
    def sample_codes(self, n: int, seed: int = 0, latent_steps: int | None = None):
        draw = code_sampler(self.run.method, self.latent, latent_steps)
        if draw is None:
            raise ConfigError(f"sample: {no_sampler(self.cfg.method.name)}")
        return draw(n, torch.Generator(device=self.device).manual_seed(seed), self.device)

    def sample(
        self,
        n: int,
        steps: int | None = None,
        seed: int = 0,
        latent_steps: int | None = None,
        solver: str | None = None,
    ) -> torch.Tensor:
        """n unconditional images: codes from the prior or the latent DDIM, then decode."""
        z = self.sample_codes(n, seed, latent_steps)
        return self.decode(z, None, steps, solver, seed + 1)

    def interpolate(
        self, a: torch.Tensor, b: torch.Tensor, n: int = 8, steps: int | None = None
    ) -> torch.Tensor:
        """n images from a to b (each (3, R, R)): slerp the inverted x_T, lerp the codes."""
        if n < 2:
            raise ValueError(f"interpolate needs n >= 2, got {n}")
        x = self._dev(torch.stack([a, b]))
        z = self.encode(x)
        x_T = self.invert(x, z, steps)
        alpha = torch.linspace(0, 1, n, device=self.device)
        zs = torch.stack([torch.lerp(z[0], z[1], w) for w in alpha])
        ts = torch.stack([slerp(x_T[0], x_T[1], float(w)) for w in alpha])
        return self.decode(zs, ts, steps)

    # ---- manipulation ----------------------------------------------------------------------
    def attributes(self) -> list[str]:
        return list(self.split("train").attr_names)

    def direction(self, attribute: str) -> Direction:
        """The attribute's classifier direction (fitted once per Model)."""
        if attribute in self._directions:
            return self._directions[attribute]
        codes = {}
        for split in ("train", "valid"):
            ds = self.split(split)
            if ds.attrs is None:
                raise ConfigError(
                    f"manipulate: data.dataset={self.cfg.data.dataset!r} has no binary "
                    "attributes to train the attribute classifier on (CelebA's layout, the "
                    "bundled faces)"
                )
            if attribute not in ds.attr_names:
                raise ConfigError(
                    f"manipulate: no attribute {attribute!r}; this dataset has: "
                    f"{', '.join(ds.attr_names)}"
                )
            codes[split] = self._split_codes(split)
        a = self.attributes().index(attribute)
        z = (codes["train"].z, codes["valid"].z)
        y = tuple(c.attrs[:, a : a + 1] for c in (codes["train"], codes["valid"]))
        from .eval import need_extra

        need_extra("an attribute direction")
        from .eval.probe import ProbeSettings, attribute_classifier

        lin, mu, sd = attribute_classifier(z, y, ProbeSettings(seed=self.cfg.eval.seed))
        w = lin.weight.detach()[0].double()
        d = Direction(
            attribute,
            (w / w.norm()).float().to(self.device),
            float(lin.bias.detach()[0]),
            float(w.norm()),
            torch.from_numpy(mu).float().to(self.device),
            torch.from_numpy(sd.astype(np.float32)).to(self.device),
        )
        self._directions[attribute] = d
        return d

    def edit_codes(self, z: torch.Tensor, attribute: str, scale: float) -> torch.Tensor:
        """DiffAE's edit: z + scale * sqrt(D) * w/|w| in the classifier's standardised space."""
        d = self.direction(attribute)
        u = (z.reshape(z.shape[0], -1).float() - d.mean) / d.std
        u = u + scale * math.sqrt(u.shape[1]) * d.w
        return (u * d.std + d.mean).reshape(z.shape).to(z.dtype)

    def manipulate(
        self, x: torch.Tensor, attribute: str, scales: Sequence[float], steps: int | None = None
    ) -> torch.Tensor:
        """(len(scales), N, 3, R, R): each image edited by each scale, decoded from its own
        inverted x_T (scale 0 is the reconstruction)."""
        x = self._dev(x)
        z = self.encode(x)
        x_T = self.invert(x, z, steps)
        return torch.stack(
            [self.decode(self.edit_codes(z, attribute, s), x_T, steps) for s in scales]
        )


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (DiffAE's x_T interpolation)."""
    af, bf = a.flatten().double(), b.flatten().double()
    cos = (af @ bf / (af.norm() * bf.norm())).clamp(-1, 1)
    theta = torch.arccos(cos)
    if theta < 1e-6:
        return torch.lerp(a, b, w)
    out = (torch.sin((1 - w) * theta) * af + torch.sin(w * theta) * bf) / torch.sin(theta)
    return out.reshape(a.shape).to(a.dtype)


def load(
    run: str | Path,
    ckpt: str | Path | None = None,
    latent: str | Path | None = None,
    overrides: Sequence[str] = (),
    steps: int = 0,
    trust_pickle: bool = False,
) -> Model:
    """A trained run (its newest checkpoint, or `ckpt`) and its latent DDIM when there is one
    (RUN/latent/latent.pt, or `latent`); `overrides`: data.* / eval.* / train.device keys.
    Files are read without running code from them (checkpoint.load); `trust_pickle=True`
    allows files that need pickle, for a source you trust."""
    checkpoint.trust_pickle(trust_pickle)
    tr = session.load_run(Path(run), Path(ckpt) if ckpt else None, list(overrides))
    return Model(tr, find_latent(run, latent, tr.device), steps)
