"""
Shared fixtures: fail any test during which something logged an error or a
failure (an exception swallowed in a callback is a bug, not noise).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from twisted.logger import ILogObserver, LogLevel
from zope.interface import provider

from tests.logs import observing

settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def noLoggedErrors() -> Iterator[list[dict[str, object]]]:
    """
    Collect error-level log events; a test that produced any fails, unless
    it took them out of the list itself.
    """
    errors: list[dict[str, object]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, object]) -> None:
        level = event.get("log_level")
        if "log_failure" in event or level in (LogLevel.error, LogLevel.critical):
            errors.append(event)

    with observing(observe):
        yield errors
    if errors:
        failures = [str(e.get("log_failure") or e.get("log_format")) for e in errors]
        pytest.fail("errors were logged:\n" + "\n".join(failures))


@pytest.fixture(autouse=True)
def collectorLeftAsFound() -> Iterator[None]:
    """
    A supervisor built as the daemon builds it holds full garbage
    collections off while it starts and freezes what it built
    (L{supervisor.garbage}): whatever a test started, the collector is as
    it was afterwards.
    """
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if gc.get_freeze_count() != frozen:
            gc.unfreeze()
