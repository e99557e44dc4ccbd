"""
Scenarios every plugin should survive, each ending in assertions on the
connection's states and reasons. Each takes a fresh L{PluginHarness}, plays
one story to the end (stop included), asserts that no timer is left, and
returns what a test may want to check further.
"""

from __future__ import annotations

from supervisor.testing._harness import FakePeer, PluginHarness, Responder, Step

SLACK = 0.05
"""The shared scheduler may fire a timer up to its resolution (10 ms) late."""


def establish(harness: PluginHarness, respond: Responder | None = None) -> FakePeer:
    """
    Start the connection if needed, accept the attempt with a peer that
    answers with C{respond}, and assert that the plugin declared it ready.
    """
    if not harness.connection.started:
        harness.start()
    peer = harness.accept(respond)
    harness.assertState("ESTABLISHED", "ready")
    return peer


def finish(harness: PluginHarness) -> list[Step]:
    """
    Stop the connection, let any drain run its course (bounded by
    C{drain_timeout}), assert it is CLOSED and no timer is left, and return
    the transitions.
    """
    stopped = harness.stop()
    done: list[object] = []
    stopped.addBoth(done.append)
    if not done:
        harness.advance(harness.spec.drain_timeout + SLACK)
    assert done == [None], f"stop() did not fire; {harness._story()}"
    harness.assertState("CLOSED")
    harness.advance(harness.spec.heartbeat.timeout * 4)  # late answers still scheduled
    harness.assertQuiet()
    return harness.transitions


def peerAnswers(harness: PluginHarness, respond: Responder, pings: int = 3) -> FakePeer:
    """
    A peer that answers everything with C{respond}: the connection becomes
    ESTABLISHED, stays so for C{pings} answered heartbeats (each with a
    round-trip time), and closes gracefully on stop (ESTABLISHED, CLOSING,
    CLOSED).
    """
    peer = establish(harness, respond)
    spec = harness.spec.heartbeat
    assert spec.enabled, "peerAnswers needs heartbeats on"
    harness.runUntil(
        lambda: None in harness.heartbeats or len(harness.heartbeats) >= pings,
        limit=(spec.interval + spec.timeout) * (pings + 1),
    )
    assert None not in harness.heartbeats, f"a heartbeat was missed: {harness.heartbeats}"
    harness.assertState("ESTABLISHED")
    steps = finish(harness)
    assert steps[-2:] == [
        ("ESTABLISHED", "CLOSING", "stopped"),
        ("CLOSING", "CLOSED", "closed"),
    ], harness._story()
    return peer


def peerSilent(harness: PluginHarness, respond: Responder | None = None) -> float:
    """
    A peer that answers the handshake with C{respond}, then nothing: the
    connection is dropped for C{heartbeat} within the heartbeat's detection
    bound (C{interval + timeout * misses}). Returns how long that took.
    """
    peer = establish(harness, respond)
    peer.silence()
    spec = harness.spec.heartbeat
    assert spec.enabled, "peerSilent needs heartbeats on"
    took = harness.runUntil(
        lambda: harness.state != "ESTABLISHED", limit=spec.detectionBound + SLACK * 4
    )
    harness.assertState("IDLE", "heartbeat")
    assert harness.heartbeats[-spec.misses :] == [None] * spec.misses
    assert peer.closedBy == "abort", f"the silent peer's connection was not aborted: {peer}"
    finish(harness)
    return took


def peerSilentInHandshake(harness: PluginHarness) -> FakePeer:
    """
    A peer that accepts the connection and says nothing: the attempt fails
    for C{timeout} exactly at C{connect_timeout}, the transport is aborted,
    and a retry is scheduled. For plugins with a handshake.
    """
    harness.start()
    peer = harness.accept()
    harness.assertState("CONNECTING")
    harness.advance(harness.spec.connect_timeout - SLACK)
    harness.assertState("CONNECTING")
    harness.advance(SLACK * 2)
    harness.assertState("IDLE", "timeout")
    assert peer.closedBy == "abort", f"the attempt's transport was not aborted: {peer}"
    finish(harness)
    return peer


def peerClosesMidHandshake(
    harness: PluginHarness,
    respond: Responder | None = None,
    afterWrites: int = 1,
    reason: str = "handshake",
    permanent: bool = False,
) -> FakePeer:
    """
    A peer that accepts, answers with C{respond}, and hangs up once the
    plugin has written C{afterWrites} times, before the plugin is ready:
    the attempt fails at once for C{reason}, transient (IDLE, retried)
    unless C{permanent} (CLOSED).
    """
    harness.start()
    peer = harness.accept(respond)
    assert len(peer.writes) >= afterWrites, (
        f"the plugin wrote {len(peer.writes)} times, not {afterWrites}, on connect"
    )
    harness.assertState("CONNECTING")
    peer.close()
    harness.assertState("CLOSED" if permanent else "IDLE", reason)
    finish(harness)
    return peer


def garbage(
    harness: PluginHarness,
    data: bytes,
    respond: Responder | None = None,
    duringHandshake: bool = False,
    permanent: bool = False,
) -> FakePeer:
    """
    The peer sends C{data}, which the protocol cannot parse: the plugin
    rejects it at once (not at the next timeout) and the transport is
    aborted. During the handshake the attempt fails for C{handshake}
    (CLOSED if C{permanent}, else IDLE); once ESTABLISHED (reached with
    C{respond}) the connection is dropped for C{lost}.
    """
    if duringHandshake:
        harness.start()
        peer = harness.accept()
        harness.assertState("CONNECTING")
        peer.send(data)
        harness.assertState("CLOSED" if permanent else "IDLE", "handshake")
    else:
        peer = establish(harness, respond)
        peer.send(data)
        harness.assertState("IDLE", "lost")
    assert peer.closedBy == "abort", f"the connection was not aborted: {peer}"
    finish(harness)
    return peer


def slowPong(harness: PluginHarness, respond: Responder, delay: float) -> FakePeer:
    """
    A peer that answers the handshake at once but every later write
    C{delay} seconds late. Under the heartbeat timeout, the connection
    stays ESTABLISHED and the round-trip time is C{delay} (to within a
    microsecond: clock times are sums of floats); at or over it, the
    connection is dropped for C{heartbeat}.
    """
    peer = establish(harness, respond)
    peer.respond(respond, delay=delay)
    spec = harness.spec.heartbeat
    assert spec.enabled, "slowPong needs heartbeats on"
    if delay < spec.timeout:
        harness.runUntil(lambda: harness.rtt is not None, limit=spec.interval + delay + SLACK)
        harness.assertState("ESTABLISHED")
        rtt = harness.rtt
        assert rtt is not None and abs(rtt - delay) < 1e-6, f"rtt {rtt}, not {delay}"
    else:
        harness.runUntil(
            lambda: harness.state != "ESTABLISHED", limit=spec.detectionBound + SLACK * 4
        )
        harness.assertState("IDLE", "heartbeat")
    finish(harness)
    return peer
