"""
What is logged through Twisted's global log publisher while a block of a
test runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher


@contextmanager
def observing(observer: Callable[[LogEvent], None]) -> Iterator[None]:
    """
    C{observer} sees every event logged inside the block.
    """
    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)


def everything(event: LogEvent) -> bool:
    return True


def isWarning(event: LogEvent) -> bool:
    """
    Whether C{event} is a warning.
    """
    return event.get("log_level") == LogLevel.warn


@contextmanager
def loggedMessages(keep: Callable[[LogEvent], bool] = everything) -> Iterator[list[str]]:
    """
    The formatted messages of the events logged inside the block (those
    C{keep} accepts), filled in as they are logged.
    """
    messages: list[str] = []

    def observe(event: LogEvent) -> None:
        if keep(event):
            messages.append(formatEvent(event))

    with observing(observe):
        yield messages
