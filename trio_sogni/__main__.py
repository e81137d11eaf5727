"""``python -m trio_sogni``: the ``trio-sogni`` command."""

import sys

from ._cli import main

sys.exit(main())
