"""
The plugin author's test kit: drive a protocol plugin through the real
connection machine on a fake clock and in-memory transports, from a pytest
suite, deterministically.

    from supervisor.testing import PluginHarness, scenarios

    harness = PluginHarness(myPlugin, options={"greeting": "HELLO"})
    harness.start()
    peer = harness.accept()
    peer.send(b"HELLO\\n")
    harness.assertState("ESTABLISHED", "ready")

L{PluginHarness} owns the fake reactor, the connection and its peers;
L{FakePeer} is the remote end of one accepted attempt, answering with a
L{Responder} (L{perLine} and L{perFrame} answer whole lines or frames
however the plugin split its writes); L{scenarios} holds
ready-made stories (peer answers, silent, closes mid-handshake, garbage,
slow pong) that end in assertions. Nothing here imports the global reactor.
See C{docs/plugins/testing.md}.
"""

from supervisor.testing import _scenarios as scenarios
from supervisor.testing._harness import (
    FakePeer,
    FrameLength,
    PluginHarness,
    Responder,
    Step,
    perFrame,
    perLine,
)

__all__ = [
    "FakePeer",
    "FrameLength",
    "PluginHarness",
    "Responder",
    "Step",
    "perFrame",
    "perLine",
    "scenarios",
]
