"""
When to try again, and whether to: exponential backoff with jitter, the
reset rule, the retry limit, and the transient/permanent classification of
failures.
"""

from __future__ import annotations

import random

import attrs
from twisted.internet import defer, error
from twisted.python.failure import Failure

from supervisor.interfaces import Classification
from supervisor.spec import BackoffSpec


def failureOf(exc: BaseException) -> Failure:
    """
    A L{Failure} for C{exc}, without a traceback.
    """
    return Failure(exc)  # type: ignore[no-untyped-call]


class ConnectTimeout(Exception):
    """
    The attempt (transport connect, TLS and the plugin's handshake together)
    took longer than C{connect_timeout}.
    """


class IdleTimeout(Exception):
    """
    An ESTABLISHED connection received nothing for C{idle_timeout} seconds.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"nothing received for {seconds:g}s")


class HeartbeatTimeout(Exception):
    """
    An ESTABLISHED connection left C{misses} heartbeats in a row unanswered.
    """

    def __init__(self, misses: int) -> None:
        super().__init__(f"{misses} heartbeats unanswered")
        self.misses = misses


@attrs.frozen
class PluginRejection(Exception):
    """
    A protocol plugin refused the connection (bad credentials, a protocol
    error) through its handle.
    """

    message: str
    permanent: bool = True
    overloaded: bool = False

    def __str__(self) -> str:
        return self.message


_TIMEOUTS = (ConnectTimeout, error.TimeoutError, error.TCPTimedOutError, defer.TimeoutError)
_REFUSED = (error.ConnectionRefusedError,)
_DNS = (error.DNSLookupError, error.UnknownHostError)
_LOST = (error.ConnectionLost, error.ConnectionDone, error.ConnectionClosed)


_TLS_MODULES = ("OpenSSL", "ssl", "service_identity")

# What OpenSSL says when a certificate was refused: ours of the server's, or
# the server's of ours (or of the lack of one), told by its alert (RFC 8446
# section 6.2). A handshake failure alert is a mismatch of settings that no
# retry mends either.
_CERTIFICATE_REFUSALS = (
    "certificate verify failed",
    "alert bad certificate",
    "alert unsupported certificate",
    "alert certificate revoked",
    "alert certificate expired",
    "alert certificate unknown",
    "alert unknown ca",
    "alert access denied",
    "alert certificate required",
    "alert handshake failure",
)


def _isTLS(exc: BaseException) -> bool:
    # Recognised by module, so that classifying imports no TLS library.
    return type(exc).__module__.startswith(_TLS_MODULES) or "SSL" in type(exc).__name__


def isCertificateRefusal(failure: Failure) -> bool:
    """
    Whether C{failure} is a TLS verification failure: the server's
    certificate was not trusted or does not carry the expected name
    (service_identity's C{VerificationError}), or the server refused the
    client's certificate or its absence.
    """
    exc = failure.value
    if exc is None or not _isTLS(exc):
        return False
    if type(exc).__module__.startswith("service_identity"):
        return True
    text = str(exc).lower()
    return any(refusal in text for refusal in _CERTIFICATE_REFUSALS)


def classify(failure: Failure) -> Classification:
    """
    The default classification: refused, timeouts, DNS errors and lost
    connections are transient; a TLS verification failure
    (L{isCertificateRefusal}) and a plugin's permanent rejection are
    permanent; anything else is a transient C{other}.
    """
    exc = failure.value
    if exc is None:
        return Classification("other")
    if isinstance(exc, PluginRejection):
        return Classification("handshake", exc.permanent, exc.overloaded)
    if isinstance(exc, _REFUSED):
        return Classification("refused")
    if isinstance(exc, _TIMEOUTS):
        return Classification("timeout")
    if isinstance(exc, _DNS):
        return Classification("dns")
    if _isTLS(exc):
        return Classification("tls", isCertificateRefusal(failure))
    if isinstance(exc, _LOST):
        # The transport came up and went away before the plugin was ready.
        return Classification("handshake")
    return Classification("other")


class Backoff:
    """
    The delays between consecutive failed attempts, as L{BackoffSpec} defines.

    Every delay lies in C{[0, max]}; the jitter is proportional to the
    delay, so a fleet that failed together does not retry together.
    """

    __slots__ = ("_previous", "_rng", "_spec", "retries")

    def __init__(self, spec: BackoffSpec, rng: random.Random) -> None:
        self._spec = spec
        self._rng = rng
        self.retries = 0
        self._previous = spec.initial

    def reset(self) -> None:
        """
        Start the sequence over.
        """
        self.retries = 0
        self._previous = self._spec.initial

    def next(self) -> float:
        """
        The next delay, advancing the sequence.
        """
        spec = self._spec
        n = self.retries
        self.retries += 1
        if spec.jitter == "decorrelated":
            upper = min(spec.max, self._previous * 3)
            delay = min(spec.max, self._rng.uniform(spec.initial, max(upper, spec.initial)))
            self._previous = delay
            return delay
        try:
            base = min(spec.max, spec.initial * spec.multiplier ** min(n, 1000))
        except OverflowError:
            base = spec.max
        if spec.jitter == "full":
            return self._rng.uniform(0.0, base)
        if spec.jitter == "equal":
            return base / 2 + self._rng.uniform(0.0, base / 2)
        return base


class ReconnectPolicy:
    """
    The per-connection memory of the reconnect loop.

    The backoff starts over only when a connection proved healthy: it stayed
    ESTABLISHED for at least C{reset_after} seconds and, when heartbeats are
    on, had at least one heartbeat answered in that time. So a peer that
    accepts and drops at once backs off like one that refuses, and so does a
    peer that accepts and then says nothing. The count of consecutive failed
    attempts (for C{max_retries}) starts over at every successful attempt.
    """

    __slots__ = (
        "_answered",
        "_establishedAt",
        "_proven",
        "backoff",
        "consecutiveFailures",
        "maxRetries",
        "needsAnswer",
        "resetAfter",
    )

    def __init__(
        self, spec: BackoffSpec, maxRetries: int, rng: random.Random, needsAnswer: bool = False
    ) -> None:
        """
        @param needsAnswer: an answered heartbeat is part of the proof of
            health (heartbeats are on).
        """
        self.backoff = Backoff(spec, rng)
        self.resetAfter = spec.reset_after
        self.maxRetries = maxRetries
        self.needsAnswer = needsAnswer
        self.consecutiveFailures = 0
        self._establishedAt: float | None = None
        self._answered = False
        self._proven = False

    def established(self, now: float) -> None:
        """
        An attempt succeeded at C{now}.
        """
        self.consecutiveFailures = 0
        self._establishedAt = now
        self._answered = False
        self._proven = False

    def left(self, now: float) -> None:
        """
        The connection left ESTABLISHED at C{now}: judge whether it proved
        healthy. Only the time ESTABLISHED counts, not what follows (a drain,
        a flap hold).
        """
        if self._establishedAt is not None:
            self._proven = self.proven(now)
            self._establishedAt = None

    def proven(self, now: float) -> bool:
        """
        Whether the connection ESTABLISHED now, were it to end at C{now},
        proved healthy: up for C{reset_after} seconds and, when heartbeats
        are on, with a heartbeat answered.
        """
        return (
            self._establishedAt is not None
            and now - self._establishedAt >= self.resetAfter
            and (self._answered or not self.needsAnswer)
        )

    def answered(self) -> None:
        """
        A heartbeat of the current connection was answered.
        """
        self._answered = True

    def failed(self) -> bool:
        """
        An attempt failed; return whether that was the last one allowed.
        """
        self.consecutiveFailures += 1
        return 0 < self.maxRetries <= self.consecutiveFailures

    def nextDelay(self, now: float) -> float:
        """
        The delay before the next attempt, given that the connection became
        idle at C{now}: the backoff starts over if the connection proved
        healthy since the last delay.
        """
        self.left(now)
        if self._proven:
            self._proven = False
            self.backoff.reset()
        return self.backoff.next()
