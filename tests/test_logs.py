"""
The transition log and L{supervisor.logs.setLogLevel}.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from twisted.logger import LogLevel

from supervisor.logs import jsonLogObserver, logsAt, setLogLevel
from tests.harness import World
from tests.logs import loggedMessages, observing


@pytest.fixture(autouse=True)
def everyLevel() -> Iterator[None]:
    """
    Every test starts, and leaves the process, with every level built.
    """
    setLogLevel(LogLevel.debug)
    yield
    setLogLevel(LogLevel.debug)


def establish() -> World:
    world = World()
    world.connection.start()
    world.accept()
    assert world.state == "ESTABLISHED"
    return world


def test_everyTransitionIsLoggedByDefault() -> None:
    assert all(logsAt(level) for level in LogLevel.iterconstants())
    with loggedMessages() as messages:
        establish()
    assert messages == [
        "c1 IDLE -> CONNECTING (start)",
        "c1 CONNECTING -> ESTABLISHED (ready)",
    ]


def test_transitionEventsCarryTheirFields() -> None:
    output = io.StringIO()
    with observing(jsonLogObserver(output)):
        establish()
    events = [json.loads(line) for line in output.getvalue().splitlines()]
    assert [(e["connection"], e["from_"], e["to"], e["reason"], e["level"]) for e in events] == [
        ("c1", "IDLE", "CONNECTING", "start", "info"),
        ("c1", "CONNECTING", "ESTABLISHED", "ready", "info"),
    ]
    assert {e["log_namespace"] for e in events} == {"netsupervisor.connection"}


def test_aboveInfoTheTransitionEventsAreNotBuilt() -> None:
    setLogLevel(LogLevel.warn)
    assert not logsAt(LogLevel.info) and not logsAt(LogLevel.debug)
    assert logsAt(LogLevel.warn) and logsAt(LogLevel.error) and logsAt(LogLevel.critical)
    with loggedMessages() as messages:
        world = establish()
    assert messages == []
    # Transition observers see every transition whatever the level.
    assert world.path() == [("IDLE", "CONNECTING", "start"), ("CONNECTING", "ESTABLISHED", "ready")]


def test_theLevelCanBeLoweredAgain() -> None:
    setLogLevel(LogLevel.error)
    setLogLevel(LogLevel.info)
    assert logsAt(LogLevel.info) and not logsAt(LogLevel.debug)
    with loggedMessages() as messages:
        establish()
    assert messages == [
        "c1 IDLE -> CONNECTING (start)",
        "c1 CONNECTING -> ESTABLISHED (ready)",
    ]
