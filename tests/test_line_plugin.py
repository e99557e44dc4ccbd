"""
The bundled C{line} plugin, over C{iosim} against a server protocol, on a
fake clock: bytes flow both ways, time does not.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from random import Random

import pytest
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.basic import LineOnlyReceiver
from twisted.test.iosim import ConnectionCompleter, IOPump

from supervisor import ConnectionSpec, HeartbeatSpec, SupervisedConnection, findPlugin
from supervisor.plugin import UnknownProtocol, availablePlugins
from supervisor.spec import BackoffSpec


class Server(LineOnlyReceiver):
    """
    A line peer: answers pings unless told to be silent, records lines.
    """

    delimiter = b"\n"

    def __init__(self, silent: bool = False, newline: bytes = b"\r\n") -> None:
        self.silent = silent
        self.newline = newline
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        self.lines.append(line)
        if line.startswith(b"PING ") and not self.silent:
            self.transport.write(b"PONG " + line[5:] + self.newline)  # type: ignore[union-attr]


class World:
    def __init__(self, server: Server, **spec: object) -> None:
        self.reactor = MemoryReactorClock()
        self.server = server
        TCP4ServerEndpoint(self.reactor, 4321).listen(Factory.forProtocol(lambda: server))
        self.completer = ConnectionCompleter(self.reactor)
        spec.setdefault("heartbeat", HeartbeatSpec(interval=1.0, timeout=0.5, misses=2))
        self.connection = SupervisedConnection(
            ConnectionSpec("line-1", "tcp:host=127.0.0.1:port=4321", **spec),  # type: ignore[arg-type]
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", 4321),
            findPlugin("line"),
            self.reactor,
            rng=Random(0),
        )
        self.connection.start()
        pump = self.completer.succeedOnce()
        assert pump is not None
        self.pump: IOPump = pump
        self.pump.flush()

    def run(self, seconds: float, step: float = 0.05) -> None:
        for _ in range(round(seconds / step)):
            self.reactor.advance(step)
            self.pump.flush()


def test_readyAtConnectPingPongAndRtt() -> None:
    world = World(Server())
    assert world.connection.state == "ESTABLISHED"
    world.run(1.0)
    assert world.server.lines == [b"PING 1"]
    assert world.connection.rtt == 0.0
    world.run(3.0)
    assert world.server.lines[-1].startswith(b"PING ")
    assert world.connection.state == "ESTABLISHED"


def test_bareNewlinePongsAreAccepted() -> None:
    world = World(Server(newline=b"\n"))
    world.run(2.0)
    assert world.connection.state == "ESTABLISHED"
    assert world.connection.rtt is not None


def test_aSilentPeerIsDroppedForHeartbeat() -> None:
    world = World(Server(silent=True), backoff=BackoffSpec(initial=60.0))
    world.run(3.0)
    drop = world.connection.history[-1]
    assert (drop.from_, drop.to, drop.reason) == ("ESTABLISHED", "IDLE", "heartbeat")
    # the first ping within 0.5-1 s, then 2 misses of 0.5 s each
    assert drop.time <= 1.0 + 2 * 0.5 + 0.05
    assert world.server.lines == [b"PING 1", b"PING 2"]


def test_peerPingsAreAnswered() -> None:
    world = World(Server())
    world.server.transport.write(b"PING abc\r\nPING\n")  # type: ignore[union-attr]
    world.pump.flush()
    assert world.server.lines == [b"PONG abc", b"PONG"]


def test_otherLinesCountAsLiveness() -> None:
    world = World(Server(silent=True))
    for _ in range(40):
        world.server.transport.write(b"EVENT something\r\n")  # type: ignore[union-attr]
        world.run(0.25)
    assert world.connection.state == "ESTABLISHED"
    assert world.server.lines == [], "a busy connection needs no pings"


def test_livenessFromLinesCanBeTurnedOff() -> None:
    world = World(
        Server(silent=True),
        options={"lines_are_liveness": False},
        backoff=BackoffSpec(initial=60.0),
    )
    for _ in range(20):
        world.server.transport.write(b"EVENT something\r\n")  # type: ignore[union-attr]
        world.run(0.25)
    assert world.connection.history[-1].reason == "heartbeat"


def test_anOverlongLineDropsTheConnection() -> None:
    world = World(Server(), options={"max_line_length": 64}, backoff=BackoffSpec(initial=5.0))
    world.server.transport.write(b"X" * 100 + b"\r\n")  # type: ignore[union-attr]
    world.pump.flush()
    last = world.connection.history[-1]
    assert (last.from_, last.to, last.reason) == ("ESTABLISHED", "IDLE", "lost")
    assert "longer than 64" in (world.connection.lastError or "")


def test_stopDrainsAndCloses() -> None:
    world = World(Server())
    d = world.connection.stop()
    world.pump.flush()
    assert d.called
    assert [t.to for t in world.connection.history][-2:] == ["CLOSING", "CLOSED"]
    assert world.reactor.getDelayedCalls() == []


def test_theLinePluginIsFoundByName() -> None:
    plugin = findPlugin("line")
    assert plugin.name == "line"
    with pytest.raises(UnknownProtocol, match=r"unknown protocol 'nope'.*line"):
        findPlugin("nope")


def test_aDropInPluginDirectoryOnSysPathIsDiscovered(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "dropin_echo.py").write_text(
        textwrap.dedent(
            """
            from twisted.plugin import IPlugin
            from zope.interface import implementer
            from supervisor.interfaces import IProtocolPlugin

            @implementer(IPlugin, IProtocolPlugin)
            class DropIn:
                name = "dropin-echo"
                def buildProtocol(self, handle, options):
                    raise NotImplementedError

            dropIn = DropIn()
            """
        )
    )
    from twisted.plugin import pluginPackagePaths

    import plugins

    sys.path.insert(0, str(tmp_path))
    before = list(plugins.__path__)
    try:
        plugins.__path__[:] = before + [p for p in pluginPackagePaths("plugins") if p not in before]
        assert "dropin-echo" in availablePlugins()
        assert findPlugin("dropin-echo").name == "dropin-echo"
    finally:
        sys.path.remove(str(tmp_path))
        plugins.__path__[:] = before
        sys.modules.pop("plugins.dropin_echo", None)
    assert "dropin-echo" not in availablePlugins()
