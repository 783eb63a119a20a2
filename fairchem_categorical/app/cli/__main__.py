"""``python -m fairchem_categorical.app.cli``: the same as ``fairchem-categorical``."""

import sys

from fairchem_categorical.app.cli import main

sys.exit(main())
