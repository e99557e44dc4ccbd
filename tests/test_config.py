"""
The configuration loader: merges, every kind of refusal with its key path,
and never anything but L{ConfigError}.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from supervisor.config import AdminSpec, Config, ConfigError, Protocols, loadConfig, parseConfig
from supervisor.daemon import Daemon, Options
from supervisor.interfaces import (
    IConfigurable,
    IConnectionHandle,
    IProtocolPlugin,
    ISupervisedProtocol,
)
from supervisor.options import Choice, Integer, renderNumber, setting, structure
from supervisor.service import Supervisor
from supervisor.spec import BackoffSpec, ConnectionSpec, HeartbeatSpec

HERE = Path(__file__).parent
ROOT = HERE.parent
FILE = "/etc/netsupervisor/main.toml"
KNOWN = ("line", "redis")
REFUSES = "(not shown in full), which Twisted refuses:"
CONN = '[[connection]]\nname = "c"\nendpoint = "tcp:host=127.0.0.1:port=1"\n'


def parse(text: str, protocols: Protocols | None = KNOWN) -> Config:
    return parseConfig(text, FILE, protocols=protocols)


def refused(text: str, protocols: Protocols | None = KNOWN) -> ConfigError:
    """
    Parse C{text}, which must be refused with a one-line message naming
    L{FILE}.
    """
    with pytest.raises(ConfigError) as info:
        parse(text, protocols)
    assertOneLine(info.value, FILE)
    return info.value


def assertOneLine(error: ConfigError, path: str) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{path}: "), message
    assert "Traceback" not in message


def assertRefusal(error: ConfigError, keyPath: str, expected: str, got: str | None = None) -> None:
    """
    The error names C{keyPath}, says what was C{expected} and, if given,
    what was C{got}, in the documented format.
    """
    assert error.path == FILE
    assert error.keyPath == keyPath, str(error)
    assert error.problem.startswith(f"expected {expected}"), str(error)
    if got is not None:
        assert f", got {got}" in error.problem, str(error)
    assert str(error) == f"{FILE}: {keyPath}: {error.problem}"


# Syntax and reading


def test_syntaxErrorGivesLineAndColumn() -> None:
    error = refused('[admin]\nlisten = "tcp:9100"\nready_share = = 1\n')
    assert (error.line, error.column) == (3, 15)
    assert error.keyPath == ""
    assert str(error) == f"{FILE}: line 3, column 15: Invalid value"


def test_syntaxErrorAtTheEndOfTheDocument() -> None:
    error = refused("[admin]\nlisten =")
    assert str(error) == f"{FILE}: line 2, column 9: Invalid value"


def test_duplicateTableIsASyntaxError() -> None:
    error = refused("[admin]\n[admin]\n")
    assert error.line == 2
    assert "Cannot declare" in error.problem


def test_tooDeeplyNestedIsRefused() -> None:
    error = refused("x = " + "[" * 5000)
    assert error.problem == "cannot parse: nested too deeply"


def test_unreadableFile(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        loadConfig(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"
    assert info.value.path == path


def test_directoryIsUnreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        loadConfig(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path}: cannot read: ")
    assertOneLine(info.value, str(tmp_path))


def test_invalidUTF8GivesItsPlace(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[admin]\nlisten = "tcp:\xff"\n')
    with pytest.raises(ConfigError) as info:
        loadConfig(str(path))
    assert str(info.value) == f"{path}: line 2, column 15: invalid UTF-8"


def test_loadConfigSkipsAByteOrderMark(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + CONN.encode())
    assert [c.name for c in loadConfig(str(path), protocols=KNOWN).connections] == ["c"]


def test_loadConfigNamesTheFileInErrors(tmp_path: Path) -> None:
    path = tmp_path / "conf.toml"
    path.write_text(CONN + "max_retries = -1\n")
    with pytest.raises(ConfigError) as info:
        loadConfig(str(path), protocols=KNOWN)
    assert str(info.value) == (
        f"{path}: connection[0].max_retries: expected an integer >= 0, got -1"
    )


def test_messageStaysOnOneLineWhateverThePath() -> None:
    with pytest.raises(ConfigError) as info:
        parseConfig("x = 1", "odd\nname\u2028.toml", protocols=KNOWN)
    assert len(str(info.value).splitlines()) == 1
    assert str(info.value).startswith("odd\\nname\\u2028.toml: x: ")


# Unknown keys


@pytest.mark.parametrize(
    ("text", "keyPath", "expected"),
    [
        ("colour = 1", "colour", "one of admin, supervisor, metrics, defaults, connection"),
        ("[connections]", "connections", "one of admin, supervisor, metrics, defaults, connection"),
        ("[admin]\nport = 1", "admin.port", "one of listen, token_file, ready_share"),
        ("[defaults]\nretries = 1", "defaults.retries", "one of protocol, connect_timeout"),
        ("[defaults.backoff]\nfactor = 2", "defaults.backoff.factor", "one of initial, multiplier"),
        ("[defaults]\nheartbeat = { every = 2 }", "defaults.heartbeat.every", "one of interval"),
        (CONN + "timeout = 1", "connection[0].timeout", "one of name, endpoint, protocol"),
        (CONN + CONN.replace('"c"', '"d"') + "backoff.x = 1", "connection[1].backoff.x", "one of"),
        (CONN + "heartbeat = { intervall = 1 }", "connection[0].heartbeat.intervall", "one of"),
        (CONN + '"odd key" = 1', 'connection[0]."odd key"', "one of name"),
    ],
)
def test_unknownKey(text: str, keyPath: str, expected: str) -> None:
    assertRefusal(refused(text), keyPath, expected, "an unknown key")


def test_unknownKeySuggestsTheClosestOne() -> None:
    error = refused(CONN + "heartbeat = { intervall = 1 }")
    assert error.problem == (
        'expected one of interval, timeout, misses, got an unknown key (did you mean "interval"?)'
    )


@pytest.mark.parametrize(
    ("text", "keyPath"),
    [
        ("[defaults]\nconnection = []", "defaults.connection"),
        ("[admin]\ndefaults = {}", "admin.defaults"),
        (CONN + "admin = {}", "connection[0].admin"),
    ],
)
def test_topLevelKeyInATable(text: str, keyPath: str) -> None:
    error = refused(text)
    key = keyPath.rpartition(".")[2]
    assertRefusal(error, keyPath, "one of", f'"{key}", which belongs at the top level, before any')


def test_metricsPerConnection() -> None:
    assert parse("").metrics.per_connection is True
    assert parse("[metrics]\nper_connection = false\n").metrics.per_connection is False
    error = refused("[metrics]\nper_connectio = false\n")
    assertRefusal(error, "metrics.per_connectio", "one of per_connection")


@pytest.mark.parametrize("key", ["labels", "name", "endpoint"])
def test_perConnectionKeyInDefaults(key: str) -> None:
    error = refused(f'[defaults]\n{key} = "x"')
    assertRefusal(error, f"defaults.{key}", "one of protocol", f'"{key}", which is set per')


# Wrong types


@pytest.mark.parametrize(
    ("text", "keyPath", "expected", "got"),
    [
        ("admin = 1", "admin", "a table", "the integer 1"),
        ("[admin]\nlisten = 9100", "admin.listen", "a Twisted server endpoint", "the integer 9100"),
        ("[admin]\ntoken_file = false", "admin.token_file", "a string", "the boolean false"),
        ("[admin]\nready_share = true", "admin.ready_share", "a number from 0 to 1", "the boolean"),
        (
            '[metrics]\nper_connection = "no"',
            "metrics.per_connection",
            "a boolean",
            'the string "no"',
        ),
        ('[defaults]\nprotocol = ["line"]', "defaults.protocol", "one of the known", "an array"),
        ('[defaults]\nconnect_timeout = "10"', "defaults.connect_timeout", "a number > 0", None),
        ("[defaults]\ndrain_timeout = true", "defaults.drain_timeout", "a number >= 0", None),
        ("[defaults]\nmax_retries = 2.0", "defaults.max_retries", "an integer >= 0", "the float"),
        ("[defaults]\nmax_retries = false", "defaults.max_retries", "an integer", "the boolean"),
        ("[defaults]\nbackoff = 1", "defaults.backoff", "a table", "the integer 1"),
        ("[defaults]\nheartbeat = [1]", "defaults.heartbeat", "a table", "an array"),
        ("[defaults]\noptions = 1", "defaults.options", "a table", "the integer 1"),
        (
            "[defaults]\nheartbeat = { misses = 2.0 }",
            "defaults.heartbeat.misses",
            "an integer >= 1",
            "the float 2.0",
        ),
        (
            "[defaults]\nheartbeat = { interval = true }",
            "defaults.heartbeat.interval",
            "a number >= 0",
            "the boolean true",
        ),
        (
            "[defaults]\nbackoff = { jitter = 1 }",
            "defaults.backoff.jitter",
            "one of none, full, equal, decorrelated",
            "the integer 1",
        ),
        (
            "[defaults]\nbackoff = { initial = 1979-05-27 }",
            "defaults.backoff.initial",
            "a number > 0",
            "a date/time",
        ),
        ("connection = 1", "connection", "an array of tables ([[connection]])", "the integer"),
        ("[connection]\nname = 'a'", "connection", "an array of tables", "a table"),
        ("connection = [1]", "connection[0]", "a table", "the integer 1"),
        (CONN.replace('"c"', "3"), "connection[0].name", "a string matching", "the integer 3"),
        (
            CONN.replace('"tcp:host=127.0.0.1:port=1"', "{ host = 'h' }"),
            "connection[0].endpoint",
            "a Twisted client endpoint string",
            "a table",
        ),
        (CONN + "labels = 1", "connection[0].labels", "a table", "the integer 1"),
        (CONN + "labels = { group = 1 }", "connection[0].labels.group", "a string", "the integer"),
        (
            CONN + "options = { tls = { verify = true } }",
            "connection[0].options.tls",
            "a string, an integer, a finite float or a boolean",
            "a table",
        ),
        (
            CONN + "options = { hosts = ['a'] }",
            "connection[0].options.hosts",
            "a string, an integer",
            "an array",
        ),
    ],
)
def test_wrongType(text: str, keyPath: str, expected: str, got: str | None) -> None:
    assertRefusal(refused(text), keyPath, expected, got)


def test_stringForANumberIsShownAsAString() -> None:
    error = refused('[defaults]\nconnect_timeout = "10"')
    assert error.problem == 'expected a number > 0, got the string "10"'


def test_integerIsAcceptedForANumber() -> None:
    config = parse(
        "[admin]\nready_share = 1\n[defaults]\nconnect_timeout = 3\n"
        "heartbeat = { interval = 0, timeout = 2 }\n" + CONN
    )
    spec = config.connections[0]
    assert config.admin.ready_share == 1.0
    assert isinstance(config.admin.ready_share, float)
    assert spec.connect_timeout == 3.0
    assert isinstance(spec.connect_timeout, float)
    assert spec.heartbeat == HeartbeatSpec(interval=0.0, timeout=2.0)


def test_longStringsAreShortened() -> None:
    error = refused(f'[defaults]\nbackoff = {{ jitter = "{"x" * 500}" }}')
    assert len(str(error)) < 250
    assert '"xxxxx' in error.problem
    assert '..."' in error.problem


# Out of range


@pytest.mark.parametrize(
    ("text", "keyPath", "expected", "got"),
    [
        ("[defaults]\nconnect_timeout = 0", "defaults.connect_timeout", "a number > 0", "0"),
        ("[defaults]\nconnect_timeout = -1.5", "defaults.connect_timeout", "a number > 0", "-1.5"),
        ("[defaults]\ndrain_timeout = -1", "defaults.drain_timeout", "a number >= 0", "-1"),
        ("[defaults]\nmax_retries = -1", "defaults.max_retries", "an integer >= 0", "-1"),
        (
            "[defaults]\nbackoff = { initial = 0 }",
            "defaults.backoff.initial",
            "a number > 0",
            "0",
        ),
        (
            "[defaults]\nbackoff = { multiplier = 0.5 }",
            "defaults.backoff.multiplier",
            "a number >= 1",
            "0.5",
        ),
        ("[defaults]\nbackoff = { max = 0.0 }", "defaults.backoff.max", "a number > 0", "0.0"),
        (
            "[defaults]\nbackoff = { reset_after = -0.1 }",
            "defaults.backoff.reset_after",
            "a number >= 0",
            "-0.1",
        ),
        (
            "[defaults]\nheartbeat = { interval = -1 }",
            "defaults.heartbeat.interval",
            "a number >= 0",
            "-1",
        ),
        (
            "[defaults]\nheartbeat = { timeout = 0 }",
            "defaults.heartbeat.timeout",
            "a number > 0",
            "0",
        ),
        (
            "[defaults]\nheartbeat = { misses = 0 }",
            "defaults.heartbeat.misses",
            "an integer >= 1",
            "0",
        ),
        ("[admin]\nready_share = 1.01", "admin.ready_share", "a number from 0 to 1", "1.01"),
        ("[admin]\nready_share = -0.5", "admin.ready_share", "a number from 0 to 1", "-0.5"),
        (CONN + "heartbeat.timeout = -2", "connection[0].heartbeat.timeout", "a number > 0", "-2"),
        (CONN + "max_retries = -3", "connection[0].max_retries", "an integer >= 0", "-3"),
    ],
)
def test_outOfRange(text: str, keyPath: str, expected: str, got: str) -> None:
    error = refused(text)
    assertRefusal(error, keyPath, expected, got)
    assert error.problem.endswith(f", got {got}")


@pytest.mark.parametrize("value", ["nan", "+inf", "-inf", "inf"])
@pytest.mark.parametrize(
    ("table", "key"),
    [("defaults", "connect_timeout"), ("defaults", "drain_timeout"), ("admin", "ready_share")],
)
def test_nonFiniteNumbersAreRefused(value: str, table: str, key: str) -> None:
    error = refused(f"[{table}]\n{key} = {value}")
    assertRefusal(error, f"{table}.{key}", "a number", value.lstrip("+"))


def test_nonFiniteOptionIsRefused() -> None:
    error = refused(CONN + "options = { ratio = nan }")
    assertRefusal(error, "connection[0].options.ratio", "a string, an integer", "nan")


def test_hugeIntegerForANumberIsRefused() -> None:
    error = refused(f"[defaults]\nconnect_timeout = {10**400}")
    assertRefusal(error, "defaults.connect_timeout", "a number > 0", "the integer 1000")


def test_maxBelowInitialInDefaults() -> None:
    error = refused("[defaults]\nbackoff = { initial = 5.0, max = 2.0 }")
    assertRefusal(error, "defaults.backoff.max", "a number >= backoff.initial (5.0)", "2.0")


def test_initialAboveTheBuiltInMax() -> None:
    error = refused("[defaults]\nbackoff = { initial = 200 }")
    assertRefusal(error, "defaults.backoff.initial", "a number <= backoff.max (120.0)", "200.0")


def test_maxBelowAnInheritedInitial() -> None:
    """
    C{max < initial} across layers is reported where the connection set
    its part.
    """
    error = refused("[defaults]\nbackoff = { initial = 5 }\n" + CONN + "backoff = { max = 2 }")
    assertRefusal(error, "connection[0].backoff.max", "a number >= backoff.initial (5.0)", "2.0")
    error = refused("[defaults]\nbackoff = { max = 5 }\n" + CONN + "backoff.initial = 8")
    assertRefusal(error, "connection[0].backoff.initial", "a number <= backoff.max (5.0)", "8.0")


# Values


@pytest.mark.parametrize("jitter", ["Full", "fulll", "random", ""])
def test_unknownJitter(jitter: str) -> None:
    error = refused(CONN + f'backoff = {{ jitter = "{jitter}" }}')
    assertRefusal(
        error,
        "connection[0].backoff.jitter",
        "one of none, full, equal, decorrelated",
        f'"{jitter}"',
    )


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_everyJitterIsAccepted(jitter: str) -> None:
    config = parse(CONN + f'backoff = {{ jitter = "{jitter}" }}')
    assert config.connections[0].backoff.jitter == jitter


def test_missingName() -> None:
    error = refused(CONN + '[[connection]]\nendpoint = "tcp:host=h:port=1"\n')
    assertRefusal(error, "connection[1].name", "a string matching [A-Za-z0-9_.:-]+", "nothing")


def test_missingEndpoint() -> None:
    error = refused('[[connection]]\nname = "x"\n')
    assertRefusal(error, "connection[0].endpoint", "a Twisted client endpoint string", "nothing")


@pytest.mark.parametrize("name", ["", "has space", "slash/name", "é", "tab\tname", "a,b"])
def test_invalidName(name: str) -> None:
    escaped = name.replace("\t", "\\t")
    error = refused(CONN.replace('"c"', f'"{escaped}"'))
    assertRefusal(error, "connection[0].name", "a string matching [A-Za-z0-9_.:-]+", '"')
    assert len(str(error).splitlines()) == 1


def test_validNames() -> None:
    text = "".join(
        CONN.replace('"c"', f'"{name}"') for name in ["a", "A-b_c.d:e", "0", "cache-1:6379"]
    )
    assert [c.name for c in parse(text).connections] == ["a", "A-b_c.d:e", "0", "cache-1:6379"]


def test_duplicateNameSaysWhichEarlierEntry() -> None:
    other = CONN.replace('"c"', '"d"')
    error = refused(other + CONN + other + CONN)
    assertRefusal(error, "connection[2].name", "a unique name", '"d", which connection[0] already')


@pytest.mark.parametrize("label", ["has-dash", "0digit", "__reserved", "dotted.name", "", "spa ce"])
def test_invalidLabelName(label: str) -> None:
    error = refused(CONN + f'labels = {{ "{label}" = "x" }}')
    assert error.keyPath.startswith("connection[0].labels.")
    assert error.problem.startswith("expected a label name matching [A-Za-z_][A-Za-z0-9_]*")


@pytest.mark.parametrize(
    ("endpoint", "got"),
    [
        ("", "a string without an endpoint type (no ':')"),
        ("127.0.0.1:6379", '"127.0.0.1:...", an unknown client endpoint type'),
        ("http:host=a:port=1", '"http:...", an unknown client endpoint type'),
        ("tcp:host=a", f'"tcp:..." {REFUSES} missing'),
        ("tcp:host=a:port=1:colour=red", '"tcp:..." (not shown in full), which Twisted refuses'),
        (
            "tcp:host=a:port=http",
            f'"tcp:..." {REFUSES} a parameter has an invalid value',
        ),
        (
            "unix:path=/x:timeout=soon",
            f'"unix:..." {REFUSES} a parameter has an invalid value',
        ),
        (
            "tls:host=a:port=1:certificate=/nonexistent.pem",
            f'"tls:..." {REFUSES} a file it names cannot be read',
        ),
    ],
)
def test_badEndpoint(endpoint: str, got: str) -> None:
    error = refused(CONN.replace("tcp:host=127.0.0.1:port=1", endpoint))
    assertRefusal(error, "connection[0].endpoint", "a Twisted client endpoint string", got)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:host=db.example:port=5432:password=hunter2x",
        "tcp:host=hunter2x@db",
        "hunter2x",
        "tcp:host=a:port=hunter2x",
        "user hunter2x:password",
    ],
)
def test_refusedEndpointDoesNotEchoSecrets(endpoint: str) -> None:
    error = refused(CONN.replace("tcp:host=127.0.0.1:port=1", endpoint))
    assert error.keyPath == "connection[0].endpoint"
    assert "hunter2" not in str(error)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:host=127.0.0.1:port=6379",
        "tcp:127.0.0.1:6379",
        "tcp:host=::1:port=1:timeout=5",
        "tls:host=example.com:port=443",
        "tls:example.com:443",
        "unix:path=/run/x.sock",
        "unix:/run/x.sock:timeout=3",
    ],
)
def test_goodEndpoints(endpoint: str) -> None:
    text = CONN.replace("tcp:host=127.0.0.1:port=1", endpoint.replace("\\", "\\\\"))
    assert parse(text).connections[0].endpoint == endpoint


@pytest.mark.parametrize(
    ("listen", "got"),
    [
        ("", "a string without an endpoint type"),
        ("9100", "a string without an endpoint type"),
        (
            "tcp:port",
            f'"tcp:..." {REFUSES} a parameter has an invalid value',
        ),
        (
            "tcp:9100:colour=red",
            f'"tcp:..." {REFUSES} missing or unexpected parameters',
        ),
        ("web:9100", '"web:...", an unknown server endpoint type'),
    ],
)
def test_badAdminListen(listen: str, got: str) -> None:
    error = refused(f'[admin]\nlisten = "{listen}"')
    assertRefusal(error, "admin.listen", "a Twisted server endpoint string", got)


def test_goodAdminListen() -> None:
    assert parse('[admin]\nlisten = "unix:/run/ns.sock"').admin.listen == "unix:/run/ns.sock"
    assert parse('[admin]\nlisten = "tcp:0"').admin.listen == "tcp:0"


def test_unknownProtocolSaysWhichAreKnown() -> None:
    error = refused(CONN + 'protocol = "mqtt"')
    assertRefusal(error, "connection[0].protocol", "one of the known protocols (line, redis)")
    assert error.problem.endswith(', got "mqtt"')


def test_unknownProtocolInDefaults() -> None:
    error = refused('[defaults]\nprotocol = "nats"\n' + CONN + 'protocol = "line"')
    assertRefusal(error, "defaults.protocol", "one of the known protocols (line, redis)", '"nats"')


def test_builtInProtocolNotInstalled() -> None:
    error = refused(CONN, protocols=["redis"])
    assertRefusal(error, "connection[0].protocol", "one of the known protocols (redis)", "nothing")
    assert 'the built-in default "line" is not installed' in error.problem
    assert parse(CONN + 'protocol = "redis"', protocols=["redis"]).connections


def test_noProtocolsInstalled() -> None:
    error = refused(CONN, protocols=())
    assert "known protocols (none installed)" in error.problem


def test_protocolsDefaultToTheInstalledPlugins() -> None:
    assert parse(CONN + 'protocol = "line"', protocols=None).connections[0].protocol == "line"
    error = refused(CONN + 'protocol = "no-such-plugin"', protocols=None)
    assert error.keyPath == "connection[0].protocol"
    assert "line" in error.problem


# Valid files


def test_emptyFileGivesTheBuiltInDefaults() -> None:
    config = parse("")
    assert config == Config(path=FILE, admin=AdminSpec(), connections=())
    assert config.admin == AdminSpec(
        listen="tcp:9100:interface=127.0.0.1", token_file="", ready_share=0.0
    )


def test_zeroConnectionsAreAllowed() -> None:
    config = parse("connection = []\n[admin]\nready_share = 1\n[defaults]\nmax_retries = 3\n")
    assert config.connections == ()
    assert config.byName() == {}


def test_builtInDefaultsAreTheSpecClassDefaults() -> None:
    spec = parse(CONN).connections[0]
    assert spec == ConnectionSpec(name="c", endpoint="tcp:host=127.0.0.1:port=1")
    assert spec.backoff == BackoffSpec(
        initial=1.0, multiplier=1.6, max=120.0, jitter="full", reset_after=10.0
    )
    assert spec.heartbeat == HeartbeatSpec(interval=10.0, timeout=5.0, misses=2)
    assert (spec.protocol, spec.connect_timeout, spec.drain_timeout, spec.max_retries) == (
        "line",
        10.0,
        30.0,
        0,
    )


def test_fullFileMergesDefaultsAndOverrides() -> None:
    path = str(HERE / "configs" / "full.toml")
    config = loadConfig(path, protocols=KNOWN)
    assert config.path == path
    assert config.admin == AdminSpec(
        listen="tcp:9200:interface=127.0.0.1",
        token_file="/etc/netsupervisor/token",
        ready_share=0.5,
    )
    defaultBackoff = BackoffSpec(
        initial=0.5, multiplier=2.0, max=30.0, jitter="equal", reset_after=20.0
    )
    defaultOptions = {"lines_are_liveness": False, "max_line_length": 1024}
    plain = ConnectionSpec(
        name="plain",
        endpoint="tcp:host=127.0.0.1:port=7001",
        protocol="line",
        connect_timeout=5.0,
        drain_timeout=0.0,
        backoff=defaultBackoff,
        heartbeat=HeartbeatSpec(interval=3.0, timeout=1.5, misses=3),
        max_retries=10,
        options=defaultOptions,
    )
    cache = ConnectionSpec(
        name="cache-1",
        endpoint="tls:host=cache.example.com:port=6380",
        protocol="redis",
        connect_timeout=2.5,
        drain_timeout=0.0,
        backoff=BackoffSpec(
            initial=0.5, multiplier=2.0, max=60.0, jitter="decorrelated", reset_after=20.0
        ),
        heartbeat=HeartbeatSpec(interval=1.0, timeout=1.5, misses=3),
        max_retries=0,
        labels={"group": "cache", "zone": "b"},
        options={"lines_are_liveness": False, "max_line_length": 4096, "greeting": "hello"},
    )
    local = ConnectionSpec(
        name="sock.local:1",
        endpoint="unix:path=/run/peer.sock",
        protocol="line",
        connect_timeout=5.0,
        drain_timeout=0.0,
        backoff=defaultBackoff,
        heartbeat=HeartbeatSpec(interval=0.0, timeout=1.5, misses=3),
        max_retries=10,
        labels={"group": "local"},
        options=defaultOptions,
    )
    assert config.connections == (plain, cache, local)
    assert list(config.byName()) == ["plain", "cache-1", "sock.local:1"]
    assert config.byName()["cache-1"] is config.connections[1]
    assert not config.connections[2].heartbeat.enabled
    assert config.connections[1].group == "cache"


def test_optionValuesKeepTheirTypes() -> None:
    spec = parse(CONN + 'options = { a = "s", b = 2, c = 2.5, d = true }').connections[0]
    assert dict(spec.options) == {"a": "s", "b": 2, "c": 2.5, "d": True}
    assert isinstance(dict(spec.options)["d"], bool)


def test_demoFileLoads() -> None:
    config = loadConfig(str(ROOT / "examples" / "demo.toml"))
    assert config.admin.listen == "tcp:9100:interface=127.0.0.1"
    assert list(config.byName()) == ["demo-1", "demo-2", "demo-3"]
    for spec in config.connections:
        assert spec.protocol == "line"
        assert spec.endpoint == "tcp:host=127.0.0.1:port=7001"
        assert spec.group == "demo"
        assert spec.heartbeat == HeartbeatSpec(interval=2.0, timeout=1.0, misses=2)
        assert (spec.backoff.initial, spec.backoff.max) == (0.5, 10.0)


def test_theReferenceExamplesLoad() -> None:
    """
    Every TOML block of docs/configuration.md is a valid file; the first one,
    which spells out every default, gives the built-in defaults.
    """
    reference = (ROOT / "docs" / "configuration.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", reference, re.DOTALL)
    assert len(blocks) >= 2
    configs = [parse(block) for block in blocks]
    assert configs[0].admin == AdminSpec()
    assert configs[0].connections == (
        ConnectionSpec(
            name="cache-1",
            endpoint="tcp:host=127.0.0.1:port=6379",
            protocol="redis",
            labels={"group": "cache"},
        ),
    )


# What a reload relies on

RELOADABLE = (HERE / "configs" / "full.toml").read_text()


def test_equalFilesGiveEqualConfigs(tmp_path: Path) -> None:
    first = parseConfig(RELOADABLE, "a.toml", protocols=KNOWN)
    second = parseConfig(RELOADABLE, "a.toml", protocols=KNOWN)
    elsewhere = parseConfig(RELOADABLE, "b.toml", protocols=KNOWN)
    assert first == second == elsewhere
    assert hash(first) == hash(second)
    assert first.byName() == second.byName()
    assert {hash(spec) for spec in first.connections} == {hash(s) for s in second.connections}


def test_insignificantChangesGiveEqualConfigs() -> None:
    """
    Comments, spelling 5 as 5.0, inline versus sub-tables and the order of
    keys do not change the specs.
    """
    first = parse(CONN + "connect_timeout = 5\nheartbeat = { misses = 3, interval = 1 }\n")
    second = parse(
        '# a comment\n[[connection]]\nendpoint = "tcp:host=127.0.0.1:port=1"\n'
        'connect_timeout = 5.0\nname = "c"\n[connection.heartbeat]\ninterval = 1.0\nmisses = 3\n'
    )
    assert first == second


def test_changingOneConnectionChangesExactlyThatSpec() -> None:
    before = parse(RELOADABLE).byName()
    text = RELOADABLE.replace("heartbeat = { interval = 1 }", "heartbeat = { interval = 2 }")
    assert text != RELOADABLE
    after = parse(text).byName()
    assert before.keys() == after.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"cache-1"}
    assert after["cache-1"].heartbeat.interval == 2.0


def test_changingADefaultChangesEveryConnectionThatInheritsIt() -> None:
    before = parse(RELOADABLE).byName()
    after = parse(RELOADABLE.replace("max_retries = 10", "max_retries = 11")).byName()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"plain", "sock.local:1"}


def test_changingTheAdminLeavesTheConnectionsEqual() -> None:
    before = parse(RELOADABLE)
    after = parse(RELOADABLE.replace("ready_share = 0.5", "ready_share = 0.75"))
    assert before != after
    assert before.connections == after.connections


def test_noGlobalReactor() -> None:
    """
    Importing and using the loader does not install the global reactor.
    """
    code = (
        "import sys; from supervisor.config import parseConfig; "
        "parseConfig('[[connection]]\\nname=\"a\"\\nendpoint=\"tls:h:1\"', 'x'); "
        "print('twisted.internet.reactor' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


def test_importingTheLibraryLeavesTheTestingReactorOut() -> None:
    """
    The loader checks endpoint strings on a private parsing-only reactor:
    C{import supervisor} does not import C{twisted.internet.testing}.
    """
    code = "import supervisor, sys; assert 'twisted.internet.testing' not in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


# Rules stated once, on the spec classes


def test_theKeysOfEveryTableAreTheFieldsOfItsSpecClass() -> None:
    """
    The loader derives its keys from the spec classes: a field added to one
    of them is a key of the file, in the place of its field.
    """
    per = ("name", "endpoint", "endpoints", "labels")
    connectionKeys = [f.name for f in attrs.fields(ConnectionSpec)]
    defaultsKeys = [k for k in connectionKeys if k not in per]

    def allowed(text: str) -> str:
        return refused(text).problem.partition("expected one of ")[2].partition(", got")[0]

    assert allowed("[defaults]\nnope = 1") == ", ".join(defaultsKeys)
    assert allowed(CONN + "nope = 1") == ", ".join(connectionKeys)
    assert allowed("[admin]\nnope = 1") == ", ".join(f.name for f in attrs.fields(AdminSpec))
    for table, cls in (("backoff", BackoffSpec), ("heartbeat", HeartbeatSpec)):
        expected = ", ".join(f.name for f in attrs.fields(cls))
        assert allowed(f"[defaults.{table}]\nnope = 1") == expected
        assert allowed(CONN + f"{table}.nope = 1") == expected


def test_aTopLevelKeyInANestedTable() -> None:
    error = refused("[defaults.heartbeat]\ninterval = 1\nconnection = []")
    assertRefusal(
        error,
        "defaults.heartbeat.connection",
        "one of interval, timeout, misses",
        '"connection", which belongs at the top level',
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: HeartbeatSpec(misses=0), "misses: expected an integer >= 1, got 0"),
        (lambda: BackoffSpec(jitter="Full"), "jitter: expected one of none, full, equal"),  # type: ignore[arg-type]
        (
            lambda: BackoffSpec(initial=5.0, max=2.0),
            "max: expected a number >= backoff.initial (5.0), got 2.0",
        ),
        (
            lambda: ConnectionSpec(name="a b", endpoint="tcp:h:1"),
            'name: expected a string matching [A-Za-z0-9_.:-]+, got "a b"',
        ),
        (lambda: AdminSpec(ready_share=2), "ready_share: expected a number from 0 to 1, got 2"),
    ],
)
def test_specsBuiltInCodeKeepTheFileRules(build: Callable[[], object], message: str) -> None:
    """
    A spec built in code is refused as the file's key would be (a
    C{ValueError}).
    """
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value).startswith(message)


# Plugin options


@attrs.frozen
class Limits:
    size: int = setting(8, Integer(1))
    mode: str = setting("fast", Choice(("fast", "slow")))

    def __attrs_post_init__(self) -> None:
        if self.mode == "slow" and self.size > 4:
            raise ValueError("size must be <= 4 when mode is slow")


@implementer(IProtocolPlugin, IConfigurable)
class CheckingPlugin:
    """
    A plugin that checks its options, as the bundled ones do.
    """

    name = "checking"

    def __init__(self, failure: Exception | None = None) -> None:
        self.parsed: list[dict[str, object]] = []
        self.failure = failure

    def parseOptions(self, options: Mapping[str, object]) -> Limits:
        self.parsed.append(dict(options))
        if self.failure is not None:
            raise self.failure
        return structure(Limits, options)

    def buildProtocol(self, handle: IConnectionHandle, options: Any) -> ISupervisedProtocol:
        raise NotImplementedError("not connected in these tests")


@implementer(IProtocolPlugin)
class PlainPlugin:
    name = "line"

    def buildProtocol(self, handle: IConnectionHandle, options: Any) -> ISupervisedProtocol:
        raise NotImplementedError("not connected in these tests")


CHECKED = CONN + 'protocol = "checking"\n'


def plugins(checking: CheckingPlugin | None = None) -> dict[str, IProtocolPlugin]:
    return {"checking": checking or CheckingPlugin(), "line": PlainPlugin()}


@pytest.mark.parametrize(
    ("text", "keyPath", "problem"),
    [
        (
            CHECKED + 'options = { size = "abc" }',
            "connection[0].options.size",
            'expected an integer >= 1, got the string "abc"',
        ),
        (
            "[defaults]\noptions = { size = 0 }\n" + CHECKED,
            "connection[0].options.size",
            "expected an integer >= 1, got 0",
        ),
        (
            CHECKED + "options = { szie = 2 }",
            "connection[0].options.szie",
            'expected one of size, mode, got an unknown key (did you mean "size"?)',
        ),
        (
            CHECKED + 'options = { "odd key" = 2 }',
            'connection[0].options."odd key"',
            "expected one of size, mode, got an unknown key",
        ),
        (
            CHECKED + 'options = { mode = "slow" }',
            "connection[0].options",
            "size must be <= 4 when mode is slow",
        ),
    ],
)
def test_aPluginRefusesAnOptionAtItsKeyPath(text: str, keyPath: str, problem: str) -> None:
    error = refused(text, plugins())
    assert (error.keyPath, error.problem) == (keyPath, problem)
    assert str(error) == f"{FILE}: {keyPath}: {problem}"


def test_aPluginGetsTheMergedOptions() -> None:
    plugin = CheckingPlugin()
    text = '[defaults]\noptions = { size = 2, mode = "slow" }\n' + CHECKED + "options.size = 3\n"
    assert parse(text, plugins(plugin)).connections[0].options == (("mode", "slow"), ("size", 3))
    assert plugin.parsed == [{"mode": "slow", "size": 3}]


def test_aPluginThatFailsOtherwiseRefusesTheFileWithoutItsMessage() -> None:
    error = refused(
        CHECKED + 'options = { password = "hunter2" }',
        plugins(CheckingPlugin(KeyError("hunter2"))),
    )
    assert error.keyPath == "connection[0].options"
    assert error.problem == (
        'expected options the "checking" plugin accepts, got an error from its check (KeyError)'
    )


def test_pluginNamesAloneCheckNoOptions() -> None:
    spec = parse(CHECKED + 'options = { size = "abc" }', ("checking",)).connections[0]
    assert spec.options == (("size", "abc"),)


def test_aPluginWithoutIConfigurableIsNotAsked() -> None:
    spec = parse(CONN + 'options = { size = "abc" }', plugins()).connections[0]
    assert spec.protocol == "line"


def test_equalOptionsAreCheckedOncePerLoadTypesApart() -> None:
    """
    Connections with the same options (most inherit them) cost one check;
    C{1} and C{true}, equal in Python, are not the same option.
    """
    plugin = CheckingPlugin()
    same = "".join(CHECKED.replace('"c"', f'"c{i}"') + "options = { size = 1 }\n" for i in range(3))
    parse(same, plugins(plugin))
    assert plugin.parsed == [{"size": 1}]
    error = refused(same + CHECKED.replace('"c"', '"d"') + "options = { size = true }\n", plugins())
    assert error.keyPath == "connection[3].options.size"
    assert error.problem == "expected an integer >= 1, got the boolean true"


def test_theInstalledPluginsCheckTheirOptionsByDefault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("supervisor.plugin.availablePlugins", plugins)
    error = refused(CHECKED + "options = { size = 0 }", protocols=None)
    assert error.keyPath == "connection[0].options.size"


def test_aReloadWithABadPluginOptionKeepsTheRunningConfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noLoggedErrors: list[dict[str, object]]
) -> None:
    """
    C{Daemon.reload} reads the file with the installed plugins: a refused
    option keeps every connection as it runs, logs why and counts a failed
    reload.
    """
    plugin = CheckingPlugin()
    monkeypatch.setattr("supervisor.plugin.availablePlugins", lambda: plugins(plugin))
    path = tmp_path / "netsupervisor.toml"
    path.write_text(CHECKED + "options = { size = 2 }\n")
    options = Options()
    options.parseOptions(["--config", str(path)])
    reactor = MemoryReactorClock()
    daemon = Daemon(options, reactor)
    running = daemon.load()
    daemon.supervisor = Supervisor(running, reactor, plugins=lambda name: plugin)
    before = daemon.supervisor.connection("c")

    path.write_text(CHECKED + 'options = { size = 2, mode = "medium" }\n')
    daemon.reload()
    assert daemon.supervisor.config is running
    assert daemon.supervisor.connection("c") is before
    assert daemon.supervisor.reloads == {"success": 0, "failure": 1}
    [logged] = noLoggedErrors
    assert f"{path}: connection[0].options.mode: expected one of fast, slow" in str(logged["error"])
    noLoggedErrors.clear()

    path.write_text(CHECKED + "options = { size = 3 }\n")
    daemon.reload()
    assert daemon.supervisor.config.connections[0].options == (("size", 3),)
    assert daemon.supervisor.reloads == {"success": 1, "failure": 1}
    assert reactor.getDelayedCalls() == []


# Nothing but ConfigError


def _tomlString(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _tomlValue(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return renderNumber(value)
    if isinstance(value, str):
        return _tomlString(value)
    if isinstance(value, list):
        return "[" + ", ".join(_tomlValue(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_tomlString(k)} = {_tomlValue(v)}" for k, v in value.items()) + "}"


def toToml(document: dict[str, object]) -> str:
    """
    A document as TOML, with inline tables and arrays only.
    """
    return "\n".join(f"{_tomlString(k)} = {_tomlValue(v)}" for k, v in document.items()) + "\n"


BASE: dict[str, object] = {
    "admin": {"listen": "tcp:9100:interface=127.0.0.1", "ready_share": 0.5},
    "defaults": {
        "protocol": "line",
        "backoff": {"initial": 1.0, "max": 10.0},
        "heartbeat": {"interval": 1.0},
        "options": {"x": 1},
    },
    "connection": [
        {"name": "a", "endpoint": "tcp:host=127.0.0.1:port=1", "labels": {"group": "g"}},
        {"name": "b", "endpoint": "unix:path=/x", "backoff": {"jitter": "none"}},
    ],
}
PLACES: list[tuple[str | int, ...]] = [
    ("admin",),
    ("admin", "listen"),
    ("admin", "token_file"),
    ("admin", "ready_share"),
    ("defaults",),
    ("defaults", "protocol"),
    ("defaults", "connect_timeout"),
    ("defaults", "drain_timeout"),
    ("defaults", "max_retries"),
    ("defaults", "backoff"),
    ("defaults", "backoff", "initial"),
    ("defaults", "backoff", "multiplier"),
    ("defaults", "backoff", "max"),
    ("defaults", "backoff", "jitter"),
    ("defaults", "backoff", "reset_after"),
    ("defaults", "heartbeat", "interval"),
    ("defaults", "heartbeat", "timeout"),
    ("defaults", "heartbeat", "misses"),
    ("defaults", "options"),
    ("defaults", "options", "y"),
    ("connection",),
    ("connection", 0),
    ("connection", 0, "name"),
    ("connection", 1, "name"),
    ("connection", 0, "endpoint"),
    ("connection", 0, "protocol"),
    ("connection", 1, "max_retries"),
    ("connection", 1, "connect_timeout"),
    ("connection", 0, "labels"),
    ("connection", 0, "labels", "group"),
    ("connection", 1, "options"),
    ("connection", 1, "options", "z"),
    ("connection", 1, "backoff", "max"),
    ("connection", 1, "heartbeat"),
    ("connection", 1, "heartbeat", "misses"),
]

jsonLike = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(st.characters(codec="utf-8"), max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _place(document: dict[str, object], where: tuple[str | int, ...], value: object) -> None:
    container: object = document
    for step in where[:-1]:
        if isinstance(container, dict) and isinstance(step, str):
            container = container.setdefault(step, {})
        elif isinstance(container, list) and isinstance(step, int) and step < len(container):
            container = container[step]
        else:
            return
    last = where[-1]
    if isinstance(container, dict) and isinstance(last, str):
        container[last] = value
    elif isinstance(container, list) and isinstance(last, int):
        container[last % len(container)] = value


def assertConfigOrConfigError(text: str) -> None:
    try:
        config = parseConfig(text, "fuzz.toml", protocols=KNOWN)
    except ConfigError as e:
        assertOneLine(e, "fuzz.toml")
    else:
        assert isinstance(config, Config)
        assert all(isinstance(spec, ConnectionSpec) for spec in config.connections)


@given(
    where=st.sampled_from(PLACES)
    | st.tuples(st.sampled_from(PLACES), st.text(max_size=6)).map(lambda t: (*t[0], t[1])),
    value=jsonLike,
)
def test_anyValueAnywhereIsAConfigOrAConfigError(
    where: tuple[str | int, ...], value: object
) -> None:
    document = copy.deepcopy(BASE)
    _place(document, where, value)
    assertConfigOrConfigError(toToml(document))


FRAGMENTS = [
    *(HERE / "configs" / "full.toml").read_text().splitlines(),
    "[admin]",
    "[defaults]",
    "[[connection]]",
    "[connection]",
    "[[connection.labels]]",
    "backoff.max = 0",
    "heartbeat = {",
    'name = "x"',
    'endpoint = "tcp:',
    "ready_share = nan",
    "misses = 1.5",
    "x = 1979-05-27T07:32:00Z",
    '"""',
    "'''",
    "= =",
]


@given(
    st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("\n".join)
    | st.text(st.sampled_from(list("[]{}=.\"',#\n \t-_:019abcdefilmnorstx+")), max_size=80)
    | st.text(max_size=80)
)
def test_anyTextIsAConfigOrAConfigError(text: str) -> None:
    assertConfigOrConfigError(text)
