"""``python -m pnsd``: the same as the ``pnsd`` command."""

import sys

from pnsd.cli import main

sys.exit(main())
