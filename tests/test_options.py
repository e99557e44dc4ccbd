"""
The checked-settings vocabulary shared by the configuration loader and the
plugins' options.
"""

from __future__ import annotations

import attrs
import pytest

from supervisor.interfaces import OptionError
from supervisor.options import (
    Choice,
    Flag,
    Integer,
    Number,
    Table,
    Text,
    checkMapping,
    setting,
    structure,
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


def test_hugeIntegerIsShortened() -> None:
    error = refused({"size": -(10**100)})
    assert error.problem.endswith("...")
    assert len(error.problem) < 120
