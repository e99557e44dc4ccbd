# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
The bundled C{line} plugin, driven through the real machine with the plugin
test kit (L{supervisor.testing}) against a real server protocol served at the
fake peer's end (L{FakePeer.serve}), on a fake clock: bytes flow both ways,
time does not.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from twisted.protocols.basic import LineOnlyReceiver

from plugins.line import Options
from supervisor import HeartbeatSpec, OptionError, findPlugin
from supervisor.plugin import UnknownProtocol, availablePlugins
from supervisor.spec import BackoffSpec
from supervisor.testing import PluginHarness, scenarios

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)


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

    def say(self, data: bytes) -> None:
        """
        Write C{data} to the plugin (delivered at the harness's next flush).
        """
        self.transport.write(data)  # type: ignore[union-attr]


def harness(*, backoff: BackoffSpec | None = None, **options: object) -> PluginHarness:
    return PluginHarness(
        findPlugin("line"),
        options,
        heartbeat=HEARTBEAT,
        backoff=backoff or BackoffSpec(),
        name="line-1",
    )


def serving(server: Server, backoff: BackoffSpec | None = None, **options: object) -> PluginHarness:
    """
    Start a connection and accept its attempt with C{server} at the peer's end.
    """
    h = harness(backoff=backoff, **options)
    h.start()
    h.accept().serve(server)
    return h


def pongs(data: bytes) -> bytes | None:
    """
    A responder answering C{PING x} with C{PONG x}.
    """
    if data.startswith(b"PING "):
        return b"PONG " + data[5:]
    return None


def test_optionsParsed() -> None:
    parsed = findPlugin("line").parseOptions({"lines_are_liveness": False})  # type: ignore[attr-defined]
    assert parsed == Options(lines_are_liveness=False, max_line_length=16384)


def test_aPluginWithABadOptionBuildsNoConnection() -> None:
    with pytest.raises(OptionError, match="max_line_length"):
        harness(max_line_length="abc")


def test_readyAtConnectPingPongAndRtt() -> None:
    server = Server()
    h = serving(server)
    h.assertState("ESTABLISHED", "ready")
    h.advance(1.0)
    assert server.lines == [b"PING 1"]
    assert h.rtt == 0.0
    h.advance(3.0)
    assert server.lines[-1].startswith(b"PING ")
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_bareNewlinePongsAreAccepted() -> None:
    h = serving(Server(newline=b"\n"))
    h.advance(2.0)
    h.assertState("ESTABLISHED")
    assert h.rtt is not None
    scenarios.finish(h)


def test_aSilentPeerIsDroppedForHeartbeat() -> None:
    server = Server(silent=True)
    h = serving(server, backoff=BackoffSpec(initial=60.0))
    h.advance(3.0)
    drop = h.history[-1]
    assert (drop.from_, drop.to, drop.reason) == ("ESTABLISHED", "IDLE", "heartbeat")
    # the first ping within 0.5-1 s, then 2 misses of 0.5 s each
    assert drop.time <= 1.0 + 2 * 0.5 + 0.05
    assert server.lines == [b"PING 1", b"PING 2"]
    assert h.peer.closedBy == "abort"
    scenarios.finish(h)


def test_peerPingsAreAnswered() -> None:
    server = Server()
    h = serving(server)
    server.say(b"PING abc\r\nPING\n")
    h.flush()
    assert server.lines == [b"PONG abc", b"PONG"]
    scenarios.finish(h)


def test_otherLinesCountAsLiveness() -> None:
    server = Server(silent=True)
    h = serving(server)
    for _ in range(40):
        server.say(b"EVENT something\r\n")
        h.advance(0.25)
    h.assertState("ESTABLISHED")
    assert server.lines == [], "a busy connection needs no pings"
    scenarios.finish(h)


def test_livenessFromLinesCanBeTurnedOff() -> None:
    server = Server(silent=True)
    h = serving(server, backoff=BackoffSpec(initial=60.0), lines_are_liveness=False)
    for _ in range(20):
        server.say(b"EVENT something\r\n")
        h.advance(0.25)
    assert h.history[-1].reason == "heartbeat"
    scenarios.finish(h)


def test_anOverlongLineDropsTheConnection() -> None:
    server = Server()
    h = serving(server, backoff=BackoffSpec(initial=5.0), max_line_length=64)
    server.say(b"X" * 100 + b"\r\n")
    h.flush()
    last = h.history[-1]
    assert (last.from_, last.to, last.reason) == ("ESTABLISHED", "IDLE", "lost")
    assert "longer than 64" in (h.lastError or "")
    assert h.peer.closedBy == "abort"
    scenarios.finish(h)


def test_stopDrainsAndCloses() -> None:
    h = serving(Server())
    d = h.stop()
    h.flush()
    assert d.called
    assert [t.to for t in h.history][-2:] == ["CLOSING", "CLOSED"]
    h.assertQuiet()


def test_scenarios() -> None:
    """
    The kit's stories: a peer that answers, one that goes silent, slow
    pongs under and over the timeout, and a line too long to parse.
    """
    scenarios.peerAnswers(harness(), pongs)
    took = scenarios.peerSilent(harness())
    assert took <= HEARTBEAT.detectionBound + 0.05
    scenarios.slowPong(harness(), pongs, delay=0.3)
    scenarios.slowPong(harness(), pongs, delay=0.6)
    scenarios.garbage(harness(max_line_length=16), b"\xff" * 40 + b"\n", respond=pongs)


def test_aPeerClosingIsLost() -> None:
    server = Server()
    h = serving(server)
    server.transport.loseConnection()  # type: ignore[union-attr]
    h.flush()
    assert h.peer.closedBy == "peer"
    h.assertState("IDLE", "lost")
    scenarios.finish(h)


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
