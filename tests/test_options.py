"""
The checked-settings vocabulary shared by the configuration loader and the
plugins' options.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal, get_args

import attrs
import pytest

from supervisor.interfaces import OptionError
from supervisor.options import (
    Choice,
    Conflict,
    Entries,
    Flag,
    Integer,
    Number,
    Table,
    Text,
    checked,
    checkMapping,
    merge,
    setting,
    structure,
    unknownKey,
)


@attrs.frozen
class Inner:
    depth: int = setting(3, Integer(1, 10))


@attrs.frozen
class Outer:
    size: int = setting(16384, Integer(1))
    ratio: float = setting(0.5, Number(0, high=1))
    mode: str = setting("fast", Choice(("fast", "slow")))
    label: str = setting("", Text(maxLength=8))
    live: bool = setting(True, Flag())
    inner: Inner = setting(Inner(), Table(Inner))

    def __attrs_post_init__(self) -> None:
        if self.mode == "slow" and self.size > 100:
            raise ValueError("size must be <= 100 when mode is slow")


def refused(value: object) -> OptionError:
    with pytest.raises(OptionError) as info:
        structure(Outer, value)
    return info.value


def test_defaultsWhenNothingIsGiven() -> None:
    assert structure(Outer, {}) == Outer()


def test_everyKindIsConverted() -> None:
    built = structure(
        Outer,
        {"size": 7, "ratio": 1, "mode": "slow", "label": "x", "live": False, "inner": {"depth": 9}},
    )
    assert built == Outer(7, 1.0, "slow", "x", False, Inner(9))
    assert isinstance(built.ratio, float)


@pytest.mark.parametrize(
    ("value", "key", "problem"),
    [
        ({"size": "abc"}, "size", 'expected an integer >= 1, got the string "abc"'),
        ({"size": True}, "size", "expected an integer >= 1, got the boolean true"),
        ({"size": 1.0}, "size", "expected an integer >= 1, got the float 1.0"),
        ({"size": 0}, "size", "expected an integer >= 1, got 0"),
        ({"ratio": 2}, "ratio", "expected a number from 0 to 1, got 2"),
        ({"ratio": float("nan")}, "ratio", "expected a number from 0 to 1, got nan"),
        ({"mode": "medium"}, "mode", 'expected one of fast, slow, got "medium"'),
        ({"label": "x" * 9}, "label", 'expected a string of at most 8 characters, got "xxxxxxxxx"'),
        ({"live": "yes"}, "live", 'expected a boolean (true or false), got the string "yes"'),
        ({"inner": {"depth": 11}}, "inner.depth", "expected an integer from 1 to 10, got 11"),
        ({"inner": 3}, "inner", "expected a table, got the integer 3"),
        (
            {"szie": 1},
            "szie",
            "expected one of size, ratio, mode, label, live, inner, got an "
            'unknown key (did you mean "size"?)',
        ),
        (
            {"a b": 1},
            '"a b"',
            "expected one of size, ratio, mode, label, live, inner, got an unknown key",
        ),
    ],
)
def test_refusalsNameTheKeyAndTheProblem(value: object, key: str, problem: str) -> None:
    error = refused(value)
    assert (error.key, error.problem) == (key, problem)
    assert str(error) == f"{key}: {problem}"


def test_aRuleAcrossFieldsIsAnOptionErrorOfTheTable() -> None:
    error = refused({"mode": "slow"})
    assert (error.key, error.problem) == ("", "size must be <= 100 when mode is slow")


def test_notATable() -> None:
    error = refused(["size"])
    assert error.problem == "expected a table, got an array"


def test_pathPrefixesEveryKey() -> None:
    with pytest.raises(OptionError) as info:
        checkMapping(Outer, {"inner": {"depth": 0}}, "connection[2].options")
    assert info.value.key == "connection[2].options.inner.depth"


def test_directConstructionIsCheckedToo() -> None:
    with pytest.raises(ValueError, match="size: expected an integer >= 1, got 0"):
        Outer(size=0)


def test_aDefaultItsCheckRefusesIsRefusedWhenUsed() -> None:
    """
    A default that passes its check is not checked again at every instance;
    one that does not (a way to say "required") is still refused, built
    directly or through L{structure}.
    """

    @attrs.frozen
    class Required:
        host: str = setting("", Text(what="a host name", pattern=re.compile(r"\S+")))

    with pytest.raises(ValueError, match="host: expected a host name"):
        Required()
    with pytest.raises(OptionError, match="expected a host name"):
        structure(Required, {})
    assert Required(host="db").host == "db"
    assert Outer().size == 16384


def test_hugeIntegerIsShortened() -> None:
    error = refused({"size": -(10**100)})
    assert error.problem.endswith("...")
    assert len(error.problem) < 120


# Layers: what the configuration's [defaults] and [[connection]] need.


@attrs.frozen
class Window:
    low: int = setting(1, Integer(0))
    high: int = setting(10, Integer(0))

    def __attrs_post_init__(self) -> None:
        if self.high < self.low:
            raise Conflict(
                {
                    "high": f"expected an integer >= low ({self.low}), got {self.high}",
                    "low": f"expected an integer <= high ({self.high}), got {self.low}",
                }
            )


@attrs.frozen
class Entry:
    name: str = attrs.field(**checked(Text("a short name", maxLength=8)))
    window: Window = setting(Window(), Table(Window))
    tags: dict[str, str] = setting({}, Entries(Text()))
    size: int = setting(5, Integer(1))


def layers(*given: tuple[str, object]) -> Entry:
    return merge(Entry, [(path, checkMapping(Entry, value, path)) for path, value in given])


def test_laterLayersOverrideTablesKeyByKey() -> None:
    entry = layers(
        ("defaults", {"window": {"low": 2}, "tags": {"a": "1", "b": "2"}, "size": 7}),
        ("entry", {"name": "x", "window": {"high": 5}, "tags": {"b": "3"}}),
    )
    assert entry == Entry("x", Window(2, 5), {"a": "1", "b": "3"}, 7)


def test_checkMappingLeavesNestedTablesUnbuilt() -> None:
    assert checkMapping(Entry, {"window": {"low": 3}}) == {"window": {"low": 3}}


@pytest.mark.parametrize(
    ("defaults", "entry", "key", "problem"),
    [
        ({"low": 8}, {"high": 5}, "entry.window.high", "expected an integer >= low (8), got 5"),
        ({"high": 5}, {"low": 8}, "entry.window.low", "expected an integer <= high (5), got 8"),
    ],
)
def test_aConflictIsReportedWhereTheInnermostLayerSetOneOfItsKeys(
    defaults: dict[str, int], entry: dict[str, int], key: str, problem: str
) -> None:
    with pytest.raises(OptionError) as info:
        layers(("defaults", {"window": defaults}), ("entry", {"name": "x", "window": entry}))
    assert (info.value.key, info.value.problem) == (key, problem)


def test_aConflictOfOneLayerIsReportedAtItsFirstKey() -> None:
    with pytest.raises(OptionError) as info:
        structure(Window, {"low": 8, "high": 5}, "window")
    assert info.value.key == "window.high"


def test_aMissingRequiredFieldSaysWhatItExpects() -> None:
    with pytest.raises(OptionError) as info:
        layers(("defaults", {"size": 2}), ("connection[4]", {}))
    assert (info.value.key, info.value.problem) == (
        "connection[4].name",
        "expected a short name, got nothing (missing)",
    )


def test_entriesCheckEveryKeyAndValue() -> None:
    check = Entries(Integer(0), keys=Text("a lower-case word", pattern=re.compile("[a-z]+")))
    assert check.check({"a": 1}, "t") == {"a": 1}
    with pytest.raises(OptionError) as info:
        check.check({"A": 1}, "t")
    assert str(info.value) == 't.A: expected a lower-case word, got "A"'
    with pytest.raises(OptionError) as info:
        check.check({"a": -1}, "t")
    assert str(info.value) == "t.a: expected an integer >= 0, got -1"
    with pytest.raises(OptionError) as info:
        check.check([1], "t")
    assert str(info.value) == "t: expected a table, got an array"


def test_textWithAPattern() -> None:
    check = Text("a word", pattern=re.compile("[a-z]+"))
    assert check.check("abc", "k") == "abc"
    with pytest.raises(OptionError) as info:
        check.check("a b", "k")
    assert info.value.problem == 'expected a word, got "a b"'


def test_aChoiceReturnsItsOwnValue() -> None:
    Jitter = Literal["none", "full"]
    check: Choice[Jitter] = Choice(get_args(Jitter))
    assert check.check("full", "k") == "full"
    assert check.expected() == "one of none, full"


def test_unknownKeyMayBeWordedByTheCaller() -> None:
    def unknown(path: str, key: str, allowed: Collection[str]) -> OptionError:
        return unknownKey(path, key, allowed, found=f"{key!r}, misplaced")

    with pytest.raises(OptionError) as info:
        structure(Entry, {"name": "x", "window": {"wide": 1}}, "e", unknown=unknown)
    assert str(info.value) == "e.window.wide: expected one of low, high, got 'wide', misplaced"
