"""
Checked settings: the one way a configuration key or a plugin option says
what it accepts, and the one wording of every refusal.

A field of a frozen attrs class declares its check with L{setting}::

    @attrs.frozen
    class Options:
        max_line_length: int = setting(16384, Integer(1))
        lines_are_liveness: bool = setting(True, Flag())

        @classmethod
        def fromMapping(cls, options: Mapping[str, object]) -> Options:
            return structure(cls, options)

L{structure} builds such a class from a mapping (a TOML table): an unknown
key, or a value its check refuses, raises L{OptionError} naming the key (a
dotted path for a nested table) and the problem, like C{expected an integer
>= 1, got the string "abc"}. The configuration loader reports it with the
file and the key path; a plugin's C{parseOptions} lets it propagate.

Checks are plain values (L{Number}, L{Integer}, L{Choice}, L{Text}, L{Flag},
L{Table}), so that a loader can also ask a field what it expects.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping
from datetime import date, datetime, time
from typing import Any, Generic, Protocol, TypeVar

import attrs

from supervisor.interfaces import OptionError

__all__ = [
    "Check",
    "Choice",
    "Flag",
    "Integer",
    "Number",
    "OptionError",
    "Table",
    "Text",
    "describe",
    "escape",
    "quote",
    "setting",
    "structure",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

SHOWN = 60
"""The most characters of a refused string (or digits of a number) shown."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def escape(text: str) -> str:
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


def quote(text: str) -> str:
    """
    C{text} as a short, one-line, double-quoted string.
    """
    if len(text) > SHOWN:
        text = text[:SHOWN] + "..."
    return '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def renderNumber(value: float) -> str:
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
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def describe(value: object) -> str:
    """
    What was found, for a value of the wrong type. Tables and arrays are not
    shown: they could hold secrets.
    """
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {renderNumber(value)}"
    if isinstance(value, float):
        return f"the float {renderNumber(value)}"
    if isinstance(value, str):
        return f"the string {quote(value)}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, date | time | datetime):
        return "a date/time"
    return f"a {type(value).__name__}"


class Check(Protocol[T_co]):
    """
    What one field accepts.
    """

    def expected(self) -> str:
        "What is accepted, in words (C{an integer >= 1})."

    def check(self, value: object, key: str) -> T_co:
        "C{value} converted, or L{OptionError} naming C{key}."


def _refuse(key: str, expected: str, found: str) -> OptionError:
    return OptionError(key, f"expected {expected}, got {found}")


