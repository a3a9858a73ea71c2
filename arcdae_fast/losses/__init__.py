"""Loss terms the methods compose: the diffusion loss (`diffusion.py`), the InfoNCE alignment
(`align.py`) and the Hutchinson Jacobian term (`jacobian.py`), each over the public ops."""

from .align import InfoNCE
from .diffusion import DiffusionLoss
from .jacobian import jacobian_term

__all__ = ["DiffusionLoss", "InfoNCE", "jacobian_term"]
