"""
Checked settings: the one way a configuration key or a plugin option says
what it accepts, and the one wording of every refusal.

A field of a frozen attrs class declares its check with L{setting} (or
L{checked}, for a field without a default)::

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

A value that stands in several layers (the configuration's C{[defaults]},
then one C{[[connection]]}) is checked layer by layer with L{checkMapping}
and built once with L{merge}: a nested L{Table} is merged key by key, and a
rule across fields (a L{Conflict}) is reported where the innermost layer set
one of its keys.

Checks are plain values (L{Number}, L{Integer}, L{Choice}, L{Text}, L{Flag},
L{Table}), so that a loader can also ask a field what it expects.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date, datetime, time
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar, cast

import attrs

from supervisor.interfaces import OptionError

__all__ = [
    "Check",
    "Choice",
    "Conflict",
    "Entries",
    "Flag",
    "Integer",
    "Number",
    "OptionError",
    "Table",
    "Text",
    "checkMapping",
    "checkOf",
    "checked",
    "child",
    "describe",
    "escape",
    "fieldChecks",
    "merge",
    "quote",
    "refuse",
    "renderNumber",
    "setting",
    "structure",
    "unknownKey",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
S = TypeVar("S", bound=str)

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


def child(path: str, key: str) -> str:
    """
    C{key} below C{path}, quoted when it is not a bare TOML key.
    """
    rendered = key if _BARE_KEY.fullmatch(key) else quote(key)
    return f"{path}.{rendered}" if path else rendered


class Check(Protocol[T_co]):
    """
    What one field accepts.
    """

    def expected(self) -> str:
        "What is accepted, in words (C{an integer >= 1})."

    def check(self, value: object, key: str) -> T_co:
        "C{value} converted, or L{OptionError} naming C{key}."


class Conflict(OptionError):
    """
    A rule across fields refused their values together (raised by a class's
    C{__attrs_post_init__}). L{merge} reports it at one of the keys involved:
    the one the innermost layer set.

    @ivar problems: for each key involved, the problem as it reads at that
        key; the first is the one reported when no layer tells them apart.
    """

    def __init__(self, problems: Mapping[str, str]) -> None:
        key, problem = next(iter(problems.items()))
        super().__init__(key, problem)
        self.problems = dict(problems)


def refuse(key: str, expected: str, found: str) -> OptionError:
    """
    The refusal of the value at C{key}, in the one wording:
    C{expected <expected>, got <found>}.
    """
    return OptionError(key, f"expected {expected}, got {found}")


def _within(kind: str, low: str, high: str | None, strict: bool = False) -> str:
    """
    What a range check expects: C{kind} from C{low} to C{high}, or above
    C{low} (C{strict}: not C{low} itself) when there is no C{high}.
    """
    if high is not None:
        return f"{kind} from {low} to {high}"
    return f"{kind} {'>' if strict else '>='} {low}"


@attrs.frozen
class Number:
    """
    A float: an int is accepted, a bool is not; finite, within range.
    """

    low: float
    strict: bool = False
    high: float | None = None

    def expected(self) -> str:
        high = None if self.high is None else renderNumber(self.high)
        return _within("a number", renderNumber(self.low), high, self.strict)

    def check(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse(key, self.expected(), describe(value))
        try:
            number = float(value)
        except OverflowError:
            raise refuse(key, self.expected(), describe(value)) from None
        inRange = (number > self.low if self.strict else number >= self.low) and (
            self.high is None or number <= self.high
        )
        if not (math.isfinite(number) and inRange):
            raise refuse(key, self.expected(), renderNumber(value))
        return number


@attrs.frozen
class Integer:
    """
    An int: neither a bool nor a float is accepted; within range.
    """

    low: int
    high: int | None = None

    def expected(self) -> str:
        return _within("an integer", str(self.low), None if self.high is None else str(self.high))

    def check(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse(key, self.expected(), describe(value))
        if value < self.low or (self.high is not None and value > self.high):
            raise refuse(key, self.expected(), renderNumber(value))
        return value


@attrs.frozen
class Choice(Generic[S]):
    """
    A string from a fixed set; typed as the set's C{Literal} when it is
    given as one (C{Choice(get_args(Jitter))}).
    """

    choices: tuple[S, ...]

    def expected(self) -> str:
        return f"one of {', '.join(self.choices)}"

    def check(self, value: object, key: str) -> S:
        if not isinstance(value, str):
            raise refuse(key, self.expected(), describe(value))
        for choice in self.choices:
            if value == choice:
                return choice
        raise refuse(key, self.expected(), quote(value))


@attrs.frozen
class Text:
    """
    A string, of at most C{maxLength} characters, matching C{pattern} (the
    whole string) when one is given; C{what} says what is accepted.
    """

    what: str = "a string"
    maxLength: int = 4096
    pattern: re.Pattern[str] | None = None

    def expected(self) -> str:
        return self.what

    def check(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise refuse(key, self.expected(), describe(value))
        if len(value) > self.maxLength:
            raise refuse(
                key, f"{self.expected()} of at most {self.maxLength} characters", quote(value)
            )
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise refuse(key, self.expected(), quote(value))
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
            raise refuse(key, self.expected(), describe(value))
        return value


@attrs.frozen
class Table(Generic[T]):
    """
    A nested table, structured as C{cls} (whose fields are L{setting}s).
    Where a value is given in layers, it is merged key by key.
    """

    cls: type[T]

    def expected(self) -> str:
        return "a table"

    def check(self, value: object, key: str) -> T:
        if isinstance(value, self.cls):
            return value
        return structure(self.cls, value, key)


@attrs.frozen
class Entries(Generic[T]):
    """
    A table of free keys (each a plain string, or one C{keys} accepts), each
    value checked by C{values}. Where it is given in layers, it is merged
    key by key.
    """

    values: Check[T]
    keys: Text | None = None

    def expected(self) -> str:
        return "a table"

    def check(self, value: object, key: str) -> dict[str, T]:
        if not isinstance(value, Mapping):
            raise refuse(key, self.expected(), describe(value))
        checked: dict[str, T] = {}
        for name, item in value.items():
            itemPath = child(key, name)
            if self.keys is not None:
                self.keys.check(name, itemPath)
            checked[name] = self.values.check(item, itemPath)
        return checked


_CHECK = "netsupervisor.check"


def _validator(
    check: Check[T], accepted: object = attrs.NOTHING
) -> Callable[[object, attrs.Attribute[T], T], None]:
    def validate(instance: object, attribute: attrs.Attribute[T], value: T) -> None:
        # C{accepted} (a default) passed the check when the field was
        # declared: a spec of ten thousand connections mostly has its defaults.
        if value is not accepted:
            check.check(value, attribute.name)

    return validate


def setting(default: T, check: Check[T]) -> T:
    """
    An attrs field with a default, checked by C{check} both when it is built
    directly (a C{ValueError}) and through L{structure} (an L{OptionError}).
    """
    accepted: object = default
    try:
        check.check(default, "default")
    except ValueError:
        # A default its check refuses stays refused wherever it is used.
        accepted = attrs.NOTHING
    field: T = attrs.field(
        default=default, validator=_validator(check, accepted), metadata={_CHECK: check}
    )
    return field


def checked(check: Check[Any]) -> dict[str, Any]:
    """
    The arguments of C{attrs.field} for a field without a default, checked as
    a L{setting} is: C{name: str = attrs.field(**checked(Text()))}.
    L{structure} refuses a mapping without it (C{expected ..., got nothing
    (missing)}). A function returning the field itself would hide from mypy
    that it has no default.
    """
    return {"validator": _validator(check), "metadata": {_CHECK: check}}


def checkOf(attribute: attrs.Attribute[Any]) -> Check[Any] | None:
    """
    The check a field declared with L{setting}, if any.
    """
    found: Check[Any] | None = attribute.metadata.get(_CHECK)
    return found


def fieldChecks(cls: type[Any]) -> Mapping[str, Check[Any]]:
    """
    The checked fields of an attrs class, by name, in declaration order.
    """
    return _fieldsOf(cls).checks


@attrs.frozen
class _Fields:
    """
    What L{merge} needs to know of a class, found once.
    """

    checks: Mapping[str, Check[Any]]
    required: tuple[str, ...]


_FIELDS: dict[type[Any], _Fields] = {}


def _fieldsOf(cls: type[Any]) -> _Fields:
    found = _FIELDS.get(cls)
    if found is None:
        checks = {a.name: c for a in attrs.fields(cls) if (c := checkOf(a)) is not None}
        required = tuple(a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING)
        found = _FIELDS[cls] = _Fields(MappingProxyType(checks), required)
    return found


def unknownKey(
    path: str, key: str, allowed: Collection[str], *, found: str | None = None
) -> OptionError:
    """
    The refusal of a key that is not one of C{allowed}: C{found} says what
    it is, by default an unknown key, with the closest allowed one.
    """
    if found is None:
        found = "an unknown key"
        close = difflib.get_close_matches(key, list(allowed), n=1)
        if close:
            found += f" (did you mean {quote(close[0])}?)"
    return refuse(child(path, key), f"one of {', '.join(allowed)}", found)


UnknownKey = Callable[[str, str, Collection[str]], OptionError]
"""How a caller words the refusal of an unknown key (L{unknownKey} by default)."""


def checkMapping(
    cls: type[Any],
    value: object,
    path: str = "",
    *,
    checks: Mapping[str, Check[Any]] | None = None,
    unknown: UnknownKey = unknownKey,
) -> dict[str, Any]:
    """
    The keys of C{value} checked against the fields of C{cls}, without
    building anything: one layer of what L{merge} builds. A nested L{Table}
    is checked the same way and left a C{dict}.

    @param checks: the checks of the keys, by default L{fieldChecks}; a
        caller that knows more about some field passes its own.
    @param unknown: the refusal of an unknown key, here and in nested tables.
    @raise OptionError: for a value that is not a table, an unknown key or
        a refused value; its key is the dotted path from C{path}.
    """
    if not isinstance(value, Mapping):
        raise refuse(path, "a table", describe(value))
    if checks is None:
        checks = fieldChecks(cls)
    checked: dict[str, Any] = {}
    for key, item in value.items():
        check = checks.get(key)
        if check is None:
            raise unknown(path, str(key), tuple(checks))
        itemPath = child(path, key)
        if isinstance(check, Table):
            checked[key] = checkMapping(check.cls, item, itemPath, unknown=unknown)
        else:
            checked[key] = check.check(item, itemPath)
    return checked


SharedTables = dict[tuple[type, tuple[int, ...]], tuple[tuple[Mapping[str, Any], ...], object]]
"""Nested tables already built, by class and the identities of their layers
(which the entry keeps, so that an identity is not reused meanwhile)."""


def _mergeShared(
    cls: type[T], layers: Sequence[tuple[str, Mapping[str, Any]]], shared: SharedTables
) -> T:
    """
    L{merge}, giving the object built before from the same layer mappings
    (not merely equal ones: that needs no hashing, and a layer refused
    before was never kept).
    """
    mappings = tuple(layer for _, layer in layers)
    key = (cls, tuple(map(id, mappings)))
    found = shared.get(key)
    if found is not None and all(a is b for a, b in zip(found[0], mappings, strict=True)):
        return cast(T, found[1])
    value = merge(cls, layers)
    shared[key] = (mappings, value)
    return value


def merge(
    cls: type[T],
    layers: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    checks: Mapping[str, Check[Any]] | None = None,
    shared: SharedTables | None = None,
) -> T:
    """
    Build C{cls} from checked layers (each the path it was found at and what
    L{checkMapping} gave there), a later layer overriding an earlier one: a
    nested L{Table} and a free-form table (a mapping) key by key, any other
    value whole. Keys set in no layer take the field's default.

    @param checks: as given to L{checkMapping}, for what a missing required
        field expects.
    @param shared: where nested tables built from the very same layers
        before are found again: the entries of one file that leave a table
        to C{[defaults]} get one object for it, not one each.
    @raise OptionError: for a missing required field (at the innermost
        layer's path), or a rule across fields: a L{Conflict} at the key
        the innermost layer that set one of its keys set, another
        C{ValueError} at the table.
    """
    fields = _fieldsOf(cls)
    if checks is None:
        checks = fields.checks
    innermost = layers[-1][0] if layers else ""
    values: dict[str, Any] = {}
    tables: dict[str, tuple[type[Any], list[tuple[str, Mapping[str, Any]]]]] = {}
    for path, layer in layers:
        for key, value in layer.items():
            check = checks.get(key)
            if isinstance(check, Table):
                tables.setdefault(key, (check.cls, []))[1].append((child(path, key), value))
            elif key in values and isinstance(value, Mapping):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
    for key in fields.required:
        if key not in values:
            check = checks.get(key)
            expected = check.expected() if check is not None else "a value"
            raise refuse(child(innermost, key), expected, "nothing (missing)")
    for key, (table, given) in tables.items():
        values[key] = merge(table, given) if shared is None else _mergeShared(table, given, shared)
    try:
        return cls(**values)
    except OptionError as e:
        problems = e.problems if isinstance(e, Conflict) else {e.key: e.problem}
        for path, layer in reversed(layers):
            for key, problem in problems.items():
                if key in layer:
                    raise OptionError(child(path, key), problem) from None
        raise OptionError(child(innermost, e.key) if e.key else innermost, e.problem) from None
    except ValueError as e:
        raise OptionError(innermost, str(e)) from None


def structure(
    cls: type[T],
    value: object,
    path: str = "",
    *,
    checks: Mapping[str, Check[Any]] | None = None,
    unknown: UnknownKey = unknownKey,
) -> T:
    """
    Build C{cls} from a mapping: keys not given take the field's default.

    @raise OptionError: as L{checkMapping} and L{merge} do.
    """
    checked = checkMapping(cls, value, path, checks=checks, unknown=unknown)
    return merge(cls, [(path, checked)], checks=checks)
