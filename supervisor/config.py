"""
The configuration file: TOML in, frozen specs out.

L{loadConfig} reads a file and L{parseConfig} reads its text; both return a
L{Config} or raise L{ConfigError}, whose one-line message names the file, the
key path (C{connection[3].heartbeat.timeout}, 0-based) and what was expected.
Every problem in a file becomes a L{ConfigError}, never another exception.

What each key accepts is declared once, on the fields of the spec classes
(L{supervisor.options.setting}): the top-level tables are the L{Table} fields
of L{Config}, and the keys of C{[defaults]} and C{[[connection]]} the fields
of L{ConnectionSpec}. The loader adds only what needs its context: Twisted
parses the endpoint strings, the installed plugins name the protocols (and
check their own options, when they provide L{IConfigurable}), and the free
C{options} and C{labels} tables.

C{[defaults]} merge into every C{[[connection]]}: plain keys are replaced,
tables (C{backoff}, C{heartbeat}, C{options}) are merged key by key. Keys
set nowhere take the defaults of the spec classes.

Two equal files give equal L{Config}s and, connection by connection, equal
L{ConnectionSpec}s: a reload compares those.
"""

from __future__ import annotations

import codecs
import math
import re
import tomllib
from collections.abc import Collection, Mapping
from typing import Any, Literal

import attrs
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IHostnameResolver, IReactorPluggableNameResolver
from zope.interface import implementer

from supervisor.interfaces import IConfigurable, IProtocolPlugin, OptionError
from supervisor.options import (
    Check,
    Entries,
    Flag,
    Integer,
    Number,
    SharedTables,
    Table,
    Text,
    checkMapping,
    checkOf,
    child,
    describe,
    escape,
    merge,
    quote,
    refuse,
    renderNumber,
    setting,
    structure,
    unknownKey,
)
from supervisor.plugin import Plugins
from supervisor.shard import Shard
from supervisor.spec import MAX_ENDPOINTS, ConnectionSpec, PoolSpec, SupervisorSpec
from supervisor.tls import MaterialError, TLSMaterial, readMaterial

__all__ = [
    "AdminSpec",
    "Config",
    "ConfigError",
    "MetricsSpec",
    "SupervisorSpec",
    "loadConfig",
    "parseConfig",
]

_LISTEN_EXPECTED = "a Twisted server endpoint string (like tcp:9100:interface=127.0.0.1)"


@attrs.frozen
class AdminSpec:
    """
    The admin HTTP listener.

    @ivar listen: a Twisted server endpoint string (which the loader checks
        with Twisted's parser).
    @ivar token_file: a file holding the bearer token that mutating admin
        calls need; C{""} for none. Used as given: a relative path is
        relative to the process's working directory.
    @ivar ready_share: C{/readyz} answers 200 only when at least this share
        (0 to 1) of the connections are ESTABLISHED.
    """

    listen: str = setting("tcp:9100:interface=127.0.0.1", Text(_LISTEN_EXPECTED))
    token_file: str = setting("", Text("a string (a file path, or empty)"))
    ready_share: float = setting(0.0, Number(0, high=1))
    max_clients: int = setting(64, Integer(1))


@attrs.frozen
class MetricsSpec:
    """
    What C{/metrics} shows (C{[metrics]}).

    @ivar per_connection: the families labelled by C{connection}, a series
        or more per connection; C{false} keeps only the aggregates (by
        state, by C{group}, by reason of a reload), for fleets where a
        series per connection is too many.
    """

    per_connection: bool = setting(True, Flag())


