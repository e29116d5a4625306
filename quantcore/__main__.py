"""``python -m quantcore``."""

import sys

from quantcore.cli import main

sys.exit(main())
