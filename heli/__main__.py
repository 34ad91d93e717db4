"""``python -m heli`` is the ``heli`` command."""

import sys

from heli.cli import main

sys.exit(main())
