"""The evaluation suites on one trained method: `probe` (attribute AP; with
eval.probe_grid_t a (layer x t) grid too), `regress` (Pearson r, MSE), `tad` (TAD, ATTRS),
`recon` (MSE, PSNR, SSIM, LPIPS of decodings from the inverted and from a random x_T),
`transfer` (the probe tested on another domain), `steps` (quality against the number of
decoding steps; prior samples' too for a method with a prior) and `fid` (rFID of the
reconstructions against the split's reference statistics; with codes from the method's prior
or the run's latent DDIM also the FID of unconditional samples against the same).
`Evaluator` holds what they share (the splits' codes, the reconstructions) so each is
computed once; `run(names)` returns {suite: results} and, for a suite that cannot run here
(no labels, no weights), {suite: {"skipped": why}}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm import tqdm

from ..config import Config, EvalConfig
from ..data.datasets import ImageDataset
from ..latent import LatentDDIM, code_sampler, no_sampler
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
            self._codes[split] = self._encode(self.dataset(split), f"encoding {split}")
        return self._codes[split]

    def _encode(self, ds: ImageDataset, desc: str, method=None, **readout) -> Codes:
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
        out = attribute_probe(
            (tr.z, va.z, te.z), (tr.attrs, va.attrs, te.attrs), names, self.settings()
        )
        if self.ec.probe_grid_t:
            out["grid"] = self.probe_grid(names)
        return out

    def probe_grid(self, names: list[str]) -> dict:
        """The DDAE protocol: the probe on codes read at every (layer, t) of the grid
        (eval.probe_grid_layers x eval.probe_grid_t); mean AP per cell and the best cell (by
        validation AP, reported on the evaluated split)."""
        readouts = getattr(self.method, "readouts", None)
        if readouts is None:
            return {"skipped": f"method {self.cfg.method.name!r} has one readout (no layer x t)"}
        layers = list(self.ec.probe_grid_layers) or readouts()
        bad = [x for x in layers if x not in readouts()]
        if bad:
            return {"skipped": f"eval.probe_grid_layers: {bad[0]!r} is not one of {readouts()}"}
        cells, labels = {}, [self.codes(s).attrs for s in ("train", "valid", self.split)]
        for layer in layers:
            for t in self.ec.probe_grid_t:
                zs = [
                    self._encode(
                        self.dataset(s), f"encoding {s} at {layer}, t={t}", t=t, layer=layer
                    ).z
                    for s in ("train", "valid", self.split)
                ]
                r = attribute_probe(zs, labels, names, self.settings())
                cells[f"{layer}@{t}"] = {
                    "mean_ap": r["mean_ap"],
                    "valid_mean_ap": r["valid_mean_ap"],
                }
        best = max(cells, key=lambda k: cells[k]["valid_mean_ap"])
        layer, t = best.split("@")
        return {"cells": cells, "best": {"layer": layer, "t": int(t), **cells[best]}}

    def transfer(self) -> dict:
        """Domain transfer: the attribute probe fitted on this data's train / valid codes,
        tested on its own test split (in domain) and on another domain's: the test images
        with shifted colours (eval.transfer_shift), or eval.transfer_dataset's test split."""
        tr, va, te = self.probe_splits()
        if tr.attrs is None:
            raise SuiteUnavailable(
                f"data.dataset={self.cfg.data.dataset!r} has no binary attributes to probe"
            )
        names = self.dataset("train").attr_names
        target, desc = self._transfer_codes(names)

        def fit(z, y):  # the same train / valid fit, tested on (z, y)
            return attribute_probe((tr.z, va.z, z), (tr.attrs, va.attrs, y), names, self.settings())

        same, moved = fit(te.z, te.attrs), fit(target.z, target.attrs)
        per = {
            k: {"in_domain": same["per_attribute"][k], "transfer": moved["per_attribute"][k]}
            for k in names
        }
        return {
            "target": desc,
            "in_domain_ap": same["mean_ap"],
            "transfer_ap": moved["mean_ap"],
            "per_attribute": per,
        }

    def _transfer_codes(self, names: list[str]) -> tuple[Codes, str]:
        ec = self.ec
        if ec.transfer_dataset is None:
            shifted = _Shifted(self.method, ec.transfer_shift)
            codes = self._encode(self.dataset(self.split), "encoding the shifted split", shifted)
            return codes, f"{self.split} split, colours shifted by {ec.transfer_shift}"
        data = dataclasses.replace(
            self.cfg.data, dataset=ec.transfer_dataset, root=ec.transfer_root
        )
        ds = split_dataset(data, "test", ec.split_seed, ec.max_images)
        if ds.attr_names != names:
            raise SuiteUnavailable(
                f"eval.transfer_dataset={ec.transfer_dataset!r} has other attributes than "
                f"{self.cfg.data.dataset!r} ({len(ds.attr_names or [])} vs {len(names)})"
            )
        codes = self._encode(ds, "encoding the other domain")
        return codes, f"{ec.transfer_dataset} test split"

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
            ssim = _ssim(x, y)
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

    def steps(self) -> dict:
        """Quality against the number of decoding steps (eval.steps_grid): each image's code
        decoded from one random x_T with s steps, MSE and SSIM to the image, and MSE to the
        eval.recon_steps-step decoding of the same code and x_T (how far s steps are from
        the converged decoding). A method with a prior (sample_prior: DMZ) also decodes codes
        drawn from it: their FID against the split when the Inception weights are present,
        and always their MSE to the converged decoding of the same prior code and x_T."""
        ref_steps = self.recon_steps or self.ec.recon_steps
        ds = self.dataset(self.split)
        if self.ec.recon_images and len(ds) > self.ec.recon_images:
            ds = ds.subset(np.arange(self.ec.recon_images))
        g = torch.Generator(device=self.device).manual_seed(self.ec.seed)
        prior = getattr(self.method, "sample_prior", None)
        grid = list(self.ec.steps_grid)
        acc = {
            n: {"mse": [], "ssim": [], "mse_to_converged": [], "prior": [], "prior_mse": []}
            for n in grid
        }
        originals = []
        for batch in batches(ds, self.ec.batch_size, "decoding at each step count", self.progress):
            x0 = batch["image"].to(self.device)
            z = self.method.encode(x0, self.nets)
            x_T = torch.randn(x0.shape, generator=g, device=self.device)
            codes = {"data": z}
            if prior is not None:
                codes["prior"] = prior(len(x0), g, self.device)
            conv = {k: self._decode(c, x_T, ref_steps) for k, c in codes.items()}
            x = ((x0.float().cpu() + 1) / 2).numpy()
            originals.append(x0.float().cpu())
            for n in grid:
                y = self._decode(z, x_T, n)
                yn = ((y + 1) / 2).numpy()
                acc[n]["mse"] += list(((x - yn) ** 2).reshape(len(x), -1).mean(1))
                acc[n]["ssim"] += _ssim(x, yn)
                acc[n]["mse_to_converged"] += list(_mse(y, conv["data"]))
                if prior is not None:
                    p = self._decode(codes["prior"], x_T, n)
                    acc[n]["prior"].append(p)
                    acc[n]["prior_mse"] += list(_mse(p, conv["prior"]))
        rows, fid_note = {}, None
        feats = None
        if prior is not None:
            try:
                feats = self._inception()
            except SuiteUnavailable as e:
                fid_note = f"sample FID not computed: {e}"
        for n in grid:
            a = acc[n]
            row = {k: float(np.mean(a[k])) for k in ("mse", "ssim", "mse_to_converged")}
            if prior is not None:
                row["prior_mse_to_converged"] = float(np.mean(a["prior_mse"]))
                if feats is not None:
                    row["prior_fid"] = self._fid_against(
                        torch.cat(originals), torch.cat(a["prior"]), feats
                    )
            rows[str(n)] = row
        out = {
            "images": len(ds),
            "converged_steps": ref_steps,
            "steps": rows,
            "prior": prior is not None,
        }
        if fid_note:
            out["fid_note"] = fid_note
        return out

    def _decode(self, z, x_T: torch.Tensor, steps: int) -> torch.Tensor:
        x = self.method.decode(z, x_T, steps=steps, nets=self.nets)
        return x.float().clamp(-1, 1).cpu()

    def _inception(self):
        if self._features is None:
            try:
                self._features = fid_mod.inception(self.ec.weights_dir, self.device)
            except (WeightsError, ImportError) as e:
                raise SuiteUnavailable(str(e)) from None
        return self._features

    def _fid_against(self, real: torch.Tensor, fake: torch.Tensor, feats) -> float:
        a = fid_mod.stats_of(_chunks(real, self.ec.batch_size), feats)
        b = fid_mod.stats_of(_chunks(fake, self.ec.batch_size), feats)
        return fid_mod.frechet_distance(*a.mean_cov(), *b.mean_cov())

    def fid(self) -> dict:
        r = self.reconstructions()
        feats = self._inception()
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
        draw = code_sampler(self.method, self.latent)
        if draw is None:
            out["sample_fid_note"] = f"sample FID not computed: {no_sampler(self.cfg.method.name)}"
            return out
        n = self.ec.fid_samples or len(r.originals)
        st = fid_mod.stats_of(self._samples(draw, n), feats)
        out["sample_fid"] = fid_mod.frechet_distance(mu, cov, *st.mean_cov())
        out["samples"] = n
        out["sample_codes"] = "prior" if hasattr(self.method, "sample_prior") else "latent DDIM"
        return out

    def _samples(self, draw, n: int):
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
            x_T = torch.randn((k, 3, r, r), generator=g, device=self.device)
            yield self._decode(z, x_T, steps)

    def run(self, names: list[str] | tuple[str, ...]) -> dict[str, dict]:
        out = {}
        for name in names:
            try:
                out[name] = getattr(self, name)()
            except SuiteUnavailable as e:
                out[name] = {"skipped": str(e)}
        return out


