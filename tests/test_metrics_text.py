"""
The text writers of the exposition (L{supervisor.metrics}), against the
writer that makes one sample at a time: values in runs joined at once, the
pieces of values that are all different, six decimals for microseconds,
the lines of a one-hot gauge by value.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.metrics import (
    FAMILIES,
    Family,
    _Column,
    _micros,
    _oneHotLines,
    _Pairs,
    _sampleLines,
    _Text,
    _writeColumn,
    _writeOneHot,
)
from supervisor.states.records import STATES

GAUGE = next(f for f in FAMILIES if f.name == "backoff_delay_seconds")
COUNTER = next(f for f in FAMILIES if f.name == "connect_attempts")
INFO = next(f for f in FAMILIES if f.name == "connection_info")
RTT = next(f for f in FAMILIES if f.name == "heartbeat_last_rtt_seconds")
STATE = next(f for f in FAMILIES if f.name == "connection_state")


def names(count: int) -> list[str]:
    return [f"c-{i}" for i in range(count)]


def written(write: Any, family: Family, column: _Column) -> str:
    out: list[str] = []
    write(out, family, column, _Text(_Pairs("connection")))
    return "".join(out)


def oneAtATime(family: Family, samples: list[tuple[tuple[str, ...], Any]]) -> str:
    return "".join(_sampleLines(family, samples, _Text(_Pairs("connection"))))


def parsed(text: str) -> list[tuple[str, float]]:
    """
    Each line's series and value: an int and a float of the same value
    share one text (C{1000000.0} or C{1e+06}, whichever came first).
    """
    assert text == "" or text.endswith("\n")
    return [(series, float(value)) for series, value in map(str.split, text.splitlines())]


# A few values, so that runs come long and short, ints and floats alike
# (1 and 1.0 are one run: the same text).
FEW = st.sampled_from([0, 1, 2, 0.0, 1.0, 0.5, 3.25, 1e6, 1_000_000, 1e-7])
MANY = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)


@given(st.lists(FEW, max_size=200) | st.lists(MANY, max_size=60))
def test_aColumnIsWrittenAsOneSampleAtATime(values: list[float]) -> None:
    """
    Values in runs (joined, one join for each) or all different (pieces):
    the same text as the writer of one sample at a time.
    """
    for family in (GAUGE, COUNTER):
        column = _Column(names(len(values)), values)
        samples = [((name,), value) for name, value in zip(names(len(values)), values, strict=True)]
        assert parsed(written(_writeColumn, family, column)) == parsed(oneAtATime(family, samples))


@given(st.lists(st.sampled_from(["p", "q"]), max_size=40), st.data())
def test_aColumnWithMoreLabelsIsWrittenAsOneSampleAtATime(protocols: list[str], data: Any) -> None:
    count = len(protocols)
    groups = data.draw(
        st.lists(st.sampled_from(["", "g", 'we"ird']), min_size=count, max_size=count)
    )
    rest = list(zip(protocols, groups, strict=True))
    column = _Column(names(len(rest)), [1.0] * len(rest), rest)
    samples = [((n, *r), 1.0) for n, r in zip(names(len(rest)), rest, strict=True)]
    assert parsed(written(_writeColumn, INFO, column)) == parsed(oneAtATime(INFO, samples))


@given(st.lists(st.floats(min_value=0.0, max_value=5000.0), max_size=60))
def test_microsecondsAreWrittenWithSixDecimals(seconds: list[float]) -> None:
    """
    RTTs in microseconds, below a second or not: written with six decimals,
    which parse to exactly the values the column gives the registry.
    """
    micros = _micros(seconds)
    assert micros is not None
    values = [m / 1e6 for m in micros]
    column = _Column(names(len(seconds)), values, micros=micros)
    text = written(_writeColumn, RTT, column)
    lines = text.splitlines()
    assert len(lines) == len(seconds)
    for line, name, value, second in zip(lines, names(len(seconds)), values, seconds, strict=True):
        head, number = line.split(" ")
        assert head == f'netsupervisor_heartbeat_last_rtt_seconds{{connection="{name}"}}'
        assert len(number.split(".")[1]) == 6
        assert float(number) == value
        assert abs(value - second) <= 5e-7 + 1e-12 * second


def test_microsecondsAreNotUsedBeyondWhatTheyCanSay() -> None:
    """
    Negative, infinite, NaN or huge values are not written in microseconds
    (the column keeps them as they are, written as Go writes floats).
    """
    assert _micros([]) == []
    assert _micros([0.0, 0.0000004, 0.0000005, 999_999.9999994]) == [0, 0, 0, 999_999_999_999]
    for bad in (-0.5, float("inf"), float("nan"), 1e6):
        assert _micros([0.25, bad]) is None
        assert _micros([bad, 0.25]) is None


@given(
    st.lists(st.sampled_from(STATES), max_size=120)
    | st.integers(0, 120).flatmap(lambda n: st.just(["ESTABLISHED"] * n))
)
def test_aOneHotColumnIsEveryLineOfEverySeries(states: list[str]) -> None:
    """
    By value, then by series: the same lines as block by block (series by
    series), in that order, one 1 for each series.
    """
    column = _Column(names(len(states)), states)
    text = written(_writeOneHot, STATE, column)
    samples = [((name,), state) for name, state in zip(names(len(states)), states, strict=True)]
    reference = "".join(_oneHotLines(STATE, samples, _Text(_Pairs("connection"))))
    assert sorted(text.splitlines()) == sorted(reference.splitlines())
    lines = text.splitlines()
    order = [line.split('state="')[1].split('"')[0] for line in lines]
    assert order == [state for state in STATES for _ in states]
    assert sum(line.endswith(" 1.0") for line in lines) == len(states)


def test_aColumnOfTheWrongLengthIsAnError() -> None:
    """
    A column whose labels and values differ in length is a bug: it is
    said, not written short.
    """
    for values in ([0] * 3, [0, 1, 2]):
        with pytest.raises(ValueError):
            _writeColumn([], GAUGE, _Column(names(4), values), _Text(_Pairs("connection")))
