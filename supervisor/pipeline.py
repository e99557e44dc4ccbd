"""
L{Pipeline}: for a protocol plugin whose peer answers requests in order with
answers that carry no identifier of their own.

An MQTT C{PINGRESP}, a Redis C{+PONG}, a memcached C{VERSION} line say only
"here is the answer to your next request". The supervisor gives each ping a
token and expects that token back in L{IConnectionHandle.pong}; a plugin that
remembers only the last token it sent credits a late answer to ping N, which
arrives after ping N+1 went out, to N+1, with a round trip that is too short.
Remember every token in flight, oldest first, and give each answer the oldest:

    def sendPing(self, token: bytes) -> None:
        self.pings.sent(token)
        self.transport.write(PINGREQ)

    def pingAnswered(self) -> None:
        token = self.pings.answered()
        if token is not None:
            self.handle.pong(token)

The late answer to N is then credited to N (stale, ignored by the
supervisor) and the next answer to N+1, with its true round trip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Pipeline"]

T = TypeVar("T")


class Pipeline(Generic[T]):
    """
    What the peer's coming answers answer, oldest first.

    It holds one item per request the plugin wrote and the peer has not
    answered yet, so it grows only with what the plugin itself sends (the
    supervisor has at most C{heartbeat.misses} pings in flight), never with
    what the peer sends.
    """

    __slots__ = ("_inFlight",)

    def __init__(self) -> None:
        self._inFlight: deque[T] = deque()

    def sent(self, request: T) -> None:
        """
        A request identified by C{request} (a ping's token, say) was written.
        """
        self._inFlight.append(request)

    def answered(self) -> T | None:
        """
        An answer arrived: the oldest request in flight, now answered, or
        L{None} when nothing was in flight (an answer to nothing we sent).
        """
        return self._inFlight.popleft() if self._inFlight else None

    def __len__(self) -> int:
        return len(self._inFlight)

    def __iter__(self) -> Iterator[T]:
        """
        The requests in flight, oldest first.
        """
        return iter(self._inFlight)

    def __repr__(self) -> str:
        return f"Pipeline({list(self._inFlight)!r})"
