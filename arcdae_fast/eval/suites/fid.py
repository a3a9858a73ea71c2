"""`fid`: rFID of the reconstructions against the split's reference statistics (cached per
image list); with codes from the method's prior or the run's latent DDIM also the FID of
unconditional samples against the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...latent import code_sampler, no_sampler
from .. import fid as fid_mod
from ..context import STARTS, Evaluator, SuiteUnavailable, chunks
from ..registry import register
from ..report import Page, fmt


def _lines(r: dict) -> list[str]:
    line = f"fid: rFID inverted {r['rfid_inverted']:.3f}, random {r['rfid_random']:.3f}"
    if "sample_fid" in r:
        line += f"; sample FID {r['sample_fid']:.3f} ({r['samples']} samples)"
    return [line]


def inception_missing(ev: Evaluator) -> str | None:
    """Loads the Inception network up front (kept for the suite): a missing or wrong file is
    said before any image is decoded."""
    try:
        ev.inception()
    except SuiteUnavailable as e:
        return str(e)
    return None


def _report(r: dict, page: Page) -> list[str]:
    return [
        "",
        f"rFID from the inverted x_T **{fmt(r['rfid_inverted'])}**, from a random "
        f"x_T **{fmt(r['rfid_random'])}** ({r['note']})",
    ]


@register(
    "fid",
    "FID of reconstructions (and of samples, with a prior or latent DDIM)",
    flat=lambda r: {f"eval_{k}": v for k, v in r.items() if k.startswith("rfid_")},
    needs=inception_missing,
    lines=_lines,
    report=_report,
)
def fid(ev: Evaluator) -> dict:
    feats = ev.inception()
    r = ev.reconstructions()
    ds = ev.dataset(ev.split)
    key = fid_mod.cache_key(
        [str(f) for f in ds.files], ds.resolution, len(r.originals), "inception-2048"
    )
    cache = Path(ev.ec.cache_dir or Path.home() / ".cache" / "arcdae_fast")
    mu, cov, cached = fid_mod.reference_stats(
        cache, key, lambda: fid_mod.stats_of(chunks(r.originals, ev.ec.batch_size), feats)
    )
    out: dict[str, Any] = {"images": len(r.originals), "reference_cached": cached}
    for s in STARTS:
        st = fid_mod.stats_of(chunks(r.decoded[s], ev.ec.batch_size), feats)
        out[f"rfid_{s}"] = fid_mod.frechet_distance(mu, cov, *st.mean_cov())
    out["note"] = (
        f"rFID of {len(r.originals)} reconstructions against the same images; "
        "paper numbers use 50k samples"
    )
    draw = code_sampler(ev.method, ev.latent)
    if draw is None:
        out["sample_fid_note"] = f"sample FID not computed: {no_sampler(ev.cfg.method.name)}"
        return out
    n = ev.ec.fid_samples or len(r.originals)
    st = fid_mod.stats_of(ev.samples(draw, n), feats)
    out["sample_fid"] = fid_mod.frechet_distance(mu, cov, *st.mean_cov())
    out["samples"] = n
    out["sample_codes"] = "prior" if hasattr(ev.method, "sample_prior") else "latent DDIM"
    return out
