"""
The daemon's signal handlers, on a fake reactor.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.logger import formatEvent, globalLogPublisher

from supervisor.daemon import Daemon, Options


class FakeReactor:
    def __init__(self) -> None:
        self.stops: list[tuple[str, int]] = []
        self.fromThread: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.stops.append(("sigTerm", number))

    def sigInt(self, number: int, frame: object = None) -> None:
        self.stops.append(("sigInt", number))

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.fromThread.append((f, args, kwargs))
        f(*args, **kwargs)


def daemon() -> tuple[Daemon, FakeReactor]:
    options = Options()
    options.parseOptions(["--config", "unused.toml"])
    reactor = FakeReactor()
    return Daemon(options, reactor), reactor


def test_theFirstStopSignalStopsTheReactorOnce() -> None:
    d, reactor = daemon()
    messages: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        messages.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        d.onStop(signal.SIGTERM, None)
        d.onStop(signal.SIGTERM, None)
        d.onStop(signal.SIGINT, None)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert reactor.stops == [("sigTerm", signal.SIGTERM)]
    assert "SIGTERM received while draining; still draining" in messages
    assert "SIGINT received while draining; still draining" in messages


def test_sigintFirstIsASigintStop() -> None:
    d, reactor = daemon()
    d.onStop(signal.SIGINT, None)
    d.onStop(signal.SIGTERM, None)
    assert reactor.stops == [("sigInt", signal.SIGINT)]


def test_hangupReloadsInTheReactorThread() -> None:
    d, reactor = daemon()
    reloads: list[None] = []
    d.reload = lambda: reloads.append(None)  # type: ignore[method-assign]
    d.onHangup(signal.SIGHUP, None)
    assert reloads == [None] and reactor.fromThread
