# mypy: disallow-untyped-calls=False, disallow-untyped-decorators=False
"""
What the bundled plugins share (C{plugins/_support.py}) and the public
helper for answers without a token (L{supervisor.pipeline.Pipeline}).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from plugins._support import (
    BundledPlugin,
    CheckedOptions,
    LineReader,
    Maybe,
    PluginProtocol,
    ProtocolError,
    readSecret,
    redact,
)
from supervisor import OptionError, findPlugin
from supervisor.interfaces import IConfigurable, IDrainable, IFailureClassifier
from supervisor.options import Integer, Text, setting
from supervisor.pipeline import Pipeline
from tests.test_hostile_peers import Handle, chunked

# Pipeline.


def test_aPipelineAnswersOldestFirst() -> None:
    pings: Pipeline[bytes] = Pipeline()
    assert pings.answered() is None  # an answer to nothing sent
    pings.sent(b"1")
    pings.sent(b"2")
    assert (len(pings), list(pings)) == (2, [b"1", b"2"])
    assert pings.answered() == b"1"
    pings.sent(b"3")
    assert [pings.answered(), pings.answered(), pings.answered()] == [b"2", b"3", None]
    assert repr(pings) == "Pipeline([])"


# Secrets.


@pytest.mark.parametrize(
    "content, secret",
    [(b"pw\n", b"pw"), (b"pw\r\n", b"pw"), (b"pw", b"pw"), (b"pw\n\n", b"pw\n"), (b"", b"")],
)
def test_readSecretDropsOneTrailingNewline(tmp_path: Path, content: bytes, secret: bytes) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    assert readSecret(str(path)) == secret


def test_redactRemovesEverySecretAndShortens() -> None:
    assert redact(b"a pw b pw", [b"pw", b""]) == "a *** b ***"
    assert redact(b"\xff ok", []) == "\ufffd ok"
    shortened = redact(b"x" * 500, [])
    assert len(shortened) == 200 and shortened.endswith("...")


def test_aProtocolRejectsOnceWithoutItsSecrets(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cr3t\n")
    handle = Handle()
    protocol = PluginProtocol(handle)
    assert protocol.secretFrom("password_file", str(path)) == b"s3cr3t"
    protocol.reject("the server said: s3cr3t is wrong", permanent=True)
    protocol.reject("a second reason", permanent=False)
    assert handle.rejections == [("the server said: *** is wrong", True)]
    assert protocol.rejected


def test_anUnreadableSecretIsATransientRejectionNamingTheOption(tmp_path: Path) -> None:
    handle = Handle()
    protocol = PluginProtocol(handle)
    missing = tmp_path / "missing"
    assert protocol.secretFrom("token_file", str(missing)) is None
    assert handle.rejections == [
        (f"cannot read token_file {missing}: No such file or directory", False)
    ]


def test_aProtocolWritesToItsTransport() -> None:
    protocol = PluginProtocol(Handle())
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.write(b"hello")
    assert transport.value() == b"hello"


# Options.


@attrs.frozen
class Sample(CheckedOptions):
    size: int = setting(10, Integer(1))
    name: str | None = setting(None, Maybe(Text()))


def test_checkedOptionsFromAMapping() -> None:
    assert Sample.fromMapping({}) == Sample(10, None)
    assert Sample.fromMapping({"size": 3, "name": "x"}) == Sample(3, "x")
    with pytest.raises(OptionError) as raised:
        Sample.fromMapping({"name": 4})
    assert (raised.value.key, raised.value.problem) == (
        "name",
        "expected a string, got the integer 4",
    )
    with pytest.raises(OptionError, match="did you mean"):
        Sample.fromMapping({"sise": 3})


def test_equalOptionsAreParsedOnceAndShared() -> None:
    """
    Connections with equal options share one parsed, frozen value; a value
    of another type that compares equal (C{True == 1}) is checked anew, and
    a value that cannot be hashed is parsed every time.
    """
    plugin = BundledPlugin("sample", Sample, lambda handle, options: PluginProtocol(handle))
    first = plugin.parseOptions({"size": 3})
    assert first == Sample(3, None)
    assert plugin.parseOptions({"size": 3}) is first
    assert plugin.parseOptions({"size": 4}) is not first
    with pytest.raises(OptionError):
        plugin.parseOptions({"size": 3.0})
    line = findPlugin("line")
    assert IConfigurable(line).parseOptions({"lines_are_liveness": True}).lines_are_liveness
    with pytest.raises(OptionError):
        IConfigurable(line).parseOptions({"lines_are_liveness": 1})
    listed = plugin.parseOptions({"size": 3, "name": "x"})
    assert listed == Sample(3, "x")
    with pytest.raises(OptionError):
        plugin.parseOptions({"size": [3]})


def test_theGuidesEchoOptionIsCheckedAtLoad() -> None:
    """
    As docs/plugins/writing.md says of the example plugin.
    """
    from tests.test_docs_example import echo

    with pytest.raises(OptionError) as raised:
        echo.echoPlugin.parseOptions({"greeting": 7})
    assert str(raised.value) == "greeting: expected a greeting, got the integer 7"


# Every bundled plugin's options.


@pytest.mark.parametrize(
    "protocol, key, value, problem",
    [
        ("line", "max_line_length", "abc", 'expected an integer >= 1, got the string "abc"'),
        ("line", "max_line_length", 0, "expected an integer >= 1, got 0"),
        ("line", "lines_are_liveness", "no", "expected a boolean (true or false)"),
        ("line", "greeting", "hi", "expected one of lines_are_liveness, max_line_length"),
        ("int32", "max_frame_length", "lots", "expected an integer from 1 to"),
        ("int32", "max_frame_length", 0, "expected an integer from 1 to"),
        ("int32", "max_frame_length", 1 << 32, "expected an integer from 1 to"),
        ("int32", "ping", "", "expected a non-empty string, got an empty string"),
        ("int32", "pong", 5, "expected a non-empty string, got the integer 5"),
        ("int32", "ready_on_connect", "false", "expected a boolean"),
        ("int32", "nope", 1, "expected one of ping, pong"),
        ("redis", "hello", 4, "expected 0, 2 or 3, got the integer 4"),
        ("redis", "hello", 1, "expected 0, 2 or 3, got the integer 1"),
        ("redis", "hello", "3", 'expected 0, 2 or 3, got the string "3"'),
        ("redis", "max_reply_length", "abc", "expected an integer >= 1"),
        ("redis", "password", "x", "expected one of username, password_file"),
        ("redis", "client_name", 7, "expected a string, got the integer 7"),
        ("nats", "max_line_length", "abc", 'expected an integer >= 1, got the string "abc"'),
        ("nats", "max_line_length", 0, "expected an integer >= 1, got 0"),
        ("nats", "pass", "x", "expected one of user, pass_file"),
        ("nats", "user", True, "expected a string, got the boolean true"),
        ("mqtt", "keep_alive", 70000, "expected an integer from 0 to 65535, got 70000"),
        ("mqtt", "keep_alive", -1, "expected an integer from 0 to 65535, got -1"),
        ("mqtt", "keep_alive", "soon", "expected an integer from 0 to 65535, got the string"),
        ("mqtt", "password_file", "x", "needs a username"),
        ("mqtt", "client_id", "\u20ac" * 30000, "expected at most 65535 bytes in UTF-8"),
        ("mqtt", "max_packet_length", 1 << 30, "expected an integer from 2 to"),
        ("mqtt", "clientid", "x", "expected one of client_id, username, password_file"),
        ("http", "path", "no-slash", 'expected a path starting with / (no spaces), got "no-slash"'),
        ("http", "method", "GE T", 'expected a method name (letters only), got "GE T"'),
        ("http", "expected_status", "abc", "expected a status (200)"),
        ("http", "expected_status", "99", 'expected statuses from 100 to 599, got "99"'),
        ("http", "expected_status", "", "expected a status (200)"),
        ("http", "expected_status", True, "expected a status (200)"),
        ("http", "max_body_length", "1e6", "expected an integer >= 0"),
        ("http", "check_on_connect", "yes", "expected a boolean"),
        ("http", "host", "a b", "expected a host name"),
        ("http", "nope", 1, "expected one of method, path"),
    ],
)
def test_badOptionsAreRefusedWhenParsed(
    protocol: str, key: str, value: object, problem: str
) -> None:
    """
    C{parseOptions} refuses a bad option naming its key (a string where a
    number or a boolean is due, a keep-alive that overflows its 16-bit
    field, an unknown key): the configuration loader refuses the file with
    it, instead of every attempt failing. No file is read meanwhile.
    """
    with pytest.raises(OptionError) as raised:
        findPlugin(protocol).parseOptions({key: value})  # type: ignore[attr-defined]
    assert raised.value.key == key
    assert raised.value.problem.startswith(problem), raised.value.problem


@pytest.mark.parametrize("protocol", ["line", "int32", "redis", "nats", "mqtt", "http"])
def test_everyBundledPluginIsConfigurableAndDeclaresOnlyWhatItDoes(protocol: str) -> None:
    plugin = findPlugin(protocol)
    assert IConfigurable.providedBy(plugin)
    assert not IFailureClassifier.providedBy(plugin)
    protocolClass = plugin.protocol  # type: ignore[attr-defined]
    assert IFailureClassifier.implementedBy(protocolClass) is False
    assert IDrainable.implementedBy(protocolClass) == (protocol != "line")
    assert hasattr(protocolClass, "drain") == (protocol != "line")
    assert not hasattr(protocolClass, "classifyFailure")
    assert not hasattr(plugin, "classifyFailure")


# Lines.


def test_linesAreCutAtTheDelimiterWithoutIt() -> None:
    reader = LineReader(b"\r\n", 8)
    assert list(reader.feed(b"a\r\nbb\r")) == [b"a"]
    assert list(reader.feed(b"\n\r\nc")) == [b"bb", b""]
    assert list(reader.feed(b"\r\n")) == [b"c"]


def test_anUnfinishedLineIsRefusedOnceTooLong() -> None:
    reader = LineReader(b"\r\n", 4)
    assert list(reader.feed(b"abcd\r")) == []  # four bytes and maybe a delimiter
    with pytest.raises(ProtocolError, match="line longer than 4 bytes"):
        list(reader.feed(b"x"))
    with pytest.raises(ProtocolError, match="line longer than 4 bytes"):
        list(LineReader(b"\n", 4).feed(b"abcde\n"))


@given(st.lists(st.binary(max_size=20), max_size=20), st.lists(st.integers(0, 400), max_size=10))
def test_linesDoNotDependOnHowTheyAreSplit(lines: list[bytes], cuts: list[int]) -> None:
    lines = [line.replace(b"\n", b"") for line in lines]
    data = b"".join(line + b"\n" for line in lines)
    reader = LineReader(b"\n", 100)
    got = [line for chunk in chunked(data, cuts) for line in reader.feed(chunk)]
    assert got == lines
