"""
Writing a small message at once, instead of on the reactor's next turn.

C{transport.write()} on a Twisted TCP connection only buffers: it registers
the socket for writability, and the reactor's next poll reports it writable,
sends the buffer and unregisters it again. For a heartbeat ping (a few
bytes, on a connection whose buffer is empty) that is two C{epoll_ctl}
calls and a turn of the reactor for one C{send}: most of what a ping costs
besides the C{send} itself. L{eagerWrite} sends at once when nothing is
waiting before it, and leaves everything else to the transport, so the order
of bytes, backpressure and error handling stay Twisted's.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport


def eagerWrite(transport: ITransport, data: bytes) -> None:
    """
    Write C{data} to C{transport}: straight to the socket when C{transport}
    is a plain (not TLS) Twisted TCP connection, connected, not closing, and
    with nothing buffered; whatever the socket does not take at once, and
    any write to another transport, goes through C{transport.write}.
    """
    if (
        (type(transport) is tcp.Client or type(transport) is tcp.Server)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Would block, or failed: the transport's own write path sends
            # it later, or meets the same error and loses the connection.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
