"""Public ops. Each takes `backend="auto"` and dispatches through `_backends`."""

from .adagn import adagn
from .attn_pool import attention_pool
from .augment import sample_augment_params, timestep_augment, timestep_augment_with_noise
from .hutchinson import hutchinson_penalty
from .infonce import snr_weighted_infonce
from .snr_gate import snr_gate

__all__ = [
    "adagn",
    "attention_pool",
    "hutchinson_penalty",
    "sample_augment_params",
    "snr_gate",
    "snr_weighted_infonce",
    "timestep_augment",
    "timestep_augment_with_noise",
]
