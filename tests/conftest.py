"""Suite-wide test settings.

Property tests are derandomized: every run draws the same examples (hypothesis derives them
from each test's name), so CI on a fresh clone never fails by the luck of a draw, and a
failure reproduces. ``MESHPLAN_HYPOTHESIS_RANDOM=1`` draws fresh examples for exploratory
runs; a failing example found that way belongs in the test as an ``@example``.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("meshplan", derandomize=True, database=None, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.load_profile("random" if os.environ.get("MESHPLAN_HYPOTHESIS_RANDOM") == "1"
                      else "meshplan")
