"""
What the admin API shows: the JSON shapes of connections and readiness, with
every secret redacted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from supervisor.states.records import BREAKER_STATES

if TYPE_CHECKING:
    from supervisor.breaker import Breaker
    from supervisor.connection import SupervisedConnection
    from supervisor.service import Readiness

__all__ = [
    "breakers",
    "connectionDetail",
    "connectionSummary",
    "dumps",
    "readiness",
    "redact",
]

# A `key=value` whose key names a secret. The key starts the string or follows
# an endpoint string's `:` (or a separator of free text); the value runs to the
# next unescaped `:` or white space.
_SECRET = re.compile(
    r"(?i)(?<![^:\s,;&?(\[{])"
    r"([^:=\s,;&?(\[{]*(?:password|passphrase|secret|token)[^:=\s]*=)"
    r"(?:\\.|[^:\\\s])*"
)

REDACTED = "***"


def redact(text: str) -> str:
    """
    C{text} with the value of every C{key=value} whose key contains
    C{password}, C{passphrase}, C{secret} or C{token} (in any case) replaced
    by C{***}: C{tls:host=h:port=1:passphrase=x} becomes
    C{tls:host=h:port=1:passphrase=***}.
    """
    return _SECRET.sub(r"\1" + REDACTED, text)


def connectionSummary(
    connection: SupervisedConnection, transitions: int | None = None
) -> dict[str, Any]:
    """
    One element of C{GET /connections}.

    @param transitions: if not L{None}, add C{"transitions"}: the last
        C{transitions} changes of state (at most 50, the history kept),
        oldest first, as in L{connectionDetail}.
    """
    spec = connection.spec
    lastError = connection.lastError
    summary: dict[str, Any] = {
        "name": spec.name,
        "endpoint": redact(connection.endpoint),
        "endpoints": [redact(e) for e in spec.targets],
        "protocol": spec.protocol,
        "state": connection.state,
        "since": connection.since,
        "attempts": connection.attempts,
        "consecutive_failures": connection.consecutiveFailures,
        "last_error": None if lastError is None else redact(lastError),
        "rtt_seconds": connection.rtt,
        "backoff_delay_seconds": connection.backoffDelay,
        "held": connection.held,
        "breaker": connection.breaker,
        "lifetime_left": connection.lifetimeLeft,
        "labels": dict(spec.labels),
        "queue_depth": connection.queueDepth,
        "operations_in_flight": connection.operations.inFlight,
    }
    if transitions is not None:
        history = connection.history
        kept = history[len(history) - min(transitions, len(history)) :]
        summary["transitions"] = [t.asJSON() for t in kept]
    return summary


def connectionDetail(connection: SupervisedConnection) -> dict[str, Any]:
    """
    The answer of C{GET /connections/NAME}: the summary plus how each
    endpoint fared and the last 50 transitions, oldest first.
    """
    detail = connectionSummary(connection)
    detail["endpoint_attempts"] = [
        {"endpoint": redact(r.endpoint), "attempts": r.attempts, "failures": r.failures}
        for r in connection.endpointRecords
    ]
    detail["transitions"] = [t.asJSON() for t in connection.history]
    return detail


def readiness(answer: Readiness) -> dict[str, Any]:
    """
    The body of C{GET /readyz}.
    """
    return {
        "ready": answer.ready,
        "reason": answer.reason,
        "established": answer.established,
        "total": answer.total,
        "not_established": list(answer.notEstablished),
    }


def breakers(every: Iterable[Breaker]) -> dict[str, Any]:
    """
    The body of C{GET /breakers}: how many circuit breakers are in each
    state, and those that are not closed, by target.

    @param every: the breakers in use (C{Supervisor.fleet.breakers}).
    """
    counts: dict[str, int] = dict.fromkeys(BREAKER_STATES, 0)
    notClosed = []
    for breaker in every:
        counts[breaker.state] += 1
        if breaker.state != "closed":
            notClosed.append(_breaker(breaker))
    notClosed.sort(key=lambda b: (b["scope"], b["target"]))
    return {**counts, "not_closed": notClosed}


def _breaker(breaker: Breaker) -> dict[str, Any]:
    # The key is "endpoint ENDPOINT" or "connection NAME" (fleet.breakerKey).
    scope, _, target = breaker.key.partition(" ")
    return {
        "target": redact(target),
        "scope": scope,
        "state": breaker.state,
        "members": breaker.members,
        "held": breaker.held,
    }


def dumps(value: object) -> bytes:
    """
    C{value} as UTF-8 JSON, one line plus a newline. Values JSON has no type
    for (a TOML date in a label) become strings.
    """
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str).encode() + b"\n"
