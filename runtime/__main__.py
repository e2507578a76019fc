"""``python -m runtime ...`` = ``meshplan-runtime ...``."""

import sys

from runtime.cli import main

sys.exit(main())
