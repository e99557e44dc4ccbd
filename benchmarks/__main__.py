"""
C{python -m benchmarks}: see L{benchmarks.runner} and C{docs/performance.md}.
"""

import sys

from benchmarks.runner import main

sys.exit(main())
