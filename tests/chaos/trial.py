"""
One supervised connection to a real peer through a chaos proxy, on the
running reactor, with its metrics: what every chaos case drives.

The supervisor runs in-process, as a L{Supervisor} service built from a
configuration, with its Prometheus collector: the same objects C{twistd
netsupervisor} runs, read the way a scrape reads them.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Generator
from random import Random
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort

from supervisor import (
    AdminSpec,
    BackoffSpec,
    Config,
    ConnectionSpec,
    FlapSpec,
    HeartbeatSpec,
    Supervisor,
)
from supervisor.metrics import SupervisorMetrics, exposition
from supervisor.testing.chaos import ChaosProxy
from tests.integration.conftest import HOST, theReactor
from tests.integration.scenarios import Recorder

HEARTBEAT = HeartbeatSpec(interval=0.25, timeout=0.25, misses=2)
BACKOFF = BackoffSpec(initial=0.05, max=0.5, jitter="full", reset_after=1.0)
CONNECT_TIMEOUT = 1.0
SLACK = 1.0
"""Honest slack for a loaded machine: process scheduling, the reactor's turn."""

RECOVERY_BOUND = CONNECT_TIMEOUT + BACKOFF.max + HEARTBEAT.detectionBound + SLACK
"""How long after a fault is cleared the connection must be ESTABLISHED again
with a heartbeat answered: a retry already scheduled (at most the backoff's
maximum), an attempt, the first heartbeat."""


def openSockets() -> int:
    """
    How many sockets this process has open. (Sockets, not every descriptor:
    Twisted keeps one spare descriptor, C{/dev/null}, from the first
    C{listenTCP} of a process on, to survive running out.)
    """
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        # The directory's own descriptor is closed by the time it is read.
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def rssKiB() -> int:
    """
    This process's resident set size, in KiB.
    """
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


class Trial:
    """
    A L{Supervisor} with one connection, C{name}, to C{HOST:targetPort}
    through a L{ChaosProxy} listening on a free loopback port.
    """

    def __init__(self, name: str, protocol: str, targetPort: int, seed: int = 0) -> None:
        reactor: Any = theReactor()
        self.reactor = reactor
        self.name = name
        self.socketsBefore = openSockets()
        self.rssBefore = rssKiB()
        self.proxy = ChaosProxy(
            reactor, TCP4ClientEndpoint(reactor, HOST, targetPort), rng=Random(seed)
        )
        self.port: IListeningPort = reactor.listenTCP(0, self.proxy, interface=HOST)
        spec = ConnectionSpec(
            name=name,
            endpoint=f"tcp:host={HOST}:port={self.port.getHost().port}",  # type: ignore[attr-defined]
            protocol=protocol,
            connect_timeout=CONNECT_TIMEOUT,
            drain_timeout=1.0,
            backoff=BACKOFF,
            heartbeat=HEARTBEAT,
            # A fault drops the connection again and again, each loss within
            # a second of the last (these heartbeats): the trial measures how
            # the transport recovers, not the flap guard's hold.
            flap=FlapSpec(max=0),
        )
        self.supervisor = Supervisor(
            Config(path="<chaos>", admin=AdminSpec(), connections=(spec,)), reactor
        )
        self.metrics = SupervisorMetrics(self.supervisor)
        connection = self.supervisor.connection(name)
        assert connection is not None
        self.connection = connection
        self.seen = Recorder(connection)

    def start(self) -> None:
        self.supervisor.startService()

    def now(self) -> float:
        return float(self.reactor.seconds())

    def sample(self, metric: str, **labels: str) -> float | None:
        """
        The value of one sample of the connection's metrics, as scraped; by
        default labelled with this connection.
        """
        labels.setdefault("connection", self.name)
        text = exposition(self.metrics).decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def disconnects(self, reason: str) -> int:
        """
        ESTABLISHED -> IDLE transitions with C{reason}, as recorded.
        """
        return sum(
            1
            for t in self.seen.transitions
            if (t.from_, t.to, t.reason) == ("ESTABLISHED", "IDLE", reason)
        )

    @inlineCallbacks
    def stop(self) -> Generator[Deferred[Any], Any, None]:
        """
        Stop the supervisor, the proxy and its listening port (bounded).
        """
        reactor = self.reactor
        try:
            if self.supervisor.running:
                yield self.supervisor.stopService().addTimeout(5.0, reactor)
        finally:
            self.proxy.setFaults()
            yield self.proxy.close().addTimeout(5.0, reactor)
            yield self.port.stopListening()
