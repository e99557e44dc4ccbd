"""
The memcached plugin on netsupervisor's test kit: the real connection
machine on a fake clock, a scripted peer, no socket and no sleep.
"""

from __future__ import annotations

import time
import tomllib
from importlib import import_module
from pathlib import Path

import pytest
from netsupervisor_memcached import Options, memcachedPlugin, version, versionOf

from supervisor import HeartbeatSpec, OptionError
from supervisor.interfaces import IConfigurable, IProtocolPlugin
from supervisor.testing import FakePeer, PluginHarness, Responder, perLine, scenarios

HEARTBEAT = HeartbeatSpec(interval=1.0, timeout=0.5, misses=2)
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def memcached(version: bytes = b"1.6.21") -> Responder:
    """
    A server's side: C{VERSION} to each C{version} command, C{ERROR} to
    anything else, however the plugin splits its writes.
    """

    def answer(line: bytes) -> bytes:
        return b"VERSION " + version + b"\r\n" if line == b"version" else b"ERROR\r\n"

    return perLine(answer, b"\r\n")


def harness(**options: object) -> PluginHarness:
    return PluginHarness(memcachedPlugin, options, heartbeat=HEARTBEAT, connect_timeout=2.0)


def established() -> tuple[PluginHarness, FakePeer]:
    h = harness()
    h.start()
    peer = h.accept()
    assert peer.take() == b"version\r\n"
    peer.send(b"VERSION 1.6.21\r\n")
    h.assertState("ESTABLISHED", "ready")
    return h, peer


def test_theEntryPointNamesThePlugin() -> None:
    """
    The distribution's entry point, which netsupervisor looks up by name,
    names the plugin object, and its name is the plugin's.
    """
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    [(name, value)] = project["entry-points"]["netsupervisor.plugins"].items()
    module, _, attribute = value.partition(":")
    plugin = getattr(import_module(module), attribute)
    assert plugin is memcachedPlugin
    assert name == plugin.name == "memcached"
    assert IProtocolPlugin.providedBy(plugin)
    assert IConfigurable.providedBy(plugin)


def test_anApplicationAsksTheVersion() -> None:
    """
    The plugin's typed call, on the supervised connection: answered in
    turn with the heartbeat's pings, which share the same command.
    """
    h, peer = established()
    asked = version(h.connection)
    assert peer.take() == b"version\r\n"
    h.untilWritten(peer)  # the heartbeat's ping, behind it
    peer.send(b"VERSION 1.6.21\r\nVERSION 1.6.21\r\n")
    answers: list[object] = []
    asked.addBoth(answers.append)
    assert answers == [b"1.6.21"]
    assert h.heartbeats and h.heartbeats[-1] is not None
    lost = version(h.connection)
    peer.lose()
    h.advance(0)
    failures: list[object] = []
    lost.addErrback(failures.append)
    assert len(failures) == 1 and "lost" in str(failures[0])
    h.stop()
    h.assertQuiet()


def test_versionIsTheHandshake() -> None:
    """
    Connected is not ready: the connection is ESTABLISHED once the server
    has answered C{version}.
    """
    h = harness()
    h.start()
    peer = h.accept()
    assert peer.take() == b"version\r\n"
    h.assertState("CONNECTING")
    peer.send(b"VERSION 1.6")
    h.assertState("CONNECTING")
    peer.send(b".21\r\n")
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def test_versionIsTheHeartbeatWithItsRtt() -> None:
    h, peer = established()
    assert h.untilWritten(peer) <= HEARTBEAT.interval
    assert peer.take() == b"version\r\n"
    h.advance(0.25)
    peer.send(b"VERSION 1.6.21\r\n")
    assert h.heartbeats == [pytest.approx(0.25, abs=1e-9)]
    scenarios.finish(h)


def test_aLateAnswerIsCreditedToItsOwnPing() -> None:
    """
    Ping 1 is missed, so ping 2 goes out at once; ping 1's late answer,
    0.1 s later, is credited to ping 1 (stale, ignored), not to ping 2 with
    a round trip of 0.1 s. The next answer is ping 2's, 0.3 s after it.
    """
    h, peer = established()
    h.untilWritten(peer)
    assert peer.take() == b"version\r\n"  # ping 1
    h.untilWritten(peer)
    assert peer.take() == b"version\r\n"  # ping 2, at ping 1's timeout
    assert h.heartbeats == [None]
    h.advance(0.1)
    peer.send(b"VERSION 1.6.21\r\n")  # ping 1's, late
    assert h.heartbeats == [None]
    h.advance(0.2)
    peer.send(b"VERSION 1.6.21\r\n")  # ping 2's
    assert h.heartbeats == [None, pytest.approx(0.3, abs=1e-9)]
    h.assertState("ESTABLISHED")
    scenarios.finish(h)


def test_anAnswerToNothingIsIgnored() -> None:
    h, peer = established()
    peer.send(b"VERSION 1.6.21\r\n" * 3)
    h.assertState("ESTABLISHED")
    assert h.heartbeats == []
    scenarios.finish(h)


