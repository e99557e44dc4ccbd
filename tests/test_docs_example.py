# mypy: disallow-untyped-calls=False
"""
The example plugin of the plugin guide (docs/plugins/writing.md), which is
also examples/echo_plugin.py, driven through a real L{SupervisedConnection}
on a deterministic reactor. The guide's code block must be that file, so the
guide cannot rot.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from random import Random
from types import ModuleType

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from supervisor import ConnectionSpec, HeartbeatSpec, SupervisedConnection, Transition
from supervisor.interfaces import IProtocolPlugin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "echo_plugin.py"
GUIDE = ROOT / "docs" / "plugins" / "writing.md"
MARKER = "<!-- the code below is examples/echo_plugin.py, checked by tests/test_docs_example.py -->"


def loadExample() -> ModuleType:
    """
    Import examples/echo_plugin.py from its path.
    """
    spec = importlib.util.spec_from_file_location("echo_plugin_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


echo = loadExample()


class World:
    """
    One echo connection on a MemoryReactorClock, with its transitions.
    """

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.spec = ConnectionSpec(
            name="echo-1",
            endpoint="tcp:host=127.0.0.1:port=1",
            protocol="echo",
            connect_timeout=10.0,
            drain_timeout=30.0,
            heartbeat=HeartbeatSpec(interval=10.0, timeout=5.0, misses=2),
        )
        self.connection = SupervisedConnection(
            self.spec,
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", 1),
            echo.echoPlugin,
            self.reactor,
            rng=Random(0),
        )
        self.transitions: list[Transition] = []
        self.connection.addObserver(self.transitions.append)

    def accept(self) -> tuple[IProtocol, StringTransport]:
        """
        Complete the pending TCP connect with an in-memory transport.
        """
        factory = self.reactor.tcpClients[-1][2]
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert proto is not None
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def steps(self) -> list[tuple[str, str, str]]:
        return [(t.from_, t.to, t.reason) for t in self.transitions]


def stateOf(connection: SupervisedConnection) -> str:
    """
    The visible state, read afresh (a plain C{str}, so that type checkers do
    not narrow it between two readings).
    """
    return connection.state


def fired(d: Deferred[None]) -> bool:
    results: list[object] = []
    d.addBoth(results.append)
    return results == [None]


def test_pluginProvidesTheInterface() -> None:
    """
    The example's module-level plugin object is an IProtocolPlugin named echo.
    """
    assert IProtocolPlugin.providedBy(echo.echoPlugin)
    assert echo.echoPlugin.name == "echo"


def test_handshakeHeartbeatAndDrain() -> None:
    """
    ESTABLISHED comes with the greeting, not with TCP; the supervisor's ping
    goes out as C{ECHO <token>}, its echo gives an RTT; stop drains with BYE.
    """
    world = World()
    connection, reactor = world.connection, world.reactor
    connection.start()
    assert stateOf(connection) == "CONNECTING"

    proto, transport = world.accept()
    assert stateOf(connection) == "CONNECTING"  # connected, but not greeted yet

    proto.dataReceived(b"HELLO\n")
    assert stateOf(connection) == "ESTABLISHED"
    assert transport.value() == b""

    # The first ping is due within one interval of ESTABLISHED.
    reactor.advance(world.spec.heartbeat.interval)
    assert transport.value() == b"ECHO 1\n"
    transport.clear()

    reactor.advance(0.25)
    proto.dataReceived(b"ECHO 1\n")
    assert connection.rtt == 0.25
    assert stateOf(connection) == "ESTABLISHED"

    stopped = connection.stop()
    assert stateOf(connection) == "CLOSING"
    assert transport.value() == b"BYE\n"
    assert transport.disconnecting  # drained, so the transport is being closed
    assert not fired(stopped)

    proto.connectionLost(Failure(ConnectionDone()))
    assert stateOf(connection) == "CLOSED"
    assert fired(stopped)
    assert world.steps() == [
        ("IDLE", "CONNECTING", "start"),
        ("CONNECTING", "ESTABLISHED", "ready"),
        ("ESTABLISHED", "CLOSING", "stopped"),
        ("CLOSING", "CLOSED", "closed"),
    ]
    assert reactor.getDelayedCalls() == []


def test_deniedIsPermanent() -> None:
    """
    A DENIED greeting rejects the attempt permanently: CLOSED at once, with
    reason C{handshake}, although C{max_retries = 0} retries anything else
    forever; no retry is ever scheduled.
    """
    world = World()
    connection, reactor = world.connection, world.reactor
    assert world.spec.max_retries == 0
    connection.start()
    proto, transport = world.accept()

    proto.dataReceived(b"DENIED bad credentials\n")
    assert stateOf(connection) == "CLOSED"
    assert world.steps() == [
        ("IDLE", "CONNECTING", "start"),
        ("CONNECTING", "CLOSED", "handshake"),
    ]
    assert connection.lastError == "handshake: DENIED bad credentials"
    assert transport.disconnected  # aborted
    assert reactor.getDelayedCalls() == []

    reactor.advance(3600)
    assert connection.attempts == 1
    assert len(world.reactor.tcpClients) == 1

    assert fired(connection.stop())
    assert stateOf(connection) == "CLOSED"
    assert reactor.getDelayedCalls() == []


def test_unexpectedGreetingIsTransient() -> None:
    """
    Any other greeting fails the attempt transiently: IDLE, and retried.
    """
    world = World()
    connection, reactor = world.connection, world.reactor
    connection.start()
    proto, _ = world.accept()

    proto.dataReceived(b"WHO ARE YOU\n")
    assert stateOf(connection) == "IDLE"
    assert world.steps()[-1] == ("CONNECTING", "IDLE", "handshake")
    assert connection.backoffDelay > 0

    reactor.advance(connection.backoffDelay)
    assert stateOf(connection) == "CONNECTING"
    assert connection.attempts == 2
    assert len(reactor.tcpClients) == 2

    assert fired(connection.stop())
    assert stateOf(connection) == "CLOSED"
    assert reactor.getDelayedCalls() == []


def guideExample() -> str:
    """
    The fenced code block that follows the marker in the guide.
    """
    text = GUIDE.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"{GUIDE} must contain the marker once"
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```python\n(.*?)^```\s*$", after, re.DOTALL | re.MULTILINE)
    assert match is not None, "the marker must be followed by a ```python block"
    return match.group(1)


def test_guideShowsTheExample() -> None:
    """
    The guide's example is examples/echo_plugin.py, byte for byte.
    """
    assert guideExample() == EXAMPLE.read_text(encoding="utf-8")


def test_dropInDiscovery(tmp_path: Path) -> None:
    """
    As the guide says: the file copied into a C{plugins/} directory (no
    C{__init__.py}) on C{sys.path} is found by name.
    """
    dropIn = tmp_path / "plugins"
    dropIn.mkdir()
    shutil.copy(EXAMPLE, dropIn / "echo_plugin.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(tmp_path), *filter(None, [env.get("PYTHONPATH")])]
    )
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from supervisor.plugin import findPlugin; p = findPlugin('echo');"
            " print(p.name, type(p).__module__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == ["echo", "plugins.echo_plugin"]


KIT_MARKER = "<!-- the code below is run by tests/test_docs_example.py -->"


def test_guideKitExampleRuns() -> None:
    """
    The guide's test-kit example runs, as written, against the example
    plugin (imported as C{echo_plugin}, as the guide does).
    """
    text = GUIDE.read_text(encoding="utf-8")
    assert text.count(KIT_MARKER) == 1, f"{GUIDE} must contain the kit marker once"
    after = text.split(KIT_MARKER, 1)[1]
    match = re.match(r"\s*```python\n(.*?)^```\s*$", after, re.DOTALL | re.MULTILINE)
    assert match is not None, "the kit marker must be followed by a ```python block"
    sys.modules["echo_plugin"] = echo
    try:
        namespace: dict[str, object] = {"__name__": "guide_kit_example"}
        exec(compile(match.group(1), str(GUIDE), "exec"), namespace)
    finally:
        del sys.modules["echo_plugin"]
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) == 2
    for test in tests:
        test()