@attrs.frozen
class Config:
    """
    A whole configuration file.

    Each L{Table} field is a top-level table of the file, named as the field.

    @ivar path: the file it was read from. It is not part of equality: two
        files with the same content give equal configs.
    @ivar admin: the admin listener.
    @ivar connections: the supervised connections, in file order, then the
        members of each pool, pool by pool.
    @ivar supervisor: the process as a whole (C{[supervisor]}).
    @ivar pools: the C{[[pool]]}s, in file order.
    @ivar metrics: what C{/metrics} shows (C{[metrics]}).
    """

    path: str = attrs.field(eq=False)
    admin: AdminSpec = setting(AdminSpec(), Table(AdminSpec))
    connections: tuple[ConnectionSpec, ...] = ()
    supervisor: SupervisorSpec = setting(SupervisorSpec(), Table(SupervisorSpec))
    pools: tuple[PoolSpec, ...] = ()
    metrics: MetricsSpec = setting(MetricsSpec(), Table(MetricsSpec))

    @property
    def shard(self) -> Shard | None:
        """
        C{[supervisor] shard}, if set.
        """
        return self.supervisor.shard

    def byName(self) -> dict[str, ConnectionSpec]:
        """
        The connections by name, in file order.
        """
        return {spec.name: spec for spec in self.connections}


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
        super().__init__(escape(f"{path}: {where}{problem}"))


_SCHEME = re.compile(r"[A-Za-z0-9_+.-]{1,32}")
_LABEL_NAME = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*")

# Client endpoint strings Twisted has accepted before. Parsing one costs
# about 50 us, which a reload of ten thousand entries (most unchanged) pays
# again for each: remembering them keeps a reload well under a second. Only
# schemes whose parsing reads no file are remembered (a tls: string may name
# a certificate that is gone by the next reload).
_acceptedEndpoints: set[str] = set()
_MEMOISED_SCHEMES = ("tcp:", "unix:")
_MEMO_LIMIT = 100_000


@implementer(IReactorPluggableNameResolver)
class _ParsingReactor:
    """
    All the reactor Twisted's endpoint parsers need: they only keep it (and
    a hostname endpoint asks for its name resolver), so that checking an
    endpoint string needs no real reactor.
    """

    nameResolver: IHostnameResolver | None = None

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError("a reactor for parsing endpoint strings only")


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
    shown = quote(scheme + ":...")
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


