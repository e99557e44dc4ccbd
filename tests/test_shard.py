"""
Rendezvous sharding: every name has exactly one owner, adding a shard moves
only what the new shard takes, the hash is stable, and "I/N" parses strictly.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.shard import MAX_SHARDS, Shard, ShardError, owner, weight

# Connection names as the configuration allows them: [A-Za-z0-9_.:-]+.
NAMES = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-",
    min_size=1,
    max_size=40,
)
COUNTS = st.integers(min_value=1, max_value=64)
FLEET = [f"device-{k}" for k in range(2000)]


@given(NAMES, COUNTS)
def test_everyNameHasExactlyOneOwner(name: str, count: int) -> None:
    owners = [i for i in range(count) if Shard(i, count).owns(name)]
    assert owners == [owner(name, count)]


@given(NAMES, COUNTS)
def test_aNewShardTakesNamesOnlyFromTheOldOwners(name: str, count: int) -> None:
    before, after = owner(name, count), owner(name, count + 1)
    assert after in (before, count)


@given(NAMES, st.integers(min_value=2, max_value=64))
def test_droppingTheLastShardMovesOnlyItsNames(name: str, count: int) -> None:
    before, after = owner(name, count), owner(name, count - 1)
    if before != count - 1:
        assert after == before


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 16])
def test_growingByOneMovesAboutOneShareOfTheFleet(count: int) -> None:
    moved = [n for n in FLEET if owner(n, count) != owner(n, count + 1)]
    share = len(moved) / len(FLEET)
    assert abs(share - 1 / (count + 1)) <= 0.03, (count, share)
    assert all(owner(n, count + 1) == count for n in moved)


@pytest.mark.parametrize("count", [2, 4, 5, 10])
def test_sharesAreBalanced(count: int) -> None:
    sizes = [sum(Shard(i, count).owns(n) for n in FLEET) for i in range(count)]
    assert sum(sizes) == len(FLEET)
    for size in sizes:
        assert abs(size / len(FLEET) - 1 / count) <= 0.03, sizes


def test_theHashIsStable() -> None:
    """
    Processes of different versions, on different hosts, and
    netsupervisor-ctl must agree: these values may never change.
    """
    assert weight(0, "cache-1") == 0xAD357DBC968CC42B
    assert weight(3, "cache-1") == int.from_bytes(
        hashlib.blake2b(b"3\x00cache-1", digest_size=8).digest(), "big"
    ), "the weight is as docs/deploy.md spells it"
    names = ("cache-1", "cache-2", "db-1", "pool.0", "pool.1")
    assert [owner(n, 4) for n in names] == [1, 0, 3, 0, 0]
    assert owner("cache-1", 1) == 0


def test_theWeightDependsOnIndexAndName() -> None:
    assert weight(0, "a") != weight(1, "a")
    assert weight(0, "a") != weight(0, "b")
    # No ambiguity between an index's digits and a name's.
    assert weight(1, "2x") != weight(12, "x")


def test_oneShardOwnsEverything() -> None:
    assert Shard() == Shard(0, 1)
    assert all(Shard().owns(n) for n in FLEET[:50])
    assert not Shard().sharded
    assert Shard(0, 2).sharded


@given(
    st.integers(min_value=1, max_value=MAX_SHARDS).flatmap(
        lambda n: st.tuples(st.integers(min_value=0, max_value=n - 1), st.just(n))
    )
)
def test_parseRoundTrips(pair: tuple[int, int]) -> None:
    shard = Shard.fromString(f"{pair[0]}/{pair[1]}")
    assert (shard.index, shard.count) == pair
    assert Shard.fromString(str(shard)) == shard


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/0", 'expected a shard count N from 1 to 1024 in I/N, got "0/0"'),
        ("4/4", 'expected a shard index I from 0 to 3 in I/N (shards count from 0), got "4/4"'),
        ("-1/3", 'expected a shard index I from 0 to 2 in I/N (shards count from 0), got "-1/3"'),
        ("0/-2", 'expected a shard count N from 1 to 1024 in I/N, got "0/-2"'),
        ("1/2000", 'expected a shard count N from 1 to 1024 in I/N, got "1/2000"'),
        (
            "a/b",
            'expected I/N, a shard index and a shard count as whole numbers (like "0/4"), '
            'got "a/b"',
        ),
    ],
)
def test_parseRefusesWithAClearMessage(text: str, message: str) -> None:
    with pytest.raises(ShardError) as caught:
        Shard.fromString(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "text",
    ["", "1", "1/", "/2", "1/2/3", " 1/2", "1/2\n", "1 / 2", "+1/2", "1.0/2", "٣/4", "9" * 5000],
)
def test_parseRefusesAnythingButTwoPlainNumbers(text: str) -> None:
    with pytest.raises(ShardError) as caught:
        Shard.fromString(text)
    message = str(caught.value)
    assert message.startswith("expected I/N")
    assert "\n" not in message and len(message) < 200


def test_theValueChecksItself() -> None:
    with pytest.raises(ShardError):
        Shard(3, 3)
    with pytest.raises(ShardError):
        Shard(0, 0)
    with pytest.raises(ShardError):
        Shard(0, MAX_SHARDS + 1)
    with pytest.raises(ValueError):
        owner("a", 0)
