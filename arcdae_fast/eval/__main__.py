"""`python -m arcdae_fast.eval --run DIR ...`: see arcdae_fast/eval/cli.py."""

import sys

from .cli import main

sys.exit(main())
