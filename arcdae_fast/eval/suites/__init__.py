"""The built-in evaluation suites, one file each; importing this package registers them
(eval/registry.py) in the default order, the order of the lines below."""
# isort: skip_file

from . import probe  # noqa: F401
from . import regress  # noqa: F401
from . import classify  # noqa: F401
from . import tad  # noqa: F401
from . import transfer  # noqa: F401
from . import recon  # noqa: F401
from . import steps  # noqa: F401
from . import fid  # noqa: F401
