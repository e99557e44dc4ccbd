"""
The benchmark runner works: C{python -m benchmarks --quick} (N=200, a few
seconds per phase) exits 0 and writes sane figures for both implementations.
No timing thresholds: only that every section is there and makes sense.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarkrun import runBenchmarks

pytestmark = pytest.mark.integration


def _number(section: dict[str, Any], *path: str) -> float:
    value: Any = section
    for key in path:
        assert isinstance(value, dict) and key in value, f"missing {'.'.join(path)}"
        value = value[key]
    assert isinstance(value, int | float) and not isinstance(value, bool), (path, value)
    assert math.isfinite(value), (path, value)
    return float(value)


def test_quick_run(tmp_path: Path) -> None:
    """
    The quick run measures both implementations in every section.
    """
    results, _ = runBenchmarks(tmp_path, "results.json", "--quick", timeout=180)
    assert results["sizes"] == [200]
    assert results["storm_size"] == 200
    runs = {run["impl"]: run for run in results["runs"]}
    assert set(runs) == {"netsupervisor", "baseline"}
    # netsupervisor on the reactor twistd netsupervisor installs, the baseline on stock Twisted's.
    assert runs["netsupervisor"]["reactor"] == "supervisor.reactor.BoundedEPollReactor"
    assert runs["baseline"]["reactor"] == "twisted.internet.epollreactor.EPollReactor"
    for impl, run in runs.items():
        assert "error" not in run, (impl, run["error"])
        assert run["n"] == 200
        assert run["establish"]["all_established"] is True
        assert run["establish"]["established"] == 200
        assert _number(run, "establish", "cpu_seconds") > 0
        # The probe ran while the connections were being made, and in the storm.
        for phase in ("establish", "storm"):
            assert _number(run, phase, "lag_ms", "count") >= 1
            assert 0 <= _number(run, phase, "lag_ms", "p99") <= _number(run, phase, "lag_ms", "max")
        assert _number(run, "memory", "bytes_per_connection") > 0
        steady = run["steady"]
        assert steady["still_established"] == 200
        assert _number(steady, "cpu_seconds") > 0
        assert 0 < _number(steady, "cpu_share") < 2
        assert _number(steady, "pings") > 0
        assert _number(steady, "cpu_per_ping_us") > 0
        # The probe alone wakes the process a hundred times a second.
        assert _number(steady, "wakes_per_second") > 50
        unprobed = steady["unprobed"]
        assert _number(unprobed, "pings") > 0
        assert _number(unprobed, "cpu_per_ping_us") > 0
        assert _number(unprobed, "window_seconds") >= 0.9
        assert 0 <= _number(unprobed, "wakes_per_second") < _number(steady, "wakes_per_second")
        for key in ("p50", "p99", "max"):
            assert _number(steady, "lag_ms", key) >= 0
        assert _number(steady, "lag_ms", "count") > 0
        storm = run["storm"]
        assert storm["all_established"] is True
        assert storm["established"] == 200
        assert _number(storm, "down_seconds") > 0
        assert _number(storm, "recovery_seconds") > 0
        assert _number(storm, "attempts_total") >= 200
        assert _number(storm, "attempts_per_connection_while_down") >= 0
        assert _number(storm, "peak_attempts_per_100ms") > 0
        assert sum(storm["histogram"]) == storm["attempts_total"]
        detection = run["detection"]
        assert detection["watched"] == 200
        assert detection["detected"] == 200
        for key in ("p50", "p99", "max"):
            assert _number(detection, "seconds", key) > 0
    ns = runs["netsupervisor"]
    assert _number(ns, "scrape", "seconds_max") > 0
    assert _number(ns, "scrape", "bytes") > 0
    assert ns["reload"]["touched"] == 1
    assert ns["reload"]["changed"] == 1
    assert ns["reload"]["unchanged"] == 199
    assert _number(ns, "reload", "total_seconds") > 0
    report = (tmp_path / "performance.md").read_text()
    assert "## Targets (issue 17)" in report
    assert "| reactor lag p99 ≤ 20 ms while establishing all N |" in report
    assert "| 200 | reactor lag, kill → everyone back: max (ms) |" in report
    assert (tmp_path / "performance-storm.svg").read_text().startswith("<svg")


def test_quick_recovery_run(tmp_path: Path) -> None:
    """
    The quick recovery suite measures the storm for both implementations
    and with a connect budget, and the flapping peer for the three sides,
    with the load around every run; and it writes the report and the figure.
    """
    quick = ("--suite", "recovery", "--quick", "--flap-seconds", "3")
    results, _ = runBenchmarks(tmp_path, "recovery.json", *quick, timeout=300)
    assert results["suite"] == "recovery"
    labels = [run["label"] for run in results["runs"]]
    assert labels == [
        "netsupervisor",
        "baseline",
        "netsupervisor connect_rate=1000",
        "flap guard on",
        "flap guard off (backoff alone)",
        "baseline",
    ]
    for run in results["runs"]:
        assert "error" not in run, (run["label"], run["error"])
        assert len(run["loadavg_before"]) == 3 and len(run["loadavg_after"]) == 3
        assert 0 <= _number(run, "other_cpu_share") <= 1
    for run in results["runs"][:3]:
        storm = run["storm"]
        assert storm["all_established"] is True
        assert _number(storm, "attempts_per_connection_until_back") >= 1
        assert 0 <= _number(storm, "recovery_p50_seconds") <= _number(storm, "recovery_seconds")
        assert sum(storm["histogram"]) == storm["attempts_total"]
    ns = results["runs"][0]["storm"]
    assert ns["attempts_by_reason"].get("release", 0) > 0, "the breaker released them"
    for run in results["runs"][3:]:
        flap = run["flap"]
        assert _number(flap, "seconds") >= 3
        assert _number(flap, "losses") > 0
    report = (tmp_path / "performance.md").read_text()
    assert "## Fleet-safe recovery (issue 11)" in report
    assert "### Targets" in report
    assert (tmp_path / "performance-storm.svg").read_text().startswith("<svg")


def test_quick_profile_run(tmp_path: Path) -> None:
    """
    C{--profile} profiles netsupervisor in each phase it measures (start-up,
    the steady window and the reconnect storm) and reports the top entries
    of each.
    """
    results, _ = runBenchmarks(tmp_path, "profile.json", "--quick", "--profile", timeout=180)
    [run] = results["runs"]
    assert "error" not in run, run["error"]
    assert run["impl"] == "netsupervisor" and run["profiled"] is True
    assert run["storm"]["all_established"] is True
    profile = run["profile"]
    assert set(profile) == {"start-up", "steady", "storm"}
    for phase, figures in profile.items():
        busy = _number(figures, "total_seconds") - _number(figures, "waiting_seconds")
        assert busy > 0, phase
        assert figures["by_own"] and figures["by_cumulative"], phase
    # The storm's profile has the reconnects in it.
    storm = [entry["function"] for entry in profile["storm"]["by_cumulative"]]
    assert any("doConnect" in name or "_release" in name for name in storm), storm
    report = (tmp_path / "performance.md").read_text()
    assert "### The reconnect storm: from the kill to everyone ESTABLISHED again" in report


def test_quick_establish_run(tmp_path: Path) -> None:
    """
    The quick establish suite runs a few alternated pairs that only
    establish, and reports the median of the ratios within each pair.
    """
    results, _ = runBenchmarks(
        tmp_path, "establish.json", "--suite", "establish", "--quick", timeout=180
    )
    assert results["suite"] == "establish"
    runs = results["runs"]
    # Three pairs at N=200, every other one the baseline first.
    assert [(run["impl"], run["round"]) for run in runs] == [
        ("netsupervisor", 0),
        ("baseline", 0),
        ("baseline", 1),
        ("netsupervisor", 1),
        ("netsupervisor", 2),
        ("baseline", 2),
    ]
    for run in runs:
        assert "error" not in run, (run["impl"], run["error"])
        assert run["establish"]["all_established"] is True
        assert _number(run, "establish", "seconds") > 0
        assert _number(run, "establish", "cpu_seconds") > 0
        assert _number(run, "establish", "pings") >= 0
        # Nothing after establishing: no steady window, no storm.
        assert "steady" not in run and "storm" not in run
    report = (tmp_path / "performance.md").read_text()
    assert "## Time to establish all N, in many pairs (issue 17)" in report
    [row] = [line for line in report.splitlines() if line.startswith("| 200 | 3 |")]
    assert "x** (" in row
