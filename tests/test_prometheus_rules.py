"""
The alerting rules of C{docs/prometheus/alerts.yml}: C{promtool} accepts them,
and their unit tests (C{docs/prometheus/alerts.test.yml}) pass: every alert
fires on synthetic series that cross its threshold and stays quiet below it.
That their expressions find data on a real daemon is for
C{tests/integration/test_prometheus.py}.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.programs import requireProgram

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docs" / "prometheus"
ALERTS = RULES / "alerts.yml"
ALERTS_TEST = RULES / "alerts.test.yml"


def alertNames() -> list[str]:
    """
    The names of the alerts of C{alerts.yml}, in order (the file is plain
    enough for a pattern; PyYAML is not a dependency).
    """
    return re.findall(r"^\s*- alert: (\w+)\s*$", ALERTS.read_text(), re.MULTILINE)


def promtool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [requireProgram("promtool"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=RULES,
    )


def test_promtoolChecksTheRules() -> None:
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    names = alertNames()
    assert len(names) == len(set(names)) == 8, names
    assert f"SUCCESS: {len(names)} rules found" in result.stdout, result.stdout


def test_promtoolUnitTestsPass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_everyAlertIsTestedFiringAndQuiet() -> None:
    """
    Each alert has, in the unit tests, at least one evaluation where it must
    fire and one where it must not.
    """
    text = ALERTS_TEST.read_text()
    cases = re.findall(r"alertname: (\w+)\s*\n\s*exp_alerts:( \[\])?", text)
    for name in alertNames():
        outcomes = {quiet == " []" for alert, quiet in cases if alert == name}
        assert outcomes == {True, False}, f"{name}: {outcomes}"
    assert {alert for alert, _ in cases} == set(alertNames())


def test_theUnitTestsCanFail(tmp_path: Path) -> None:
    """
    C{promtool test rules} does fail when an alert's threshold is moved: the
    unit tests are not vacuous.
    """
    (tmp_path / "alerts.yml").write_text(
        ALERTS.read_text()
        .replace("< 0.9", "< 0.7")
        .replace(") > 3", ") > 30")
        .replace('state=~"open|half_open"', 'state="open"')
        .replace("flap_holds_total[15m]) > 0", "flap_holds_total[15m]) > 1")
        .replace("full|timeout", "full")
    )
    (tmp_path / "alerts.test.yml").write_text(ALERTS_TEST.read_text())
    result = subprocess.run(
        [requireProgram("promtool"), "test", "rules", "alerts.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    failed = result.stdout + result.stderr
    assert "NetsupervisorEstablishedShareLow" in failed
    assert "NetsupervisorConnectionFlapping" in failed
    assert "NetsupervisorBreakerOpen" in failed
    assert "NetsupervisorConnectionHeldFlapping" in failed
    assert "NetsupervisorOperationsRefused" in failed
