"""
C{docs/reliability.md} is what C{python -m tests.chaos} last wrote: the
committed figures cover every case of the suite as it is now, and rendering
them gives the committed report, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from supervisor.testing.chaos import FAULT_TYPES
from tests.chaos.report import render
from tests.chaos.test_faults import CASES, PROTOCOLS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests/chaos/results.json"
REPORT = ROOT / "docs/reliability.md"
SIGNAL_CASES = ("line/sighup-storm", "line/sigterm-storm", "redis/sigterm-twice")
RERUN = "stale: rerun `.venv/bin/python -m tests.chaos` and commit both files"


def results() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(RESULTS.read_text())
    return value


def test_everyCaseWasMeasured() -> None:
    """
    Every fault x protocol, the stalled handshakes, the namespace blackhole,
    the soak, the signals under load and the rotation have figures, from a
    run in which every test passed.
    """
    run = results()
    expected = {f"fault/{p}/{c.name}" for p in PROTOCOLS for c in CASES}
    expected |= {f"fault/{p}/stall-handshake" for p in PROTOCOLS}
    expected |= {"netns/line/nftables-drop", "soak/line/flap", "rotation/line/lifetime"}
    expected |= {f"signals/{case}" for case in SIGNAL_CASES}
    assert set(run["cases"]) == expected, RERUN
    assert run["run"]["exit_code"] == 0, run["run"]["pytest"]
    assert "failed" not in run["run"]["pytest"] and "skipped" not in run["run"]["pytest"]


def test_reportIsRenderedFromTheFigures() -> None:
    """
    The committed report is the rendering of the committed figures.
    """
    assert REPORT.read_text() == render(results()), RERUN


def test_reportDescribesEveryFault() -> None:
    """
    The proxy's reference table names every kind of fault.
    """
    text = render(results())
    for kind in FAULT_TYPES:
        assert f"| `{kind}` |" in text
