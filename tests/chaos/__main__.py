"""
C{python -m tests.chaos}: run the chaos suite (C{pytest tests/chaos}) with
its figures recorded, save them as JSON and rewrite C{docs/reliability.md}
from them. C{--from-results JSON} measures nothing and rewrites the report
from an earlier run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.report import machineInfo
    from tests.chaos.conftest import RESULTS_VARIABLE
    from tests.chaos.report import writeReport

    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "tests/chaos/results.json")
    parser.add_argument("--report", type=Path, default=ROOT / "docs/reliability.md")
    parser.add_argument("--from-results", type=Path, help="rewrite the report from this JSON")
    parser.add_argument("pytest_args", nargs="*", help="more arguments for pytest")
    arguments = parser.parse_args(argv)

    if arguments.from_results is not None:
        results: dict[str, Any] = json.loads(arguments.from_results.read_text())
        writeReport(results, arguments.report)
        print(f"wrote {arguments.report}")
        return 0

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        figures = Path(directory) / "figures.json"
        env = dict(os.environ, **{RESULTS_VARIABLE: str(figures)})
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/chaos",
                # It checks the figures this run is about to replace.
                "--ignore=tests/chaos/test_report.py",
                *arguments.pytest_args,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        sys.stdout.write(done.stdout[-3000:])
        cases = json.loads(figures.read_text()) if figures.exists() else {}
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "no output"
    results = {
        "run": {
            "seconds": time.monotonic() - started,
            "pytest": summary.strip("= "),
            "exit_code": done.returncode,
            "load": load,
            "machine": machineInfo(),
        },
        "cases": cases,
    }
    arguments.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    writeReport(results, arguments.report)
    print(f"wrote {arguments.output} and {arguments.report}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
