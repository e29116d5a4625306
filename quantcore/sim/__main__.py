"""`python -m quantcore.sim ...`: the simulate command on its own."""

import sys

from .cli import main

sys.exit(main())