@attrs.frozen
class _Endpoint:
    """
    A Twisted endpoint string of one kind, as Twisted's own parser accepts
    it. A refused string is not shown (see L{_refusal}).
    """

    kind: Literal["client", "server"]
    what: str

    def expected(self) -> str:
        return self.what

    def check(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise refuse(key, self.what, describe(value))
        client = self.kind == "client"
        if client and value in _acceptedEndpoints:
            return value
        parse = clientFromString if client else serverFromString
        try:
            parse(_ParsingReactor(), value)  # type: ignore[no-untyped-call]
        except Exception as e:
            raise refuse(key, self.what, _refusal(self.kind, value, e)) from None
        if client and value.startswith(_MEMOISED_SCHEMES) and len(_acceptedEndpoints) < _MEMO_LIMIT:
            _acceptedEndpoints.add(value)
        return value


@attrs.frozen
class _EndpointList:
    """
    An array of distinct client endpoint strings, each as L{_Endpoint}
    checks it, at least one and at most L{MAX_ENDPOINTS}.
    """

    each: _Endpoint

    def expected(self) -> str:
        return f"an array of 1 to {MAX_ENDPOINTS} distinct Twisted client endpoint strings"

    def check(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise refuse(key, self.expected(), describe(value))
        if not 1 <= len(value) <= MAX_ENDPOINTS:
            raise refuse(key, self.expected(), f"an array of {len(value)}")
        seen: dict[str, int] = {}
        for index, item in enumerate(value):
            at = f"{key}[{index}]"
            description = self.each.check(item, at)
            if description in seen:
                raise OptionError(
                    at,
                    f"expected a distinct endpoint string, got the one {key}[{seen[description]}] "
                    "already is",
                )
            seen[description] = index
        return tuple(value)


@attrs.frozen
class _Protocol:
    """
    The name of an installed protocol plugin.
    """

    names: frozenset[str]
    unusable: Mapping[str, str] = attrs.field(factory=dict, eq=False)
    """Installed plugins that cannot be used, by name, with why."""

    def expected(self) -> str:
        return f"one of the known protocols ({', '.join(sorted(self.names)) or 'none installed'})"

    def check(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise refuse(key, self.expected(), describe(value))
        if value in self.unusable:
            found = f"{quote(value)}, whose plugin cannot be used: {self.unusable[value]}"
            raise refuse(key, self.expected(), found)
        if value not in self.names:
            raise refuse(key, self.expected(), quote(value))
        return value


@attrs.frozen
class _OptionValue:
    """
    One value of a connection's C{options}: what TOML gives that is not a
    table, an array or a date.
    """

    def expected(self) -> str:
        return "a string, an integer, a finite float or a boolean"

    def check(self, value: object, key: str) -> str | int | float | bool:
        if not isinstance(value, str | int | float):
            raise refuse(key, self.expected(), describe(value))
        if isinstance(value, float) and not math.isfinite(value):
            raise refuse(key, self.expected(), renderNumber(value))
        return value


# What the loader checks itself, by class and field: the fields the spec
# classes leave to it.
_CLIENT_ENDPOINT = _Endpoint("client", "a Twisted client endpoint string (tcp:, tls:, unix:)")
_OWN_CHECKS: dict[type, dict[str, Check[Any]]] = {
    AdminSpec: {"listen": _Endpoint("server", _LISTEN_EXPECTED)},
    ConnectionSpec: {
        "endpoint": _CLIENT_ENDPOINT,
        "endpoints": _EndpointList(_CLIENT_ENDPOINT),
        "options": Entries(_OptionValue()),
        "labels": Entries(
            Text(),
            keys=Text(
                "a label name matching [A-Za-z_][A-Za-z0-9_]* and not starting with __",
                pattern=_LABEL_NAME,
            ),
        ),
    },
}


def _checksOf(cls: type[Any], **own: Check[Any]) -> dict[str, Check[Any]]:
    """
    The check of every key of C{cls}, in the order of its fields: the
    loader's own (L{_OWN_CHECKS}, then C{own}) where it has one, else the
    field's setting.
    """
    mine = {**_OWN_CHECKS.get(cls, {}), **own}
    checks: dict[str, Check[Any]] = {}
    for attribute in attrs.fields(cls):
        check = mine.get(attribute.name) or checkOf(attribute)
        if check is not None:
            checks[attribute.name] = check
    return checks


_TABLES: dict[str, Table[Any]] = {
    name: check for name, check in _checksOf(Config).items() if isinstance(check, Table)
}
_TOP_KEYS = (*_TABLES, "defaults", "connection", "pool")
# What [defaults] cannot set: it names one connection.
_PER_CONNECTION_KEYS = ("name", "endpoint", "endpoints", "labels")


def _unknownKey(path: str, key: str, allowed: Collection[str]) -> OptionError:
    """
    L{unknownKey}, saying so when the key is in the wrong table.
    """
    found = None
    if path and key in _TOP_KEYS:
        # Usually a key written after a [table] header meant for the top level.
        found = f"{quote(key)}, which belongs at the top level, before any [table] header"
    elif path == "defaults" and key in _PER_CONNECTION_KEYS:
        found = f"{quote(key)}, which is set per [[connection]], not in [defaults]"
    return unknownKey(path, key, allowed, found=found)


Protocols = Mapping[str, IProtocolPlugin] | Collection[str]
"""The installed protocol plugins by name, or only their names."""


class _Checker:
    """
    Validates one parsed document.
    """

    def __init__(self, path: str, protocols: Protocols) -> None:
        self.path = path
        self.plugins: Mapping[str, IProtocolPlugin] = (
            protocols if isinstance(protocols, Mapping) else {}
        )
        self.protocol = _Protocol(
            frozenset(protocols), protocols.unusable if isinstance(protocols, Plugins) else {}
        )
        self.connectionChecks = _checksOf(ConnectionSpec, protocol=self.protocol)
        self.poolChecks: dict[str, Check[Any]] = {
            "name": self.connectionChecks["name"],
            "size": _checksOf(PoolSpec)["size"],
            **{k: c for k, c in self.connectionChecks.items() if k != "name"},
        }
        self.defaultsChecks = {
            key: check
            for key, check in self.connectionChecks.items()
            if key not in _PER_CONNECTION_KEYS
        }
        # The options each plugin accepted during this load, with their types
        # (1, 1.0 and true are equal keys of a dict, not equal options).
        self.acceptedOptions: set[tuple[str, tuple[tuple[str, type, object], ...]]] = set()
        # The TLS files read during this load (each set once, however many
        # connections share it), or why they were refused.
        self.materials: dict[tuple[str, str, str], TLSMaterial | MaterialError] = {}
        # The tables of [defaults] as the entries that leave them alone
        # have them: one object each for all of them.
        self.tables: SharedTables = {}

    def document(self, document: Mapping[str, object]) -> Config:
        """
        The config of a parsed document.

        @raise OptionError: naming the key path of the first problem.
        """
        for key in document:
            if key not in _TOP_KEYS:
                raise _unknownKey("", key, _TOP_KEYS)
        tables = {
            name: structure(
                table.cls,
                document.get(name, {}),
                name,
                checks=_checksOf(table.cls),
                unknown=_unknownKey,
            )
            for name, table in _TABLES.items()
        }
        defaults = checkMapping(
            ConnectionSpec,
            document.get("defaults", {}),
            "defaults",
            checks=self.defaultsChecks,
            unknown=_unknownKey,
        )
        # Each table of [defaults] holds on its own, over the built-in defaults.
        for key, value in defaults.items():
            check = self.defaultsChecks[key]
            if isinstance(check, Table):
                merge(check.cls, [(child("defaults", key), value)])
        entries = document.get("connection", [])
        if not isinstance(entries, list):
            raise OptionError(
                "connection",
                f"expected an array of tables ([[connection]]), got {describe(entries)}",
            )
        specs: list[ConnectionSpec] = []
        seen: dict[str, str] = {}
        for index, entry in enumerate(entries):
            at = f"connection[{index}]"
            spec = self.connection(entry, defaults, at)
            if spec.name in seen:
                raise OptionError(
                    child(at, "name"),
                    f"expected a unique name, got {quote(spec.name)}, which "
                    f"{seen[spec.name]} already has",
                )
            seen[spec.name] = at
            specs.append(spec)
        pools = self.pools(document.get("pool", []), defaults, seen, specs)
        return Config(path=self.path, connections=tuple(specs), pools=pools, **tables)

    def pools(
        self,
        entries: object,
        defaults: Mapping[str, Any],
        seen: dict[str, str],
        specs: list[ConnectionSpec],
    ) -> tuple[PoolSpec, ...]:
        """
        Check the C{[[pool]]} entries; add their members to C{specs} (and
        their names to C{seen}).
        """
        if not isinstance(entries, list):
            raise OptionError(
                "pool", f"expected an array of tables ([[pool]]), got {describe(entries)}"
            )
        pools: list[PoolSpec] = []
        names: dict[str, int] = {}
        for index, entry in enumerate(entries):
            at = f"pool[{index}]"
            checked = checkMapping(PoolSpec, entry, at, checks=self.poolChecks, unknown=_unknownKey)
            name = checked.get("name")
            if name is None:
                expected = self.poolChecks["name"].expected()
                raise refuse(child(at, "name"), expected, "nothing (missing)")
            if name in names:
                raise OptionError(
                    child(at, "name"),
                    f"expected a unique pool name, got {quote(name)}, which "
                    f"pool[{names[name]}] already has",
                )
            names[name] = index
            size = checked.pop("size", 1)
            template = self.connection({**checked, "name": f"{name}.0"}, defaults, at)
            pool = PoolSpec(name, size, template.queue)
            for member in pool.members:
                if member in seen:
                    raise OptionError(
                        child(at, "name"),
                        f"expected a pool name whose members ({pool.members[0]} to "
                        f"{pool.members[-1]}) no other connection has, got {quote(name)}: "
                        f"{seen[member]} is called {quote(member)}",
                    )
                seen[member] = at
                specs.append(attrs.evolve(template, name=member))
            pools.append(pool)
        return tuple(pools)

    def connection(self, entry: object, defaults: Mapping[str, Any], at: str) -> ConnectionSpec:
        """
        Check one C{[[connection]]} entry and merge it over the defaults.
        """
        own = checkMapping(
            ConnectionSpec, entry, at, checks=self.connectionChecks, unknown=_unknownKey
        )
        spec = merge(
            ConnectionSpec,
            [("defaults", defaults), (at, own)],
            checks=self.connectionChecks,
            shared=self.tables,
        )
        if spec.protocol not in self.protocol.names:
            raise OptionError(
                child(at, "protocol"),
                f"expected {self.protocol.expected()}, got nothing here or in [defaults], "
                f"and the built-in default {quote(spec.protocol)} is not installed",
            )
        self.pluginOptions(spec, at)
        if spec.tls.enabled:
            spec = self.tlsMaterial(spec, own, at)
        return spec

    def tlsMaterial(self, spec: ConnectionSpec, own: Mapping[str, Any], at: str) -> ConnectionSpec:
        """
        C{spec} with what its TLS files hold, read now; a file that cannot
        be used is refused at the key that names it, in the connection or in
        C{[defaults]}, whichever set it.
        """
        tls = spec.tls
        files = (tls.ca, tls.cert, tls.key)
        material = self.materials.get(files)
        if material is None:
            try:
                material = readMaterial(*files)
            except MaterialError as e:
                material = e
            self.materials[files] = material
        if isinstance(material, MaterialError):
            table = child(at, "tls") if material.key in own.get("tls", {}) else "defaults.tls"
            raise OptionError(child(table, material.key), material.problem)
        return attrs.evolve(spec, tls=attrs.evolve(tls, material=material))

    def pluginOptions(self, spec: ConnectionSpec, at: str) -> None:
        """
        Have the connection's plugin check its options, when it provides
        L{IConfigurable}.
        """
        plugin = self.plugins.get(spec.protocol)
        if plugin is None or not IConfigurable.providedBy(plugin):
            return
        accepted = (spec.protocol, tuple((k, type(v), v) for k, v in spec.options))
        if accepted in self.acceptedOptions:
            return
        where = child(at, "options")
        try:
            IConfigurable(plugin).parseOptions(dict(spec.options))
        except OptionError as e:
            raise OptionError(f"{where}.{e.key}" if e.key else where, e.problem) from None
        except Exception as e:  # a plugin's bug: the file is refused all the same
            raise OptionError(
                where,
                f"expected options the {quote(spec.protocol)} plugin accepts, got an "
                f"error from its check ({type(e).__name__})",
            ) from None
        self.acceptedOptions.add(accepted)


_SYNTAX_LOCATION = re.compile(r" \(at line (\d+), column (\d+)\)$")
_SYNTAX_AT_END = " (at end of document)"


def _lineAndColumn(text: str, offset: int) -> tuple[int, int]:
    """
    The 1-based line and column of C{text[offset]}.
    """
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def parseConfig(text: str, path: str, *, protocols: Protocols | None = None) -> Config:
    """
    Parse and validate the text of a configuration file.

    @param text: the TOML text.
    @param path: the file it came from, for messages and L{Config.path}.
    @param protocols: the protocol plugins that exist, by name: each
        connection's options are checked by its plugin when it provides
        L{IConfigurable}. Only their names will do, without that check. By
        default the installed plugins (L{supervisor.plugin.availablePlugins}).
    @raise ConfigError: for any problem in C{text}.
    @raise supervisor.plugin.PluginError: by default, when the installed
        plugins cannot be used together (whatever the file says).
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

        protocols = availablePlugins()
    try:
        return _Checker(path, protocols).document(document)
    except OptionError as e:
        raise ConfigError(path, e.key, e.problem) from None


def loadConfig(path: str, *, protocols: Protocols | None = None) -> Config:
    """
    Read, parse and validate a configuration file (UTF-8, an optional BOM
    is skipped).

    @param path: the file.
    @param protocols: as for L{parseConfig}.
    @raise ConfigError: if the file cannot be read or has any problem.
    @raise supervisor.plugin.PluginError: as for L{parseConfig}.
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
