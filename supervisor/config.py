"""
The configuration file: TOML in, frozen specs out.

L{loadConfig} reads a file and L{parseConfig} reads its text; both return a
L{Config} or raise L{ConfigError}, whose one-line message names the file, the
key path (C{connection[3].heartbeat.timeout}, 0-based) and what was expected.
Every problem in a file becomes a L{ConfigError}, never another exception.

C{[defaults]} merge into every C{[[connection]]}: scalars are replaced, and
the C{backoff}, C{heartbeat} and C{options} tables are merged key by key.
Keys set nowhere take the defaults of the spec classes.

Two equal files give equal L{Config}s and, connection by connection, equal
L{ConnectionSpec}s: a reload compares those.
"""

from __future__ import annotations

import codecs
import difflib
import math
import re
import tomllib
from collections.abc import Collection, Mapping
from datetime import date, datetime, time
from typing import Any, NoReturn

import attrs
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.testing import MemoryReactor

from supervisor.shard import Shard, ShardError
from supervisor.spec import NAME_PATTERN, PATH_SEGMENTS, BackoffSpec, ConnectionSpec, HeartbeatSpec

__all__ = ["AdminSpec", "Config", "ConfigError", "loadConfig", "parseConfig"]


def _shareInRange(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value!r}")


@attrs.frozen
class AdminSpec:
    """
    The admin HTTP listener.

    @ivar listen: a Twisted server endpoint string.
    @ivar token_file: a file holding the bearer token that mutating admin
        calls need; C{""} for none. Used as given: a relative path is
        relative to the process's working directory.
    @ivar ready_share: C{/readyz} answers 200 only when at least this share
        (0 to 1) of the connections are ESTABLISHED.
    @ivar max_clients: the most admin connections open at once; past it a
        new one is closed at once.
    """

    listen: str = "tcp:9100:interface=127.0.0.1"
    token_file: str = ""
    ready_share: float = attrs.field(default=0.0, validator=_shareInRange)
    max_clients: int = attrs.field(default=64, validator=attrs.validators.ge(1))


@attrs.frozen
class Config:
    """
    A whole configuration file.

    @ivar path: the file it was read from. It is not part of equality: two
        files with the same content give equal configs.
    @ivar admin: the admin listener.
    @ivar connections: the supervised connections, in file order.
    @ivar shard: C{[supervisor] shard}, the share of the connections a
        process keeps, if set. C{twistd netsupervisor} applies it (its
        C{--shard} wins); a library passes it to L{Supervisor}.
    """

    path: str = attrs.field(eq=False)
    admin: AdminSpec
    connections: tuple[ConnectionSpec, ...]
    shard: Shard | None = None

    def byName(self) -> dict[str, ConnectionSpec]:
        """
        The connections by name, in file order.
        """
        return {spec.name: spec for spec in self.connections}


_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _escape(text: str) -> str:
    """
    C{text} with every non-printable character escaped, so that it stays on
    one line.
    """
    out = []
    for ch in text:
        if ch.isprintable() and ch not in _LINE_BREAKS:
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


