"""Training methods as plug-ins (DESIGN.md): one file per method, each a `Method` subclass with
its own config section (`method.*`), random inputs, loss terms and encode/decode; a registry
maps `method.name` to the class. Entry points (train, profile, bench, eval) talk to the
protocol in `base.py` only.

Adding a method: subclass `Method` (or a method close to yours, as ArcDAE extends DiffAE),
give it `name`, `Config` (a `MethodConfig` dataclass), `Inputs` (a `RandomInputs`
dataclass) and the protocol's methods, then `register(YourMethod)`.
"""

from . import arcdae, ddaepp, dgae, diffae, dmz  # noqa: F401  (built-in methods register on import)
from .base import Method, RandomInputs, batch_dim
from .registry import get, names, register, unregister

__all__ = ["Method", "RandomInputs", "batch_dim", "build", "get", "names", "register", "unregister"]


def build(cfg) -> Method:
    """The method `cfg.method.name` names, built from cfg."""
    return get(cfg.method.name)(cfg)
