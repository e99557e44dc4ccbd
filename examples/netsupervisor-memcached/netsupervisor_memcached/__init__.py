"""
The C{memcached} protocol plugin for netsupervisor: memcached's text
protocol, where the C{version} command is both the handshake and the
heartbeat.

- Handshake: C{version}; the server answers C{VERSION <x.y.z>} and the
  connection is ready. A server older than the option C{min_version} is a
  permanent rejection; C{ERROR}, C{CLIENT_ERROR ...}, C{SERVER_ERROR ...} or
  anything else is a transient one.
- Heartbeat: C{version} again. Its answer carries no token and memcached
  answers in order, so the tokens in flight are kept first in, first out in
  a L{Pipeline}: a late answer is credited to its own ping, not the next.
- No goodbye: closing the connection is all that C{quit} would do, so the
  protocol has no C{drain} (it does not provide C{IDrainable}).
- Lines end in CRLF and are read in time linear in the bytes received, at
  most C{max_line_length} bytes each; a longer one is a transient rejection.

Installed, the distribution's entry point C{memcached} in the group
C{netsupervisor.plugins} names L{memcachedPlugin}.

Applications ask the server's version with L{version} on a supervised
connection or pool: the way a plugin offers typed calls, built on
C{submit} (see C{docs/library.md}).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.interfaces import (
    IConfigurable,
    IConnectionHandle,
    IProtocolPlugin,
    ISupervisedProtocol,
)
from supervisor.operations import ConnectionLost, Submitter
from supervisor.options import Integer, Text, setting, structure
from supervisor.pipeline import Pipeline

__all__ = ["MemcachedPlugin", "MemcachedProtocol", "Options", "memcachedPlugin", "version"]

VERSION = b"version\r\n"
"""The handshake and the ping."""

SHOWN = 60
"""The most bytes of an unexpected line quoted in a rejection."""

_VERSION_OPTION = re.compile(r"(\d{1,6}(\.\d{1,6}){0,3})?")
_LEADING_VERSION = re.compile(rb"\d{1,6}(?:\.\d{1,6}){0,3}")


def versionOf(text: bytes) -> tuple[int, ...]:
    """
    The numbers at the start of a version (C{b"1.6.21-rc1"} is C{(1, 6,
    21)}); C{()} when it does not start with one.
    """
    found = _LEADING_VERSION.match(text)
    return tuple(int(n) for n in found.group().split(b".")) if found else ()


@attrs.frozen
class Options:
    """
    The options of one connection, checked when the configuration loads.
    """

    min_version: str = setting(
        "", Text('a version such as "1.6" or "1.6.21", or "" for any', 32, _VERSION_OPTION)
    )
    max_line_length: int = setting(1024, Integer(32, 65536))

    @classmethod
    def fromMapping(cls, options: Mapping[str, object]) -> Options:
        return structure(cls, options)

    @property
    def minimum(self) -> tuple[int, ...]:
        """
        C{min_version} as numbers (C{()} accepts any server).
        """
        return versionOf(self.min_version.encode("ascii"))


@implementer(ISupervisedProtocol)
class MemcachedProtocol(Protocol):
    """
    One connection to a memcached server.
    """

    def __init__(self, handle: IConnectionHandle, options: Options) -> None:
        self.handle = handle
        self.options = options
        # What each coming answer answers: a ping's token, or an
        # application's version() waiting for its answer.
        self.pings: Pipeline[bytes | Deferred[bytes]] = Pipeline()
        self.greeted = False
        self.rejected = False
        self._buffer = bytearray()
        self._searched = 0

    def connectionMade(self) -> None:
        self._write(VERSION)

    def sendPing(self, token: bytes) -> None:
        self.pings.sent(token)
        self._write(VERSION)

    def version(self) -> Deferred[bytes]:
        """
        Ask the server's version: fires with it (C{b"1.6.21"}), or fails
        with C{ConnectionLost} if the connection goes away first.
        """
        answer: Deferred[bytes] = Deferred()
        self.pings.sent(answer)
        self._write(VERSION)
        return answer

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for waiting in list(self.pings):
            if isinstance(waiting, Deferred):
                waiting.errback(ConnectionLost(self.handle.name, "lost before the answer"))

    def dataReceived(self, data: bytes) -> None:
        """
        Cut the bytes into lines; search each byte for the line end once.
        """
        if self.rejected:
            return
        self._buffer += data
        limit = self.options.max_line_length
        while not self.rejected:
            end = self._buffer.find(b"\r\n", self._searched)
            if end < 0:
                if len(self._buffer) > limit + 1:  # not even room for the CRLF
                    self._reject(f"a line longer than {limit} bytes")
                self._searched = max(0, len(self._buffer) - 1)
                return
            if end > limit:
                self._reject(f"a line longer than {limit} bytes")
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]  # cheap at the front of a bytearray
            self._searched = 0
            self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        verb, _, version = line.partition(b" ")
        if verb != b"VERSION" or not version:
            self._reject(f"unexpected answer {line[:SHOWN]!r}")
        elif not self.greeted:
            self._greeted(version)
        else:
            answered = self.pings.answered()  # the oldest request in flight, or None
            if isinstance(answered, Deferred):
                answered.callback(version)
            elif answered is not None:
                self.handle.pong(answered)  # a stale token is ignored by the supervisor

    def _greeted(self, version: bytes) -> None:
        self.greeted = True
        if versionOf(version) < self.options.minimum:
            shown = version[:SHOWN].decode("ascii", "replace")
            self._reject(
                f"memcached {shown} is older than min_version {self.options.min_version}",
                permanent=True,
            )
            return
        self.handle.ready()

    def _reject(self, message: str, permanent: bool = False) -> None:
        # Once: the supervisor aborts the transport, and reads no more of it.
        self.rejected = True
        self._buffer.clear()
        self.handle.reject(message, permanent=permanent)

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


@implementer(IProtocolPlugin, IConfigurable)
class MemcachedPlugin:
    """
    Builds a L{MemcachedProtocol} for each attempt.
    """

    name = "memcached"

    def parseOptions(self, options: Mapping[str, object]) -> Options:
        return Options.fromMapping(options)

    def buildProtocol(self, handle: IConnectionHandle, options: Options) -> ISupervisedProtocol:
        return MemcachedProtocol(handle, options)


memcachedPlugin = MemcachedPlugin()
"""The object the entry point names."""


def version(connection: Submitter) -> Deferred[bytes]:
    """
    The server's version, asked on a supervised C{memcached} connection or
    pool (in turn with what was submitted before): a typed call built on
    C{submit}, which fails as any submitted operation does (see
    C{supervisor.operations}).
    """

    def ask(protocol: object) -> Deferred[bytes]:
        if not isinstance(protocol, MemcachedProtocol):
            raise TypeError(f"not a memcached connection: {type(protocol).__name__}")
        return protocol.version()

    return connection.submit(ask)
