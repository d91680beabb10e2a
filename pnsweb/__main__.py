"""``python -m pnsweb``: the same as the ``pnsweb`` command."""

import sys

from pnsweb.cli import main

sys.exit(main())
