"""``python -m server.cli``: the ``spatialjam`` command."""

import sys

from server.cli.main import main

sys.exit(main())
