"""
Fake clocks for unit tests.
"""

from __future__ import annotations

from twisted.internet.task import Clock


class TurnClock(Clock):
    """
    A L{Clock} that runs, as the reactor does in one turn, only the calls
    due when it is advanced: a call made meanwhile, even due at once, waits
    for the next turn.
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        due = [call for call in self.calls if call.getTime() <= self.rightNow]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)
