"""
The C{echo} protocol: a complete, minimal netsupervisor protocol plugin.

Wire format, one text line per message, ending in C{\\n}:

- Handshake: the peer greets with C{HELLO}; the connection is ready then.
  A greeting of C{DENIED [why]} is a permanent rejection (the connection is
  closed for good); any other greeting is a transient protocol error.
- Heartbeat: we send C{ECHO <token>}; the peer sends the same line back.
- Any other line from the peer proves it alive.
- Drain: we send C{BYE}; nothing else is in flight.

Install it by copying this file into a C{plugins/} directory (without an
C{__init__.py}) whose parent directory is on C{sys.path}, then set
C{protocol = "echo"} in the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.interfaces import (
    Classification,
    IConnectionHandle,
    IDrainable,
    IFailureClassifier,
    IProtocolPlugin,
    ISupervisedProtocol,
)


@implementer(ISupervisedProtocol, IDrainable, IFailureClassifier)
class EchoProtocol(LineOnlyReceiver):
    """
    One connection speaking the echo protocol.
    """

    delimiter = b"\n"

    def __init__(self, handle: IConnectionHandle, greeting: bytes) -> None:
        self.handle = handle
        self.greeting = greeting
        self.greeted = False

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not self.greeted:
            self.greeted = True
            if line == self.greeting:
                self.handle.ready()
            elif line.startswith(b"DENIED"):
                self.handle.reject(line.decode("utf-8", "replace"), permanent=True)
            else:
                self.handle.reject(f"unexpected greeting {line!r}", permanent=False)
            return
        verb, _, payload = line.partition(b" ")
        if verb == b"ECHO":
            self.handle.pong(payload)
        else:
            self.handle.activity()

    def send(self, line: bytes) -> None:
        assert self.transport is not None
        self.transport.write(line + b"\n")

    def sendPing(self, token: bytes) -> None:
        self.send(b"ECHO " + token)

    def drain(self) -> Deferred[None]:
        self.send(b"BYE")
        return succeed(None)

    def classifyFailure(self, failure: Failure) -> Classification | None:
        return None  # the default classification fits


@implementer(IPlugin, IProtocolPlugin)
class EchoPlugin:
    """
    Builds L{EchoProtocol}s. Option: C{greeting} (str, default C{"HELLO"}).
    """

    name = "echo"

    def buildProtocol(
        self, handle: IConnectionHandle, options: Mapping[str, object]
    ) -> ISupervisedProtocol:
        greeting = str(options.get("greeting", "HELLO")).encode("utf-8")
        return EchoProtocol(handle, greeting)


echoPlugin = EchoPlugin()
