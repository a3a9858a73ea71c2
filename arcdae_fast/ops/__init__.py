"""Public ops. Each takes `backend="auto"` and dispatches through `_backends`; the choice for
"auto" is a process-level setting: `use_backend(spec)` (a context manager), `set_backend(spec)`
(what the trainer does with `ops.backend`), else the ARCDAE_FAST_BACKEND environment variable."""

from . import _backends
from ._backends import set_backend, use_backend
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
    "set_backend",
    "snr_gate",
    "snr_weighted_infonce",
    "timestep_augment",
    "timestep_augment_with_noise",
    "use_backend",
]

_backends._parse_env_now()  # before any op is traced (see there)
