"""The evaluation suites on one trained method: `probe` (attribute AP), `regress` (Pearson r,
MSE), `tad` (TAD, ATTRS), `recon` (MSE, PSNR, SSIM, LPIPS of decodings from the inverted and
from a random x_T) and `fid` (rFID of those reconstructions against the split's reference
statistics). `Evaluator` holds what they share (the splits' codes, the reconstructions) so
each is computed once; `run(names)` returns {suite: results} and, for a suite that cannot
run here (no labels, no weights), {suite: {"skipped": why}}.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..config import Config, EvalConfig
from ..data.datasets import ImageDataset
from ..nn.lpips import LPIPS
from ..nn.weights import WeightsError
from . import fid as fid_mod
from .codes import Codes, batches, encode_split
from .data import split_dataset
from .probe import ProbeSettings, attribute_probe, regression_probe
from .tad import tad

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
            self._codes[split] = encode_split(
                self.method,
                self.nets,
                self.dataset(split),
                batch_size=self.ec.batch_size,
                device=self.device,
                desc=f"encoding {split}",
                progress=self.progress,
            )
        return self._codes[split]

    def probe_splits(self) -> tuple[Codes, Codes, Codes]:
        """(fit, pick the epoch, report): train, valid, the evaluated split (with split
        "valid", as during training, the validation score is the one reported)."""
        return self.codes("train"), self.codes("valid"), self.codes(self.split)

    def settings(self) -> ProbeSettings:
        ec = self.ec
        return ProbeSettings(
            ec.probe_epochs, ec.probe_lr, ec.probe_batch_size, ec.label_fraction, ec.seed
        )

    # ---- the suites ----------------------------------------------------------------------
    def probe(self) -> dict:
        tr, va, te = self.probe_splits()
        if tr.attrs is None:
            raise SuiteUnavailable(
                f"data.dataset={self.cfg.data.dataset!r} has no binary attributes (CelebA, "
                "CelebA-HQ and the bundled faces do)"
            )
        names = self.dataset("train").attr_names
        return attribute_probe(
            (tr.z, va.z, te.z), (tr.attrs, va.attrs, te.attrs), names, self.settings()
        )

    def regress(self) -> dict:
        tr, va, te = self.probe_splits()
        if tr.factors is None:
            raise SuiteUnavailable(
                f"data.dataset={self.cfg.data.dataset!r} has no continuous targets (LFW's "
                "attributes and the bundled faces' factors do)"
            )
        names = self.dataset("train").factor_names
        return regression_probe(
            (tr.z, va.z, te.z), (tr.factors, va.factors, te.factors), names, self.settings()
        )

    def tad(self) -> dict:
        c = self.codes(self.split)
        if c.attrs is None:
            raise SuiteUnavailable(
                f"data.dataset={self.cfg.data.dataset!r} has no binary attributes for TAD"
            )
        names = self.dataset(self.split).attr_names
        return tad(c.z, c.attrs, names, self.ec.tad_threshold, self.ec.tad_mi_threshold)

    def reconstructions(self) -> Reconstructions:
        if self._recon is None:
            steps = self.recon_steps or self.ec.recon_steps
            ds = self.dataset(self.split)
            if self.ec.recon_images and len(ds) > self.ec.recon_images:
                ds = ds.subset(np.arange(self.ec.recon_images))
            g = torch.Generator(device=self.device).manual_seed(self.ec.seed)
            originals, decoded = [], {s: [] for s in STARTS}
            desc = f"reconstructing ({steps} steps)"
            for batch in batches(ds, self.ec.batch_size, desc, self.progress):
                x0 = batch["image"].to(self.device)
                z = self.method.encode(x0, self.nets)
                starts = {
                    "inverted": self.method.invert(x0, z, steps=steps, nets=self.nets),
                    "random": torch.randn(x0.shape, generator=g, device=self.device),
                }
                for s in STARTS:
                    x = self.method.decode(z, starts[s], steps=steps, nets=self.nets)
                    decoded[s].append(x.float().clamp(-1, 1).cpu())
                originals.append(x0.float().cpu())
            self._recon = Reconstructions(
                torch.cat(originals), {s: torch.cat(v) for s, v in decoded.items()}, steps
            )
        return self._recon

    def recon(self) -> dict:
        r = self.reconstructions()
        x = ((r.originals + 1) / 2).numpy()
        lpips, lpips_note = None, None
        if r.originals.shape[-1] < 32:
            lpips_note = "LPIPS needs images of at least 32 px (AlexNet's pooling)"
        else:
            try:
                lpips = LPIPS.from_files(self.ec.weights_dir)
            except WeightsError as e:
                lpips_note = str(e)
        out: dict[str, Any] = {"images": len(x), "steps": r.steps}
        for s in STARTS:
            y = ((r.decoded[s] + 1) / 2).numpy()
            mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
            with np.errstate(divide="ignore"):  # identical images: inf, capped below
                psnr = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y)]
            ssim = [
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
            res = {
                "mse": float(mse.mean()),
                "psnr": float(np.mean(np.minimum(psnr, 100.0))),  # identical images: 100 dB
                "ssim": float(np.mean(ssim)),
                "lpips": None,
            }
            if lpips is not None:
                res["lpips"] = float(_batched(lpips, r.originals, r.decoded[s]).mean())
            out[s] = res
        if lpips_note:
            out["lpips_note"] = lpips_note
        return out

    def fid(self) -> dict:
        r = self.reconstructions()
        if self._features is None:
            try:
                self._features = fid_mod.inception(self.ec.weights_dir, self.device)
            except (WeightsError, ImportError) as e:
                raise SuiteUnavailable(str(e)) from None
        feats = self._features
        ds = self.dataset(self.split)
        key = fid_mod.cache_key(
            [str(f) for f in ds.files], ds.resolution, len(r.originals), "inception-2048"
        )
        cache = Path(self.ec.cache_dir or Path.home() / ".cache" / "arcdae_fast")
        mu, cov, cached = fid_mod.reference_stats(
            cache, key, lambda: fid_mod.stats_of(_chunks(r.originals, self.ec.batch_size), feats)
        )
        out: dict[str, Any] = {"images": len(r.originals), "reference_cached": cached}
        for s in STARTS:
            st = fid_mod.stats_of(_chunks(r.decoded[s], self.ec.batch_size), feats)
            out[f"rfid_{s}"] = fid_mod.frechet_distance(mu, cov, *st.mean_cov())
        out["note"] = (
            f"rFID of {len(r.originals)} reconstructions against the same images; "
            "paper numbers use 50k samples"
        )
        return out

    def run(self, names: list[str] | tuple[str, ...]) -> dict[str, dict]:
        out = {}
        for name in names:
            try:
                out[name] = getattr(self, name)()
            except SuiteUnavailable as e:
                out[name] = {"skipped": str(e)}
        return out


def _chunks(x: torch.Tensor, n: int):
    for i in range(0, len(x), n):
        yield x[i : i + n]


def _batched(lpips: LPIPS, a: torch.Tensor, b: torch.Tensor, n: int = 64) -> torch.Tensor:
    return torch.cat([lpips(a[i : i + n], b[i : i + n]) for i in range(0, len(a), n)])


def flat(results: dict[str, dict]) -> dict[str, float]:
    """The headline numbers as flat "eval_*" keys (for metrics.jsonl)."""
    out = {}
    for name, r in results.items():
        if "skipped" in r:
            continue
        if name == "probe":
            out["eval_probe_ap"] = r["mean_ap"]
        elif name == "regress":
            out["eval_regress_r"], out["eval_regress_mse"] = r["mean_pearson_r"], r["mean_mse"]
        elif name == "tad":
            out["eval_tad"], out["eval_attrs"] = r["tad"], r["attrs"]
        elif name == "recon":
            for s in STARTS:
                for k in ("mse", "psnr", "ssim", "lpips"):
                    if r[s][k] is not None:
                        out[f"eval_recon_{k}_{s}"] = r[s][k]
        elif name == "fid":
            out.update({f"eval_{k}": v for k, v in r.items() if k.startswith("rfid_")})
    return out
