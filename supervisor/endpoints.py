"""
Which of a connection's endpoints each attempt uses (failover), and how each
endpoint fared.

The connection's machine asks L{Endpoints.pick} for the endpoint of every
attempt it starts, and tells L{Endpoints.failed} about every attempt that
fails; nothing else moves it. A connection lost once ESTABLISHED is not a
failed attempt: with C{ordered} failover its next attempt goes to the same
endpoint, and only a failure there moves it on.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.internet.interfaces import IStreamClientEndpoint

from supervisor.spec import Failover


@attrs.frozen
class EndpointRecord:
    """
    How one endpoint of a connection fared since the connection was made.

    @ivar endpoint: its endpoint string.
    @ivar attempts: attempts started against it.
    @ivar failures: attempts against it that failed.
    """

    endpoint: str
    attempts: int
    failures: int


class Endpoints:
    """
    The endpoints of one connection, in order, and the one in use.

    C{ordered}: every attempt uses the endpoint of the previous one, unless
    that attempt failed: then the next in the list (after the last, the
    first). C{round_robin}: every attempt uses the endpoint after the
    previous attempt's, whatever became of it.
    """

    __slots__ = (
        "_counts",
        "_endpoints",
        "_index",
        "_lastFailed",
        "_picked",
        "_roundRobin",
        "descriptions",
    )

    def __init__(
        self,
        descriptions: Sequence[str],
        endpoints: Sequence[IStreamClientEndpoint],
        failover: Failover = "ordered",
        start: int = 0,
    ) -> None:
        """
        @param descriptions: the endpoint strings.
        @param endpoints: the endpoint of each string, in the same order.
        @param failover: C{ordered} or C{round_robin}.
        @param start: the index of the first attempt's endpoint.
        @raise ValueError: not one endpoint per string, or none at all.
        """
        if len(descriptions) != len(endpoints) or not endpoints:
            raise ValueError(
                f"expected one endpoint per endpoint string ({len(descriptions)}), "
                f"got {len(endpoints)}"
            )
        self.descriptions = tuple(descriptions)
        self._endpoints = tuple(endpoints)
        self._roundRobin = failover == "round_robin"
        self._index = start % len(endpoints)
        self._picked = False
        self._lastFailed = False
        # Attempts and failures of endpoint i at 2i and 2i + 1: one list, not two.
        self._counts = [0] * (2 * len(endpoints))

    @property
    def inUse(self) -> str:
        """
        The endpoint string of the attempt in flight or the connection up,
        else of the last attempt (before any, of the first one).
        """
        return self.descriptions[self._index]

    def pick(self) -> IStreamClientEndpoint:
        """
        The endpoint of the attempt that starts now.
        """
        if self._picked and (self._roundRobin or self._lastFailed):
            self._index = (self._index + 1) % len(self._endpoints)
        self._picked = True
        self._lastFailed = False
        self._counts[2 * self._index] += 1
        return self._endpoints[self._index]

    def failed(self) -> None:
        """
        The attempt on the endpoint picked last failed.
        """
        self._counts[2 * self._index + 1] += 1
        self._lastFailed = True

    def records(self) -> tuple[EndpointRecord, ...]:
        """
        How each endpoint fared, in order.
        """
        counts = self._counts
        return tuple(
            EndpointRecord(description, counts[2 * i], counts[2 * i + 1])
            for i, description in enumerate(self.descriptions)
        )
