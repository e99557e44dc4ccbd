"""
Automat machines, looked up by index.

Automat finds the transition for an input by scanning every transition of
the machine and comparing (state, input) pairs: for the connection machine's
ninety-odd transitions that costs about 15 us per input, and a heartbeat's
pong, or a frame that proves the peer alive, is an input. L{indexed} gives a
built machine a dictionary from (state, input) to (next state, outputs),
built once, so that every input costs one lookup. Behaviour is unchanged: an
input a state does not accept still raises C{NoTransition}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from automat import NoTransition

M = TypeVar("M")


def indexed(machine: M) -> M:
    """
    Index the transitions of C{machine} (a built C{TypeMachine}) and return
    it. If Automat's internals are not as expected, the machine is returned
    as it is: slower, still right.
    """
    automaton: Any = getattr(machine, "__automat_automaton__", None)
    transitions = getattr(automaton, "_transitions", None)
    if automaton is None or not isinstance(transitions, set):
        return machine
    table: dict[tuple[object, object], tuple[object, Sequence[object]]] = {
        (old, symbol): (new, tuple(outputs)) for old, symbol, new, outputs in transitions
    }

    def outputForInput(inState: object, inputSymbol: object) -> tuple[object, Sequence[object]]:
        try:
            return table[inState, inputSymbol]
        except KeyError:
            raise NoTransition(state=inState, symbol=inputSymbol) from None

    automaton.outputForInput = outputForInput
    return machine
