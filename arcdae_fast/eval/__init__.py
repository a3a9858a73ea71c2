"""Evaluation of trained runs (SPEC section 6): linear probes (attribute AP, regression
Pearson r / MSE), TAD and ATTRS, reconstruction (MSE, PSNR, SSIM, LPIPS) and FID, as the
`python -m arcdae_fast.eval` command and during training (`train.eval_every`).

The suites need the `eval` extra (scikit-learn, SciPy, scikit-image, matplotlib): `need_extra`
says so in one line; importing this package alone (codes, splits) does not need it."""

from __future__ import annotations

import importlib.util

from ..errors import UserError

EXTRA = {"sklearn": "scikit-learn", "scipy": "scipy", "skimage": "scikit-image"}


def need_extra(what: str = "evaluation") -> None:
    """A one-line UserError naming the missing packages and the extra that installs them."""
    missing = [pkg for mod, pkg in EXTRA.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise UserError(f"{what} needs {', '.join(missing)}: pip install 'arcdae_fast[eval]'")


__all__ = ["need_extra"]
