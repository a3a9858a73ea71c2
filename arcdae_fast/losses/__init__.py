"""Loss terms the methods compose: the diffusion loss (`diffusion.py`), the InfoNCE alignment
(`align.py`), the Hutchinson Jacobian term (`jacobian.py`), each over the public ops, and the
Gaussian KL (`kl.py`); the perceptual LPIPS loss is arcdae_fast/nn/lpips.py."""

from .align import InfoNCE
from .diffusion import DiffusionLoss
from .jacobian import jacobian_term
from .kl import gaussian_kl, reparameterize

__all__ = ["DiffusionLoss", "InfoNCE", "gaussian_kl", "jacobian_term", "reparameterize"]
