"""
The global connect budget: a token bucket that every attempt of every
connection of a process passes through (the first attempts included).
Attempts that find no token wait in the order they asked; each is let go
when a token is due.
"""

from __future__ import annotations

from typing import Protocol

from supervisor.scheduler import Scheduler, Timer
from supervisor.spec import SupervisorSpec
from supervisor.states.records import Cause

WHOLE = 1 - 1e-9
"""A whole token, give or take the rounding of C{elapsed * rate}: a token
due at a time is there at that time, not one scheduler wake-up later."""


class Grantee(Protocol):
    """
    One connection's request to attempt, waiting for a token.
    """

    def grant(self, cause: Cause) -> bool:
        """
        A token is this request's: the attempt may go. Return whether it
        went (false: something else holds it now, and the token goes back).
        """


class ConnectBudget:
    """
    C{connect_rate} attempts per second across all connections, in bursts of
    at most C{connect_burst}.

    @ivar waiting: requests waiting for a token, in order (a dict for O(1)
        withdrawal).
    """

    def __init__(self, spec: SupervisorSpec, scheduler: Scheduler) -> None:
        self._spec = spec
        self._scheduler = scheduler
        self._tokens = float(spec.connect_burst)
        self._refilled = scheduler.now()
        self._timer: Timer | None = None
        self.waiting: dict[Grantee, Cause] = {}

    @property
    def spec(self) -> SupervisorSpec:
        return self._spec

    def retune(self, spec: SupervisorSpec) -> None:
        """
        Apply new settings: the tokens in hand are kept (up to the new
        burst); a budget turned off lets every waiting request go.
        """
        self._refill()
        self._spec = spec
        self._tokens = min(self._tokens, float(spec.connect_burst))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._serve()

    def take(self, grantee: Grantee, cause: Cause) -> bool:
        """
        A token for C{grantee}'s attempt now (true), or it waits its turn
        (false; its C{grant} is called when the token is due).
        """
        if not self._spec.budgeted:
            return True
        self._refill()
        if not self.waiting and self._tokens >= WHOLE:
            self._tokens -= 1
            return True
        self.waiting[grantee] = cause
        self._arm()
        return False

    def withdraw(self, grantee: Grantee) -> None:
        """
        C{grantee} no longer waits.
        """
        removed = self.waiting.pop(grantee, None) is not None
        if removed and not self.waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refill(self) -> None:
        now = self._scheduler.now()
        spec = self._spec
        if spec.budgeted:
            self._tokens = min(
                float(spec.connect_burst), self._tokens + (now - self._refilled) * spec.connect_rate
            )
        self._refilled = now

    def _arm(self) -> None:
        if self._timer is None and self.waiting:
            delay = max(0.0, (1 - self._tokens) / self._spec.connect_rate)
            self._timer = self._scheduler.callLater(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self._serve()

    def _serve(self) -> None:
        self._refill()
        enabled = self._spec.budgeted
        while self.waiting and (not enabled or self._tokens >= WHOLE):
            grantee = next(iter(self.waiting))
            cause = self.waiting.pop(grantee)
            if enabled:
                self._tokens -= 1
            if not grantee.grant(cause) and enabled:
                # Not used (its breaker opened meanwhile): the next may have it.
                self._tokens += 1
        if enabled:
            self._arm()
