"""``python -m sprint2`` runs the command line."""

import sys

from sprint2.cli import main

sys.exit(main())
