"""
The C{redis}, C{nats} and C{mqtt} plugins against their real servers, where
the three behave alike: a server frozen with SIGSTOP, and credentials the
server refuses. What is particular to each plugin is in its own module
(C{test_redis_server}, C{test_nats_server}, C{test_mqtt_server}).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.integration.scenarios import connectionTo, freezeAndThaw, refusedForGood, secretFile
from tests.integration.servers import ServerLauncher

pytestmark = pytest.mark.integration

USER = "watcher"
PASSWORD = "correct-horse-battery"


@pytest.mark.parametrize("protocol", ["redis", "nats", "mqtt"])
@pytest_twisted.inlineCallbacks
def test_aFrozenServerIsDroppedForHeartbeats(
    servers: ServerLauncher, protocol: str
) -> Generator[Deferred[Any], Any, None]:
    """
    SIGSTOP: dropped for "heartbeat" within the bound; while frozen,
    attempts never become ESTABLISHED (each handshake needs the server's
    answer: redis its PONG, nats its INFO, mqtt its CONNACK); SIGCONT:
    back, and stable.
    """
    server = yield servers.forProtocol(protocol)
    yield freezeAndThaw(server, connectionTo(protocol, f"{protocol}-freeze", server.port))


@attrs.frozen
class SecretFile:
    """
    An option whose value is the path of a file holding C{text}.
    """

    text: str


NOT_AUTHORISED = "CONNACK refused: 5 (not authorised)"

REFUSALS = [
    # redis with requirepass: AUTH is refused with WRONGPASS (also for an
    # unknown ACL user); without AUTH, the first command gets NOAUTH.
    ("redis", "wrong-password", {"password_file": SecretFile("not-" + PASSWORD)}, "WRONGPASS"),
    ("redis", "no-password", {}, "NOAUTH"),
    (
        "redis",
        "wrong-user",
        {"password_file": SecretFile(PASSWORD), "username": "nobody", "hello": 3},
        "WRONGPASS",
    ),
    # nats with authorization { user, password }: the server's -ERR.
    (
        "nats",
        "wrong-password",
        {"user": USER, "pass_file": SecretFile("not-" + PASSWORD)},
        "Authorization Violation",
    ),
    ("nats", "no-credentials", {}, "Authorization Violation"),
    ("nats", "token-instead", {"token_file": SecretFile(PASSWORD)}, "Authorization Violation"),
    # mosquitto with a password file and allow_anonymous false: CONNACK 5.
    (
        "mqtt",
        "wrong-password",
        {"username": USER, "password_file": SecretFile("not-" + PASSWORD)},
        NOT_AUTHORISED,
    ),
    ("mqtt", "anonymous", {}, NOT_AUTHORISED),
    (
        "mqtt",
        "unknown-user",
        {"username": "nobody", "password_file": SecretFile(PASSWORD)},
        NOT_AUTHORISED,
    ),
]


@pytest.mark.parametrize(
    ("protocol", "auth", "options", "why"),
    REFUSALS,
    ids=[f"{protocol}-{auth}" for protocol, auth, _, _ in REFUSALS],
)
@pytest_twisted.inlineCallbacks
def test_badCredentialsCloseForGood(
    servers: ServerLauncher,
    tmp_path: Path,
    protocol: str,
    auth: str,
    options: Mapping[str, object],
    why: str,
) -> Generator[Deferred[Any], Any, None]:
    """
    A server that requires C{USER} and C{PASSWORD}: a wrong password, none,
    an unknown user or the wrong kind of credential: CLOSED at once,
    permanently, reason "handshake" with the server's answer; the password
    nowhere in what the connection reports.
    """
    server = yield servers.forProtocol(protocol, USER, PASSWORD)
    written = {
        key: secretFile(tmp_path, value.text) if isinstance(value, SecretFile) else value
        for key, value in options.items()
    }
    connection = connectionTo(protocol, f"{protocol}-auth", server.port, **written)
    yield refusedForGood(connection, why, PASSWORD)
