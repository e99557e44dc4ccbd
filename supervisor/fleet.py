"""
What the connections of one process share when they recover: the circuit
breakers of their targets and the global connect budget (L{Fleet}), and each
connection's way through them (L{Gate}).

An attempt is admitted in two steps: the breaker of its target (held while
it is open, released by its probe or its ramp), then the budget (held until
a token is due). The connection's machine asks once, in its ADMITTING state,
and is told the outcome as inputs: C{held(kind)} while it waits, then
C{admitted(cause)}.
"""

from __future__ import annotations

import random
from typing import Protocol

from supervisor.breaker import Breaker
from supervisor.budget import ConnectBudget
from supervisor.scheduler import Scheduler
from supervisor.spec import ConnectionSpec, SupervisorSpec
from supervisor.states.records import BreakerState, Cause, Held


class Admissions(Protocol):
    """
    The inputs of a connection's machine that its gate gives.
    """

    def held(self, kind: Held) -> None:
        "The attempt waits for the breaker or the budget."

    def admitted(self, cause: Cause) -> None:
        "The attempt may go now."


def breakerKey(spec: ConnectionSpec) -> str | None:
    """
    What the connections sharing C{spec}'s breaker have in common: its
    endpoint (C{scope = "endpoint"}), its name (C{"connection"}), or
    nothing (C{"off"}: L{None}).

    A connection with several endpoints has one breaker for all of them,
    shared with the connections that list the same endpoints (in any order):
    it opens only when attempts fail across the list with no success
    between them, which is when failing over cannot help.
    """
    scope = spec.breaker.scope
    if scope == "endpoint":
        targets = spec.targets
        if len(targets) == 1:
            return "endpoint " + targets[0]
        return "endpoint " + "\n".join(sorted(targets))
    if scope == "connection":
        return f"connection {spec.name}"
    return None


class Fleet:
    """
    The breakers (by target) and the connect budget of one process.

    @ivar budget: the global connect budget.
    """

    def __init__(
        self, scheduler: Scheduler, rng: random.Random, budget: SupervisorSpec | None = None
    ) -> None:
        self._scheduler = scheduler
        self._rng = rng
        self._breakers: dict[str, Breaker] = {}
        self.budget = ConnectBudget(budget or SupervisorSpec(), scheduler)

    @property
    def breakers(self) -> list[Breaker]:
        """
        Every breaker in use.
        """
        return list(self._breakers.values())

    def gate(self, spec: ConnectionSpec, admissions: Admissions) -> Gate:
        """
        A new connection's way through this fleet.
        """
        return Gate(self, spec, admissions)

    def join(self, spec: ConnectionSpec) -> Breaker | None:
        """
        The breaker of C{spec}'s target (made on first use), counting one
        more member; L{None} when its breaker is off.
        """
        key = breakerKey(spec)
        if key is None:
            return None
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(key, spec.breaker, self._scheduler, self._rng)
        elif breaker.spec is not spec.breaker and breaker.spec != spec.breaker:
            # The newest settings of a shared target apply to all its members.
            breaker.retune(spec.breaker)
        breaker.members += 1
        return breaker

    def leave(self, breaker: Breaker) -> None:
        """
        One member fewer; the last one out forgets the breaker.
        """
        breaker.members -= 1
        if breaker.members <= 0 and self._breakers.get(breaker.key) is breaker:
            del self._breakers[breaker.key]
            breaker.retire()


class Gate:
    """
    One connection's way through its breaker and the budget, and what it
    reports to the breaker about its attempts.
    """

    __slots__ = ("_admissions", "_breaker", "_closed", "_fleet", "_passed", "_waiting")

    def __init__(self, fleet: Fleet, spec: ConnectionSpec, admissions: Admissions) -> None:
        self._fleet = fleet
        self._admissions = admissions
        self._breaker = fleet.join(spec)
        # The cause of the request waiting for the breaker or the budget.
        self._waiting: Cause | None = None
        # The breaker's count of openings when it let the waiting request
        # through: if it opens again while the request waits for a budget
        # token, the request asks it again.
        self._passed = 0
        self._closed = False

    @property
    def breakerState(self) -> BreakerState | None:
        """
        The state of this connection's breaker; L{None} when it has none.
        """
        return None if self._breaker is None else self._breaker.state

    def retune(self, spec: ConnectionSpec) -> None:
        """
        The connection's breaker settings changed: move to the breaker they
        name (the same one, retuned, when the target is the same).
        """
        if self._closed:
            return
        old, new = self._breaker, self._fleet.join(spec)
        waiting = self._waiting
        moved = old is not new
        if moved:
            # Leave the old breaker whatever this connection was to it (held,
            # its probe, a released attempt): the attempt in flight, if any,
            # is reported to the new one.
            self.withdraw()
        if old is not None:
            self._fleet.leave(old)
        self._breaker = new
        if moved and waiting is not None:
            self.request(waiting)

    def request(self, cause: Cause) -> None:
        """
        Ask for an attempt; the answer comes as the connection's inputs.
        """
        self._waiting = cause
        if self._breaker is not None:
            passed = self._ask(self._breaker, cause)
            if passed is None:
                return
            cause = passed
        self._budget(cause)

    def release(self, cause: Cause) -> None:
        """
        The breaker lets this attempt go (Ticket): on to the budget.
        """
        assert self._breaker is not None
        self._passed = self._breaker.openings
        self._budget(cause)

    def grant(self, cause: Cause) -> bool:
        """
        The budget's token is this attempt's (Grantee): false if the attempt
        does not go after all.
        """
        breaker = self._breaker
        if breaker is not None and breaker.openings != self._passed:
            # The breaker opened while this attempt waited for its token:
            # it asks the breaker again, and goes with this token if it may.
            assert self._waiting is not None
            passed = self._ask(breaker, self._waiting)
            if passed is None:
                return False
            cause = passed
        self._go(cause)
        return True

    def withdraw(self) -> None:
        """
        The connection no longer waits (it closed or moved on): leave the
        breaker's and the budget's queues.
        """
        self._waiting = None
        if self._breaker is not None:
            self._breaker.withdraw(self)
        self._fleet.budget.withdraw(self)

    def failed(self, overloaded: bool) -> None:
        """
        The attempt failed; C{overloaded}: the peer pushed back.
        """
        if self._breaker is not None:
            self._breaker.failed(self, overloaded)

    def succeeded(self) -> None:
        """
        The attempt succeeded.
        """
        if self._breaker is not None:
            self._breaker.succeeded(self)

    def lost(self) -> None:
        """
        The ESTABLISHED connection was lost (by the peer's doing or the
        network's).
        """
        if self._breaker is not None:
            self._breaker.lost(self)

    def close(self) -> None:
        """
        The connection is CLOSED for good: leave everything.
        """
        self.withdraw()
        self._closed = True
        if self._breaker is not None:
            self._fleet.leave(self._breaker)
            self._breaker = None

    def _ask(self, breaker: Breaker, cause: Cause) -> Cause | None:
        """
        Ask C{breaker}: the cause to attempt with now, or L{None} when it
        holds the request (it releases it later).
        """
        closed = breaker.state == "closed"
        if not breaker.admit(self):
            self._admissions.held("breaker")
            return None
        self._passed = breaker.openings
        # An open breaker whose probe is due lets the first to ask go.
        return cause if closed else Cause("probe")

    def _budget(self, cause: Cause) -> None:
        if self._fleet.budget.take(self, cause):
            self._go(cause)
        else:
            self._admissions.held("budget")

    def _go(self, cause: Cause) -> None:
        self._waiting = None
        self._admissions.admitted(cause)
