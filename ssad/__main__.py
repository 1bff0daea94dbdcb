"""``python -m ssad``: the command line."""

import sys

from ssad.cli import main

sys.exit(main())
