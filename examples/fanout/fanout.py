"""
Fan messages out over a pool of redis connections, with netsupervisor as a
library: each message is pushed (C{RPUSH}) onto one of a few lists, by
whichever member of the pool has the fewest commands in flight, and every
push ends in exactly one way, which the program counts.

    python examples/fanout/fanout.py --config examples/fanout/fanout.toml \\
        --count 10000 [--pool cache] [--lists 4] [--window 500]

At most C{--window} pushes are in flight or waiting at once (the program's
own flow control, under the pool's bounded queue). It prints how the pushes
ended, drains the connections, and exits 0 only if every push ended ok.
A push that ends C{lost} may or may not be in its list: the connection went
away with it in flight, and it is not sent again.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.task import react
from twisted.python.failure import Failure

from plugins.redis import command
from supervisor import OperationError, Supervisor, loadConfig


def ending(outcome: object) -> str:
    """
    How one push ended: C{ok}, one of the supervisor's endings (C{full},
    C{timeout}, C{closed}, C{lost}), or C{error} (redis refused it).
    """
    if not isinstance(outcome, Failure):
        return "ok"
    if isinstance(outcome.value, OperationError):
        return outcome.value.result
    return "error"


async def fanOut(reactor: Any, options: argparse.Namespace) -> None:
    supervisor = Supervisor(loadConfig(options.config), reactor)
    supervisor.startService()
    pool = supervisor.pool(options.pool)
    window = DeferredSemaphore(options.window)
    endings: Counter[str] = Counter()

    def push(index: int) -> Deferred[object]:
        key = f"fanout:{index % options.lists}"
        return command(pool, "RPUSH", key, f"message {index}")

    def count(outcome: object) -> None:
        endings[ending(outcome)] += 1

    pushes = [window.run(push, index).addBoth(count) for index in range(options.count)]
    try:
        for pushed in pushes:
            await pushed
    finally:
        await supervisor.stopService()
    print(" ".join(f"{result}={n}" for result, n in sorted(endings.items())))
    if endings["ok"] != options.count:
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--config", required=True, help="the TOML file, with a [[pool]]")
    parser.add_argument("--pool", default="cache", help="the pool's name (default cache)")
    parser.add_argument("--count", type=int, default=10_000, help="messages to push")
    parser.add_argument("--lists", type=int, default=4, help="lists to spread them over")
    parser.add_argument("--window", type=int, default=500, help="pushes in flight at most")
    options = parser.parse_args(argv)

    def run(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(fanOut(reactor, options))

    react(run)


if __name__ == "__main__":
    main(sys.argv[1:])