class _Shifted:
    """A method whose encode sees colour-shifted images: red x (1 + s), blue x (1 - s) in
    [0, 1] pixel space, clamped (a shifted colour distribution for the transfer suite)."""

    def __init__(self, method, s: float):
        self.method, self.gain = method, torch.tensor([1 + s, 1.0, 1 - s]).view(1, 3, 1, 1)

    def encode(self, x: torch.Tensor, nets):
        y = ((x + 1) / 2 * self.gain.to(x)).clamp(0, 1) * 2 - 1
        return self.method.encode(y, nets)


def _mse(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image MSE in [0, 1] pixel units of two (N, 3, H, W) batches in [-1, 1]."""
    return (((a - b) / 2) ** 2).flatten(1).mean(1).numpy()


def _ssim(x: np.ndarray, y: np.ndarray) -> list[float]:
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
            if "best" in r.get("grid", {}):
                out["eval_probe_grid_best_ap"] = r["grid"]["best"]["mean_ap"]
        elif name == "regress":
            out["eval_regress_r"], out["eval_regress_mse"] = r["mean_pearson_r"], r["mean_mse"]
        elif name == "tad":
            out["eval_tad"], out["eval_attrs"] = r["tad"], r["attrs"]
        elif name == "recon":
            for s in STARTS:
                for k in ("mse", "psnr", "ssim", "lpips"):
                    if r[s][k] is not None:
                        out[f"eval_recon_{k}_{s}"] = r[s][k]
        elif name == "transfer":
            out["eval_transfer_ap"] = r["transfer_ap"]
        elif name == "steps":
            for n, v in r["steps"].items():
                out[f"eval_steps{n}_mse"] = v["mse"]
        elif name == "fid":
            out.update({f"eval_{k}": v for k, v in r.items() if k.startswith("rfid_")})
    return out
