"""
Sharding one configuration across processes: which process owns which
connection.

Ownership is rendezvous (highest-random-weight) hashing on the connection's
name: every shard C{i} of C{N} gives the name a weight, a stable hash of
C{i} and the name, and the shard with the highest weight owns it. Going from
C{N} to C{N + 1} shards moves exactly the names for which the new shard
outweighs their old owner, about C{1 / (N + 1)} of them; no name moves
between two old shards. Dropping shard C{N - 1} moves only its own names.

The weight is the first 8 bytes, big-endian, of BLAKE2b over
C{b"%d\\x00%s" % (i, name.encode("utf-8"))}; ties (which need a 64-bit
collision) go to the lower index. It never depends on the process (Python's
own C{hash()} is salted per process), so that every shard and
C{netsupervisor-ctl} agree, on every host and version.
"""

from __future__ import annotations

import re
from hashlib import blake2b
from typing import Final

import attrs

from supervisor.options import quote

__all__ = ["MAX_SHARDS", "Shard", "ShardError", "owner", "weight"]

MAX_SHARDS: Final = 1024
"""The most shards a configuration may be split into."""

# Signed, so that "-1/3" gets a message about the index, not about the form;
# a few digits only, so that no huge number is ever converted.
_FORM = re.compile(r"(-?[0-9]{1,9})/(-?[0-9]{1,9})")


class ShardError(ValueError):
    """
    A shard was not written as C{I/N} with C{0 <= I < N <= MAX_SHARDS}.

    C{str()} says what was expected and what was found, in the words of a
    configuration error (C{expected ..., got ...}), without naming where
    the text came from: the caller adds that.
    """


def weight(index: int, name: str) -> int:
    """
    The weight shard C{index} gives the connection called C{name}.
    """
    key = b"%d\x00%s" % (index, name.encode("utf-8"))
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big")


def owner(name: str, count: int) -> int:
    """
    The index of the shard, out of C{count}, that owns the connection called
    C{name}.

    @raise ValueError: if C{count} is below 1.
    """
    if count < 1:
        raise ValueError(f"a shard count is at least 1, got {count}")
    best, bestWeight = 0, weight(0, name)
    for index in range(1, count):
        w = weight(index, name)
        if w > bestWeight:
            best, bestWeight = index, w
    return best


@attrs.frozen
class Shard:
    """
    One process's place in a sharded fleet: shard C{index} (from 0) of
    C{count}. C{Shard(0, 1)}, the default, owns every connection.

    @ivar index: this shard, from 0 to C{count - 1}.
    @ivar count: how many shards the configuration is split into.
    """

    index: int = 0
    count: int = 1

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"expected a shard count from 1 to {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ShardError(
                f"expected a shard index from 0 to {self.count - 1} "
                f"(shards count from 0), got {self.index}"
            )

    @classmethod
    def fromString(cls, text: str) -> Shard:
        """
        Parse C{"I/N"}: shard C{I} (from 0) of C{N}, like C{"0/4"}.

        @raise ShardError: for anything else, C{"4/4"}, C{"0/0"}, C{"-1/3"}
            and C{"a/b"} included.
        """
        found = _FORM.fullmatch(text)
        if found is None:
            raise ShardError(
                'expected I/N, a shard index and a shard count as whole numbers (like "0/4"), '
                f"got {quote(text)}"
            )
        index, count = int(found.group(1)), int(found.group(2))
        if not 1 <= count <= MAX_SHARDS:
            raise ShardError(
                f"expected a shard count N from 1 to {MAX_SHARDS} in I/N, got {quote(text)}"
            )
        if not 0 <= index < count:
            raise ShardError(
                f"expected a shard index I from 0 to {count - 1} in I/N (shards count from 0), "
                f"got {quote(text)}"
            )
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def sharded(self) -> bool:
        """
        Whether the configuration is split at all (more than one shard).
        """
        return self.count > 1

    def owns(self, name: str) -> bool:
        """
        Whether the connection called C{name} belongs to this shard.
        """
        return self.count == 1 or owner(name, self.count) == self.index
