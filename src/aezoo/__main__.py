"""``python -m aezoo`` (and ``torchrun -m aezoo``): the command line."""

import sys

from .cli import main

sys.exit(main())