@attrs.frozen
class Number:
    """
    A float: an int is accepted, a bool is not; finite, within range.
    """

    low: float
    strict: bool = False
    high: float | None = None

    def expected(self) -> str:
        if self.high is not None:
            return f"a number from {renderNumber(self.low)} to {renderNumber(self.high)}"
        return f"a number {'>' if self.strict else '>='} {renderNumber(self.low)}"

    def check(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _refuse(key, self.expected(), describe(value))
        try:
            number = float(value)
        except OverflowError:
            raise _refuse(key, self.expected(), describe(value)) from None
        inRange = (number > self.low if self.strict else number >= self.low) and (
            self.high is None or number <= self.high
        )
        if not (math.isfinite(number) and inRange):
            raise _refuse(key, self.expected(), renderNumber(value))
        return number


@attrs.frozen
class Integer:
    """
    An int: neither a bool nor a float is accepted; within range.
    """

    low: int
    high: int | None = None

    def expected(self) -> str:
        if self.high is not None:
            return f"an integer from {self.low} to {self.high}"
        return f"an integer >= {self.low}"

    def check(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _refuse(key, self.expected(), describe(value))
        if value < self.low or (self.high is not None and value > self.high):
            raise _refuse(key, self.expected(), renderNumber(value))
        return value


@attrs.frozen
class Choice:
    """
    A string from a fixed set.
    """

    choices: tuple[str, ...]

    def expected(self) -> str:
        return f"one of {', '.join(self.choices)}"

    def check(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise _refuse(key, self.expected(), describe(value))
        if value not in self.choices:
            raise _refuse(key, self.expected(), quote(value))
        return value


@attrs.frozen
class Text:
    """
    A string, of at most C{maxLength} characters.
    """

    what: str = "a string"
    maxLength: int = 4096

    def expected(self) -> str:
        return self.what

    def check(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise _refuse(key, self.expected(), describe(value))
        if len(value) > self.maxLength:
            raise _refuse(
                key, f"{self.expected()} of at most {self.maxLength} characters", quote(value)
            )
        return value


@attrs.frozen
class Flag:
    """
    A boolean: C{true} or C{false}, nothing else.
    """

    def expected(self) -> str:
        return "a boolean (true or false)"

    def check(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise _refuse(key, self.expected(), describe(value))
        return value


@attrs.frozen
class Table(Generic[T]):
    """
    A nested table, structured as C{cls} (whose fields are L{setting}s).
    """

    cls: type[T]

    def expected(self) -> str:
        return "a table"

    def check(self, value: object, key: str) -> T:
        if isinstance(value, self.cls):
            return value
        return structure(self.cls, value, key)


_CHECK = "netsupervisor.check"


def setting(default: T, check: Check[Any]) -> T:
    """
    An attrs field with a default, checked by C{check} both when it is built
    directly (a C{ValueError}) and through L{structure} (an L{OptionError}).
    """

    def validate(instance: object, attribute: attrs.Attribute[T], value: T) -> None:
        check.check(value, attribute.name)

    field: T = attrs.field(default=default, validator=validate, metadata={_CHECK: check})
    return field


def checkOf(attribute: attrs.Attribute[Any]) -> Check[Any] | None:
    """
    The check a field declared with L{setting}, if any.
    """
    found: Check[Any] | None = attribute.metadata.get(_CHECK)
    return found


def child(path: str, key: str) -> str:
    """
    C{key} below C{path}, quoted when it is not a bare TOML key.
    """
    rendered = key if _BARE_KEY.fullmatch(key) else quote(key)
    return f"{path}.{rendered}" if path else rendered


def unknownKey(path: str, key: str, allowed: Collection[str]) -> OptionError:
    """
    The refusal of a key that is not one of C{allowed}, suggesting the
    closest one.
    """
    found = "an unknown key"
    close = difflib.get_close_matches(key, list(allowed), n=1)
    if close:
        found += f" (did you mean {quote(close[0])}?)"
    return _refuse(child(path, key), f"one of {', '.join(allowed)}", found)


def fieldChecks(cls: type[Any]) -> dict[str, Check[Any]]:
    """
    The checked fields of an attrs class, by name, in declaration order.
    """
    checks: dict[str, Check[Any]] = {}
    for attribute in attrs.fields(cls):
        check = checkOf(attribute)
        if check is not None:
            checks[attribute.name] = check
    return checks


def checkMapping(cls: type[Any], value: object, path: str = "") -> dict[str, Any]:
    """
    The keys of C{value} checked against the fields of C{cls}, without
    building it: what L{structure} passes to C{cls}, for a caller that
    merges layers (defaults, then one connection) before building.

    @raise OptionError: for a value that is not a table, an unknown key or
        a refused value; its key is the dotted path from C{path}.
    """
    if not isinstance(value, Mapping):
        raise _refuse(path, "a table", describe(value))
    checks = fieldChecks(cls)
    checked: dict[str, Any] = {}
    for key, item in value.items():
        check = checks.get(key)
        if check is None:
            raise unknownKey(path, str(key), tuple(checks))
        checked[key] = check.check(item, child(path, key))
    return checked


def structure(cls: type[T], value: object, path: str = "") -> T:
    """
    Build C{cls} from a mapping: keys not given take the field's default.

    @raise OptionError: as L{checkMapping} does, or with the message of a
        rule that spans fields (a C{ValueError} raised by C{cls} itself).
    """
    checked = checkMapping(cls, value, path)
    try:
        return cls(**checked)
    except ValueError as e:
        if isinstance(e, OptionError):
            raise OptionError(child(path, e.key) if e.key else path, e.problem) from None
        raise OptionError(path, str(e)) from None
