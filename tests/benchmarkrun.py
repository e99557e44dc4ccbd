"""
Running C{python -m benchmarks} from a test: a subprocess in the project's
directory, whose results are read back from the JSON file it writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def runBenchmarks(output: Path, results: str, *arguments: str, timeout: float) -> tuple[Any, str]:
    """
    Run C{python -m benchmarks ARGUMENTS --output OUTPUT}; it must exit 0
    within C{timeout} seconds. Return what it wrote to C{OUTPUT/RESULTS},
    and what it printed.
    """
    process = subprocess.run(
        [sys.executable, "-m", "benchmarks", *arguments, "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return json.loads((output / results).read_text()), process.stdout
