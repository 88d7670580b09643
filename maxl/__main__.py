"""``python -m maxl`` runs the command line (also under ``torchrun``)."""

import sys

from maxl.cli.commands import main

sys.exit(main())
