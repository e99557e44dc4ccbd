"""
The C{echo} protocol: a complete, minimal netsupervisor protocol plugin.

Wire format, one text line per message, ending in C{\\n}:

- Handshake: the peer greets with C{HELLO}; the connection is ready then.
  A greeting of C{DENIED [why]} is a permanent rejection (the connection is
  closed for good); any other greeting is a transient protocol error.
- Heartbeat: we send C{ECHO <token>}; the peer sends the same line back.
- Any other line from the peer proves it alive.
- Drain: we send C{BYE}; nothing else is in flight.

Option: C{greeting} (str, default C{"HELLO"}), checked when the
configuration loads.

Install it by copying this file into a C{plugins/} directory (without an
C{__init__.py}) whose parent directory is on C{sys.path}, then set
C{protocol = "echo"} in the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from supervisor.interfaces import (
    IConfigurable,
    IConnectionHandle,
    IDrainable,
    IProtocolPlugin,
    ISupervisedProtocol,
)
from supervisor.options import Text, setting, structure


@attrs.frozen
class Options:
    """
    The echo plugin's options.
    """

    greeting: str = setting("HELLO", Text("a greeting", maxLength=100))

    @classmethod
    def fromMapping(cls, options: Mapping[str, object]) -> Options:
        return structure(cls, options)


@implementer(ISupervisedProtocol, IDrainable)
class EchoProtocol(LineOnlyReceiver):
    """
    One connection speaking the echo protocol.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1024

    def __init__(self, handle: IConnectionHandle, greeting: bytes) -> None:
        self.handle = handle
        self.greeting = greeting
        self.greeted = False

    def lineReceived(self, line: bytes) -> None:
        line = line.removesuffix(b"\r")
        if not self.greeted:
            self.greeted = True
            if line == self.greeting:
                self.handle.ready()
            elif line.startswith(b"DENIED"):
                self.handle.reject(line.decode("utf-8", "replace"), permanent=True)
            else:
                self.handle.reject(f"unexpected greeting {line[:40]!r}", permanent=False)
            return
        verb, _, payload = line.partition(b" ")
        if verb == b"ECHO":
            self.handle.pong(payload)
        else:
            self.handle.activity()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.handle.reject(f"line longer than {self.MAX_LENGTH} bytes", permanent=False)

    def send(self, line: bytes) -> None:
        assert self.transport is not None
        self.transport.write(line + b"\n")

    def sendPing(self, token: bytes) -> None:
        self.send(b"ECHO " + token)

    def drain(self) -> Deferred[None]:
        self.send(b"BYE")
        return succeed(None)


@implementer(IPlugin, IProtocolPlugin, IConfigurable)
class EchoPlugin:
    """
    Builds L{EchoProtocol}s.
    """

    name = "echo"

    def parseOptions(self, options: Mapping[str, object]) -> Options:
        return Options.fromMapping(options)

    def buildProtocol(self, handle: IConnectionHandle, options: Options) -> ISupervisedProtocol:
        return EchoProtocol(handle, options.greeting.encode("utf-8"))


echoPlugin = EchoPlugin()
