"""The built-in dataset layouts, one file each; importing this package registers them
(data/layout.py) in the order below, the order `python -m arcdae_fast.info` lists them."""
# isort: skip_file

from . import synthetic  # noqa: F401
from . import folder  # noqa: F401
from . import ffhq  # noqa: F401
from . import celeba  # noqa: F401
from . import celebahq  # noqa: F401
from . import lfw  # noqa: F401
from . import imagenet  # noqa: F401
from . import prepared  # noqa: F401
from . import fashion_mnist  # noqa: F401
from . import cifar10  # noqa: F401
