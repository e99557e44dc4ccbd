"""
Fixtures of the chaos suite: the real-peer launchers of the integration
tests, a chaos proxy on the running reactor, and the record of measured
figures that C{python -m tests.chaos} turns into C{docs/reliability.md}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# The launchers of real peers, shared with the integration tests; every
# process they start is killed by PID at teardown.
from tests.integration.conftest import peers, servers  # noqa: F401

RESULTS_VARIABLE = "NETSUPERVISOR_CHAOS_RESULTS"
"""Where the figures go (a JSON file), when set; see L{tests.chaos.report}."""


class Figures:
    """
    The figures measured by the chaos tests of one session, by case id.
    """

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}

    def record(self, case: str, **figures: Any) -> None:
        """
        Keep C{figures} for C{case} (merged with what it recorded before).
        """
        self.cases.setdefault(case, {}).update(figures)


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """
    The session's figures, written to C{$NETSUPERVISOR_CHAOS_RESULTS} at the end.
    """
    collected = Figures()
    yield collected
    path = os.environ.get(RESULTS_VARIABLE)
    if path:
        Path(path).write_text(json.dumps(collected.cases, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def logText() -> Generator[list[str], None, None]:
    """
    Every log event of the test, formatted, so that a test can say that no
    traceback was logged.
    """
    from twisted.logger import formatEvent

    from tests.logs import observing

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        lines.append(text)

    with observing(observe):
        yield lines