def test_failureStories() -> None:
    scenarios.peerAnswers(harness(), memcached())
    scenarios.peerSilent(harness(), memcached())
    scenarios.peerSilentInHandshake(harness())
    scenarios.peerClosesMidHandshake(harness(), afterWrites=1)
    scenarios.slowPong(harness(), memcached(), delay=0.2)
    scenarios.slowPong(harness(), memcached(), delay=0.5)
    scenarios.garbage(harness(), b"ERROR\r\n", duringHandshake=True)
    scenarios.garbage(harness(), b"SERVER_ERROR out of memory\r\n", duringHandshake=True)
    scenarios.garbage(harness(), b"\x00\xff garbage\r\n", respond=memcached())


def test_anOlderServerIsRefusedForGood() -> None:
    """
    A server older than C{min_version} is a permanent rejection: CLOSED,
    never retried. One as new is accepted.
    """
    h = harness(min_version="1.6")
    h.start()
    h.accept(memcached(b"1.4.25"))
    h.assertTransitions(("IDLE", "CONNECTING", "start"), ("CONNECTING", "CLOSED", "handshake"))
    assert h.lastError == "handshake: memcached 1.4.25 is older than min_version 1.6"
    h.advance(3600)
    assert h.connection.attempts == 1
    h.assertQuiet()

    scenarios.peerAnswers(harness(min_version="1.6"), memcached(b"1.6.0-rc1"))


def test_optionsAreCheckedWhenTheConfigurationLoads() -> None:
    assert memcachedPlugin.parseOptions({}) == Options("", 1024)
    assert memcachedPlugin.parseOptions({"min_version": "1.5"}).minimum == (1, 5)
    with pytest.raises(OptionError) as bad:
        memcachedPlugin.parseOptions({"min_version": "one.five"})
    assert (bad.value.key, bad.value.problem) == (
        "min_version",
        'expected a version such as "1.6" or "1.6.21", or "" for any, got "one.five"',
    )
    with pytest.raises(OptionError) as bad:
        memcachedPlugin.parseOptions({"max_line_length": 16})
    assert bad.value.problem == "expected an integer from 32 to 65536, got 16"
    with pytest.raises(OptionError) as bad:
        memcachedPlugin.parseOptions({"min_versoin": "1.5"})
    assert bad.value.key == "min_versoin"
    assert "min_version" in bad.value.problem


@pytest.mark.parametrize(
    "text, numbers",
    [(b"1.6.21", (1, 6, 21)), (b"1.4", (1, 4)), (b"1.6.0-rc1", (1, 6, 0)), (b"x", ())],
)
def test_versionOf(text: bytes, numbers: tuple[int, ...]) -> None:
    assert versionOf(text) == numbers


# A hostile server.


def test_aLineTooLongIsOneTransientRejection() -> None:
    """
    A megabyte without a line end, in 1,460-byte reads: rejected once the
    line passes C{max_line_length}, without buffering the rest.
    """
    h = harness(max_line_length=100)
    h.start()
    peer = h.accept()
    protocol = h.protocol
    for _ in range(0, 1 << 20, 1460):
        peer.send(b"x" * 1460)
        assert len(protocol._buffer) <= 100 + 1 + 1460  # type: ignore[attr-defined]
    h.assertTransitions(("IDLE", "CONNECTING", "start"), ("CONNECTING", "IDLE", "handshake"))
    assert h.lastError == "handshake: a line longer than 100 bytes"
    scenarios.finish(h)


def test_aLineJustAtTheLimitIsAccepted() -> None:
    h = harness(max_line_length=32)
    h.start()
    peer = h.accept()
    peer.send(b"VERSION " + b"1" * 24)
    peer.send(b"\r")
    peer.send(b"\n")
    h.assertState("ESTABLISHED", "ready")
    scenarios.finish(h)


def cost(data: bytes, read: int) -> float:
    """
    The least CPU time, of three runs, to take C{data} in reads of C{read}
    bytes once ESTABLISHED.
    """
    best = float("inf")
    for _ in range(3):
        h, _ = established()
        protocol = h.protocol
        assert protocol is not None
        started = time.process_time()
        for start in range(0, len(data), read):
            protocol.dataReceived(data[start : start + read])
        best = min(best, time.process_time() - started)
        h.assertState("ESTABLISHED")
        scenarios.finish(h)
    return best


@pytest.mark.parametrize("read", [1460, 1 << 20])
def test_readingIsLinearInTheBytesReceived(read: int) -> None:
    """
    Sixteen times the answers, in segments or in one read, cost about
    sixteen times as much: no line is searched again from its start, no
    consumed line copied again with the rest. (Quadratic reading costs
    hundreds of times more; the bound leaves room for a busy machine.)
    """
    line = b"VERSION 1.6.21\r\n"
    small = cost(line * 4096, read)
    large = cost(line * 4096 * 16, read)
    assert large < 48 * max(small, 1e-3), (small, large)
