"""
Backoff, jitter, reset and classification.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, DNSMismatch, IPAddress_ID, IPAddressMismatch
from twisted.internet import defer, error
from twisted.python.failure import Failure

from supervisor.policy import (
    Backoff,
    ConnectTimeout,
    PluginRejection,
    ReconnectPolicy,
    classify,
)
from supervisor.spec import BackoffSpec


def delays(spec: BackoffSpec, seed: int, count: int) -> list[float]:
    backoff = Backoff(spec, random.Random(seed))
    return [backoff.next() for _ in range(count)]


def test_noJitterIsTheCappedExponential() -> None:
    spec = BackoffSpec(initial=1.0, multiplier=2.0, max=10.0, jitter="none")
    assert delays(spec, 0, 6) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_fullJitterDrawsFromZeroToTheDelay() -> None:
    spec = BackoffSpec(initial=1.0, multiplier=1.6, max=5.0, jitter="full")
    reference = random.Random(7)
    expected = [reference.uniform(0, min(5.0, 1.0 * 1.6**n)) for n in range(8)]
    assert delays(spec, 7, 8) == expected


def test_equalJitterKeepsHalfTheDelay() -> None:
    spec = BackoffSpec(initial=2.0, multiplier=2.0, max=20.0, jitter="equal")
    reference = random.Random(3)
    expected = []
    for n in range(6):
        base = min(20.0, 2.0 * 2.0**n)
        expected.append(base / 2 + reference.uniform(0, base / 2))
    assert delays(spec, 3, 6) == expected
    assert all(d >= min(20.0, 2.0 * 2.0**n) / 2 for n, d in enumerate(expected))


def test_decorrelatedJitterDependsOnThePreviousDelay() -> None:
    spec = BackoffSpec(initial=1.0, max=30.0, jitter="decorrelated")
    reference = random.Random(11)
    previous, expected = 1.0, []
    for _ in range(10):
        previous = min(30.0, reference.uniform(1.0, min(30.0, previous * 3)))
        expected.append(previous)
    assert delays(spec, 11, 10) == expected


def test_sameSeedSameSequenceOtherSeedOther() -> None:
    spec = BackoffSpec(jitter="full")
    assert delays(spec, 5, 10) == delays(spec, 5, 10)
    assert delays(spec, 5, 10) != delays(spec, 6, 10)


def test_fullJitterIsProportionalNotAdditive() -> None:
    """
    Over many draws the mean of full jitter is about half the delay: a
    fleet's retries spread over the whole window, not over one second.
    """
    spec = BackoffSpec(initial=60.0, multiplier=1.0, max=60.0, jitter="full")
    backoff = Backoff(spec, random.Random(1))
    draws = [backoff.next() for _ in range(5000)]
    assert 27 < sum(draws) / len(draws) < 33
    assert min(draws) < 3 and max(draws) > 57


@given(
    initial=st.floats(0.001, 100),
    extra=st.floats(0, 1000),
    multiplier=st.floats(1, 10),
    jitter=st.sampled_from(["none", "full", "equal", "decorrelated"]),
    seed=st.integers(0, 2**32),
    count=st.integers(1, 200),
)
def test_delaysAreNeverNegativeNorAboveMax(
    initial: float, extra: float, multiplier: float, jitter: str, seed: int, count: int
) -> None:
    spec = BackoffSpec(
        initial=initial,
        multiplier=multiplier,
        max=initial + extra,
        jitter=jitter,  # type: ignore[arg-type]
    )
    for delay in delays(spec, seed, count):
        assert 0 <= delay <= spec.max


def test_resetOnlyAfterStayingEstablished() -> None:
    spec = BackoffSpec(initial=1.0, multiplier=2.0, max=100.0, jitter="none", reset_after=10.0)
    policy = ReconnectPolicy(spec, 0, random.Random(0))
    assert [policy.nextDelay(0), policy.nextDelay(1), policy.nextDelay(3)] == [1.0, 2.0, 4.0]
    policy.established(now=10.0)
    assert policy.nextDelay(now=19.9) == 8.0  # lasted 9.9 s: no reset
    policy.established(now=30.0)
    assert policy.nextDelay(now=40.0) == 1.0  # lasted 10 s: reset
    assert policy.nextDelay(now=41.0) == 2.0


def test_maxRetriesCountsConsecutiveFailures() -> None:
    policy = ReconnectPolicy(BackoffSpec(), 3, random.Random(0))
    assert [policy.failed(), policy.failed()] == [False, False]
    policy.established(now=0)  # a success starts the count over
    assert [policy.failed(), policy.failed(), policy.failed()] == [False, False, True]


def test_zeroMaxRetriesRetriesForever() -> None:
    policy = ReconnectPolicy(BackoffSpec(), 0, random.Random(0))
    assert not any(policy.failed() for _ in range(10_000))


@pytest.mark.parametrize(
    ("exc", "reason", "permanent"),
    [
        (error.ConnectionRefusedError(), "refused", False),
        (error.TimeoutError(), "timeout", False),
        (error.TCPTimedOutError(), "timeout", False),
        (defer.TimeoutError(), "timeout", False),
        (ConnectTimeout("slow"), "timeout", False),
        (error.DNSLookupError("nowhere"), "dns", False),
        (error.ConnectionLost(), "handshake", False),
        (error.ConnectionDone(), "handshake", False),
        (SSL.Error([("SSL routines", "", "certificate verify failed")]), "tls", True),
        (SSL.Error([("SSL routines", "", "unexpected eof while reading")]), "tls", False),
        # The server refusing our certificate, or its absence, by its alert.
        (SSL.Error([("SSL routines", "", "tlsv13 alert certificate required")]), "tls", True),
        (SSL.Error([("SSL routines", "", "sslv3 alert bad certificate")]), "tls", True),
        (SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")]), "tls", True),
        (SSL.Error([("SSL routines", "", "sslv3 alert certificate expired")]), "tls", True),
        (SSL.Error([("SSL routines", "", "sslv3 alert handshake failure")]), "tls", True),
        (SSL.Error([("SSL routines", "", "wrong version number")]), "tls", False),
        # A trusted certificate for another name (service_identity).
        (VerificationError([DNSMismatch(DNS_ID("db.internal"))]), "tls", True),
        (VerificationError([IPAddressMismatch(IPAddress_ID("127.0.0.1"))]), "tls", True),
        (PluginRejection("WRONGPASS", permanent=True), "handshake", True),
        (PluginRejection("busy", permanent=False), "handshake", False),
        (ValueError("what"), "other", False),
    ],
)
def test_defaultClassification(exc: Exception, reason: str, permanent: bool) -> None:
    c = classify(Failure(exc))
    assert (c.reason, c.permanent) == (reason, permanent)