class ConfigError(Exception):
    """
    A configuration file was refused.

    C{str()} is one line: C{<file>: <key path>: expected <what>, got <what>};
    for a TOML syntax error C{<file>: line N, column M: <message>}; for a file
    that cannot be read C{<file>: cannot read: <reason>}.

    @ivar path: the file.
    @ivar keyPath: where in the file, like C{connection[3].heartbeat.timeout}
        (0-based index into the C{[[connection]]} array); C{""} for syntax
        errors and unreadable files.
    @ivar problem: what was expected and what was found (or the parser's
        message, or the reason the file cannot be read).
    @ivar line: the 1-based line of a syntax error, else L{None}.
    @ivar column: the 1-based column of a syntax error, else L{None}.
    """

    def __init__(
        self,
        path: str,
        keyPath: str,
        problem: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.keyPath = keyPath
        self.problem = problem
        self.line = line
        self.column = column
        if line is not None:
            where = f"line {line}, column {column}: "
        elif keyPath:
            where = f"{keyPath}: "
        else:
            where = ""
        super().__init__(_escape(f"{path}: {where}{problem}"))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCHEME = re.compile(r"[A-Za-z0-9_+.-]{1,32}")
_SHOWN = 60


def _quote(text: str) -> str:
    """
    C{text} as a short, one-line, double-quoted string.
    """
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "..."
    return '"' + _escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _child(keyPath: str, key: str) -> str:
    rendered = key if _BARE_KEY.fullmatch(key) else _quote(key)
    return f"{keyPath}.{rendered}" if keyPath else rendered


def _number(value: float) -> str:
    """
    A number as TOML spells it.
    """
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    try:
        text = str(value)
    except ValueError:
        return "a very long integer"
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _describe(value: object) -> str:
    """
    What was found, for a value of the wrong type. Tables and arrays are not
    shown: they could hold secrets.
    """
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {_number(value)}"
    if isinstance(value, float):
        return f"the float {_number(value)}"
    if isinstance(value, str):
        return f"the string {_quote(value)}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, date | time | datetime):
        return "a date/time"
    return f"a {type(value).__name__}"


@attrs.frozen
class _Number:
    """
    A float key: an int is accepted, a bool is not; finite, within range.
    """

    low: float
    strict: bool = False
    high: float | None = None

    def expected(self) -> str:
        if self.high is not None:
            return f"a number from {_number(self.low)} to {_number(self.high)}"
        return f"a number {'>' if self.strict else '>='} {_number(self.low)}"

    def check(self, checker: _Checker, value: object, keyPath: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            checker.fail(keyPath, f"expected {self.expected()}, got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            checker.fail(keyPath, f"expected {self.expected()}, got {_describe(value)}")
        inRange = (number > self.low if self.strict else number >= self.low) and (
            self.high is None or number <= self.high
        )
        if not (math.isfinite(number) and inRange):
            checker.fail(keyPath, f"expected {self.expected()}, got {_number(value)}")
        return number


@attrs.frozen
class _Integer:
    """
    An int key: neither a bool nor a float is accepted.
    """

    low: int

    def check(self, checker: _Checker, value: object, keyPath: str) -> int:
        expected = f"an integer >= {self.low}"
        if isinstance(value, bool) or not isinstance(value, int):
            checker.fail(keyPath, f"expected {expected}, got {_describe(value)}")
        if value < self.low:
            checker.fail(keyPath, f"expected {expected}, got {_number(value)}")
        return value


@attrs.frozen
class _Choice:
    """
    A string key with a fixed set of values.
    """

    choices: tuple[str, ...]

    def check(self, checker: _Checker, value: object, keyPath: str) -> str:
        expected = f"one of {', '.join(self.choices)}"
        if not isinstance(value, str):
            checker.fail(keyPath, f"expected {expected}, got {_describe(value)}")
        if value not in self.choices:
            checker.fail(keyPath, f"expected {expected}, got {_quote(value)}")
        return value


_Field = _Number | _Integer | _Choice

_BACKOFF_FIELDS: dict[str, _Field] = {
    "initial": _Number(0, strict=True),
    "multiplier": _Number(1),
    "max": _Number(0, strict=True),
    "jitter": _Choice(("none", "full", "equal", "decorrelated")),
    "reset_after": _Number(0),
}
_HEARTBEAT_FIELDS: dict[str, _Field] = {
    "interval": _Number(0),
    "timeout": _Number(0, strict=True),
    "misses": _Integer(1),
}
_SCALAR_FIELDS: dict[str, _Field] = {
    "connect_timeout": _Number(0, strict=True),
    "drain_timeout": _Number(0),
    "max_retries": _Integer(0),
}
_TOP_KEYS = ("admin", "defaults", "connection", "supervisor")
_SUPERVISOR_KEYS = ("shard",)
_ADMIN_KEYS = ("listen", "token_file", "ready_share", "max_clients")
_DEFAULTS_KEYS = (
    "protocol",
    "connect_timeout",
    "drain_timeout",
    "backoff",
    "heartbeat",
    "max_retries",
    "options",
)
_PER_CONNECTION_KEYS = ("name", "endpoint", "labels")
_CONNECTION_KEYS = ("name", "endpoint", *_DEFAULTS_KEYS, "labels")
_BUILTIN_BACKOFF = BackoffSpec()
_BUILTIN_PROTOCOL = str(attrs.fields(ConnectionSpec).protocol.default)
_NAME_EXPECTED = "a string matching [A-Za-z0-9_.:-]+"
_ENDPOINT_EXPECTED = "a Twisted client endpoint string (tcp:, tls:, unix:)"

# Client endpoint strings Twisted has accepted before. Parsing one costs
# about 50 us, which a reload of ten thousand entries (most unchanged) pays
# again for each: remembering them keeps a reload well under a second. Only
# schemes whose parsing reads no file are remembered (a tls: string may name
# a certificate that is gone by the next reload).
_acceptedEndpoints: set[str] = set()
_MEMOISED_SCHEMES = ("tcp:", "unix:")
_MEMO_LIMIT = 100_000
_LISTEN_EXPECTED = "a Twisted server endpoint string (like tcp:9100:interface=127.0.0.1)"


@attrs.define
class _Layer:
    """
    The validated keys of one C{[defaults]} table or one C{[[connection]]}
    entry; L{None} or empty where the key was not set.
    """

    name: str | None = None
    endpoint: str | None = None
    protocol: str | None = None
    scalars: dict[str, Any] = attrs.Factory(dict)
    backoff: dict[str, Any] = attrs.Factory(dict)
    heartbeat: dict[str, Any] = attrs.Factory(dict)
    options: dict[str, str | int | float | bool] = attrs.Factory(dict)
    labels: dict[str, str] = attrs.Factory(dict)


def _refusal(kind: str, text: str, reason: Exception) -> str:
    """
    Why Twisted refused an endpoint string, without echoing the string: it
    may hold a password. Only its type (the part before the first C{:}) is
    shown.
    """
    scheme, colon, _ = text.partition(":")
    if not colon:
        return "a string without an endpoint type (no ':')"
    if not _SCHEME.fullmatch(scheme):
        return "a string whose endpoint type is not a plain word"
    shown = _quote(scheme + ":...")
    if isinstance(reason, ValueError) and str(reason).startswith("Unknown endpoint type"):
        return f"{shown}, an unknown {kind} endpoint type"
    if isinstance(reason, TypeError):
        why = "missing or unexpected parameters"
    elif isinstance(reason, OSError):
        why = "a file it names cannot be read"
    elif isinstance(reason, ValueError):
        why = "a parameter has an invalid value"
    else:
        why = type(reason).__name__
    return f"{shown} (not shown in full), which Twisted refuses: {why}"


class _Checker:
    """
    Validates one parsed document, failing with the file's path.
    """

    def __init__(self, path: str, protocols: Collection[str]) -> None:
        self.path = path
        self.protocols = protocols

    def fail(self, keyPath: str, problem: str) -> NoReturn:
        raise ConfigError(self.path, keyPath, problem)

    def table(self, value: object, keyPath: str) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            self.fail(keyPath, f"expected a table, got {_describe(value)}")
        return value

    def unknownKey(self, keyPath: str, key: str, allowed: Collection[str]) -> NoReturn:
        if keyPath and key in _TOP_KEYS:
            # Usually a key written after a [table] header meant for the top level.
            found = f"{_quote(key)}, which belongs at the top level, before any [table] header"
        elif keyPath == "defaults" and key in _PER_CONNECTION_KEYS:
            found = f"{_quote(key)}, which is set per [[connection]], not in [defaults]"
        else:
            found = "an unknown key"
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                found += f" (did you mean {_quote(close[0])}?)"
        self.fail(_child(keyPath, key), f"expected one of {', '.join(allowed)}, got {found}")

    def string(self, value: object, keyPath: str, expected: str) -> str:
        if not isinstance(value, str):
            self.fail(keyPath, f"expected {expected}, got {_describe(value)}")
        return value

    def knownProtocols(self) -> str:
        return ", ".join(sorted(self.protocols)) or "none installed"

    def protocol(self, value: object, keyPath: str) -> str:
        expected = f"one of the known protocols ({self.knownProtocols()})"
        name = self.string(value, keyPath, expected)
        if name not in self.protocols:
            self.fail(keyPath, f"expected {expected}, got {_quote(name)}")
        return name

    def fields(self, value: object, keyPath: str, fields: Mapping[str, _Field]) -> dict[str, Any]:
        table = self.table(value, keyPath)
        checked: dict[str, Any] = {}
        for key, item in table.items():
            if key not in fields:
                self.unknownKey(keyPath, key, tuple(fields))
            checked[key] = fields[key].check(self, item, _child(keyPath, key))
        return checked

    def options(self, value: object, keyPath: str) -> dict[str, str | int | float | bool]:
        table = self.table(value, keyPath)
        checked: dict[str, str | int | float | bool] = {}
        for key, item in table.items():
            itemPath = _child(keyPath, key)
            expected = "a string, an integer, a finite float or a boolean"
            if not isinstance(item, str | int | float):
                self.fail(itemPath, f"expected {expected}, got {_describe(item)}")
            if isinstance(item, float) and not math.isfinite(item):
                self.fail(itemPath, f"expected {expected}, got {_number(item)}")
            checked[key] = item
        return checked

    def labels(self, value: object, keyPath: str) -> dict[str, str]:
        table = self.table(value, keyPath)
        checked: dict[str, str] = {}
        for key, item in table.items():
            itemPath = _child(keyPath, key)
            if not _LABEL_KEY.fullmatch(key) or key.startswith("__"):
                self.fail(
                    itemPath,
                    "expected a label name matching [A-Za-z_][A-Za-z0-9_]* and not "
                    f"starting with __, got {_quote(key)}",
                )
            checked[key] = self.string(item, itemPath, "a string")
        return checked

    def name(self, value: object, keyPath: str) -> str:
        name = self.string(value, keyPath, _NAME_EXPECTED)
        if not NAME_PATTERN.fullmatch(name):
            self.fail(keyPath, f"expected {_NAME_EXPECTED}, got {_quote(name)}")
        if name in PATH_SEGMENTS:
            self.fail(keyPath, f"expected {_NAME_EXPECTED} other than . and .., got {_quote(name)}")
        return name

    def endpoint(self, value: object, keyPath: str) -> str:
        text = self.string(value, keyPath, _ENDPOINT_EXPECTED)
        if text in _acceptedEndpoints:
            return text
        try:
            clientFromString(MemoryReactor(), text)  # type: ignore[no-untyped-call]
        except Exception as e:
            self.fail(keyPath, f"expected {_ENDPOINT_EXPECTED}, got {_refusal('client', text, e)}")
        if text.startswith(_MEMOISED_SCHEMES) and len(_acceptedEndpoints) < _MEMO_LIMIT:
            _acceptedEndpoints.add(text)
        return text

    def listen(self, value: object, keyPath: str) -> str:
        text = self.string(value, keyPath, _LISTEN_EXPECTED)
        try:
            serverFromString(MemoryReactor(), text)  # type: ignore[no-untyped-call]
        except Exception as e:
            self.fail(keyPath, f"expected {_LISTEN_EXPECTED}, got {_refusal('server', text, e)}")
        return text

    def layer(self, value: object, keyPath: str, allowed: tuple[str, ...]) -> _Layer:
        """
        Check the keys of C{[defaults]} or of one C{[[connection]]} entry,
        each on its own.
        """
        table = self.table(value, keyPath)
        layer = _Layer()
        for key, item in table.items():
            itemPath = _child(keyPath, key)
            if key not in allowed:
                self.unknownKey(keyPath, key, allowed)
            if key == "name":
                layer.name = self.name(item, itemPath)
            elif key == "endpoint":
                layer.endpoint = self.endpoint(item, itemPath)
            elif key == "protocol":
                layer.protocol = self.protocol(item, itemPath)
            elif key == "backoff":
                layer.backoff = self.fields(item, itemPath, _BACKOFF_FIELDS)
            elif key == "heartbeat":
                layer.heartbeat = self.fields(item, itemPath, _HEARTBEAT_FIELDS)
            elif key == "options":
                layer.options = self.options(item, itemPath)
            elif key == "labels":
                layer.labels = self.labels(item, itemPath)
            else:
                layer.scalars[key] = _SCALAR_FIELDS[key].check(self, item, itemPath)
        return layer

    def backoffOrder(self, own: Mapping[str, Any], inherited: Mapping[str, Any], at: str) -> None:
        """
        C{max >= initial} once C{own} is merged over C{inherited}; the
        problem is reported where C{own} set one of the two.
        """
        merged = {**inherited, **own}
        initial = merged.get("initial", _BUILTIN_BACKOFF.initial)
        maximum = merged.get("max", _BUILTIN_BACKOFF.max)
        if maximum >= initial:
            return
        if "max" in own:
            self.fail(
                _child(at, "max"),
                f"expected a number >= backoff.initial ({_number(initial)}), "
                f"got {_number(maximum)}",
            )
        self.fail(
            _child(at, "initial"),
            f"expected a number <= backoff.max ({_number(maximum)}), got {_number(initial)}",
        )

    def admin(self, value: object) -> AdminSpec:
        table = self.table(value, "admin")
        checked: dict[str, Any] = {}
        for key, item in table.items():
            itemPath = _child("admin", key)
            if key == "listen":
                checked[key] = self.listen(item, itemPath)
            elif key == "token_file":
                checked[key] = self.string(item, itemPath, "a string (a file path, or empty)")
            elif key == "ready_share":
                checked[key] = _Number(0, high=1).check(self, item, itemPath)
            elif key == "max_clients":
                checked[key] = _Integer(1).check(self, item, itemPath)
            else:
                self.unknownKey("admin", key, _ADMIN_KEYS)
        return AdminSpec(**checked)

    def supervisor(self, value: object) -> Shard | None:
        table = self.table(value, "supervisor")
        shard = None
        for key, item in table.items():
            if key != "shard":
                self.unknownKey("supervisor", key, _SUPERVISOR_KEYS)
            text = self.string(item, "supervisor.shard", 'a string I/N (like "0/4")')
            try:
                shard = Shard.fromString(text)
            except ShardError as e:
                self.fail("supervisor.shard", str(e))
        return shard

    def connection(self, own: _Layer, defaults: _Layer, at: str) -> ConnectionSpec:
        """
        Merge one validated entry over the defaults and build its spec.
        """
        if own.name is None:
            self.fail(_child(at, "name"), f"expected {_NAME_EXPECTED}, got nothing (missing)")
        if own.endpoint is None:
            self.fail(
                _child(at, "endpoint"), f"expected {_ENDPOINT_EXPECTED}, got nothing (missing)"
            )
        protocol = own.protocol or defaults.protocol or _BUILTIN_PROTOCOL
        if protocol not in self.protocols:
            self.fail(
                _child(at, "protocol"),
                f"expected one of the known protocols ({self.knownProtocols()}), got nothing "
                f"here or in [defaults], and the built-in default {_quote(protocol)} is not "
                "installed",
            )
        self.backoffOrder(own.backoff, defaults.backoff, _child(at, "backoff"))
        try:
            return ConnectionSpec(
                name=own.name,
                endpoint=own.endpoint,
                protocol=protocol,
                backoff=BackoffSpec(**{**defaults.backoff, **own.backoff}),
                heartbeat=HeartbeatSpec(**{**defaults.heartbeat, **own.heartbeat}),
                labels=own.labels,
                options={**defaults.options, **own.options},
                **{**defaults.scalars, **own.scalars},
            )
        except (TypeError, ValueError) as e:  # pragma: no cover - checked above
            self.fail(at, f"expected a valid connection, got {e}")

    def document(self, document: Mapping[str, object]) -> Config:
        for key in document:
            if key not in _TOP_KEYS:
                self.unknownKey("", key, _TOP_KEYS)
        shard = self.supervisor(document.get("supervisor", {}))
        admin = self.admin(document.get("admin", {}))
        defaults = self.layer(document.get("defaults", {}), "defaults", _DEFAULTS_KEYS)
        self.backoffOrder(defaults.backoff, {}, "defaults.backoff")
        entries = document.get("connection", [])
        if not isinstance(entries, list):
            self.fail(
                "connection",
                f"expected an array of tables ([[connection]]), got {_describe(entries)}",
            )
        specs: list[ConnectionSpec] = []
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            at = f"connection[{index}]"
            spec = self.connection(self.layer(entry, at, _CONNECTION_KEYS), defaults, at)
            if spec.name in seen:
                self.fail(
                    _child(at, "name"),
                    f"expected a unique name, got {_quote(spec.name)}, which "
                    f"connection[{seen[spec.name]}] already has",
                )
            seen[spec.name] = index
            specs.append(spec)
        return Config(path=self.path, admin=admin, connections=tuple(specs), shard=shard)


_SYNTAX_LOCATION = re.compile(r" \(at line (\d+), column (\d+)\)$")
_SYNTAX_AT_END = " (at end of document)"


def _lineAndColumn(text: str, offset: int) -> tuple[int, int]:
    """
    The 1-based line and column of C{text[offset]}.
    """
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def parseConfig(text: str, path: str, *, protocols: Collection[str] | None = None) -> Config:
    """
    Parse and validate the text of a configuration file.

    @param text: the TOML text.
    @param path: the file it came from, for messages and L{Config.path}.
    @param protocols: the protocol names that exist; by default those of
        the installed plugins (L{supervisor.plugin.availablePlugins}).
    @raise ConfigError: for any problem in C{text}.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        located = _SYNTAX_LOCATION.search(message)
        if located:
            line, column = int(located.group(1)), int(located.group(2))
            message = message[: located.start()]
        elif message.endswith(_SYNTAX_AT_END):
            line, column = _lineAndColumn(text, len(text))
            message = message[: -len(_SYNTAX_AT_END)]
        else:  # pragma: no cover - tomllib always says where
            raise ConfigError(path, "", f"cannot parse: {message}") from None
        raise ConfigError(path, "", message, line=line, column=column) from None
    except RecursionError:
        raise ConfigError(path, "", "cannot parse: nested too deeply") from None
    except ValueError as e:
        # Such as an integer beyond Python's int/str conversion limit.
        raise ConfigError(path, "", f"cannot parse: {e}") from None
    if protocols is None:
        from supervisor.plugin import availablePlugins

        protocols = availablePlugins().keys()
    return _Checker(path, protocols).document(document)


def loadConfig(path: str, *, protocols: Collection[str] | None = None) -> Config:
    """
    Read, parse and validate a configuration file (UTF-8, an optional BOM
    is skipped).

    @param path: the file.
    @param protocols: as for L{parseConfig}.
    @raise ConfigError: if the file cannot be read or has any problem.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror or type(e).__name__}") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        good = data[: e.start].decode("utf-8")
        line, column = _lineAndColumn(good, len(good))
        raise ConfigError(path, "", "invalid UTF-8", line=line, column=column) from None
    return parseConfig(text, path, protocols=protocols)
