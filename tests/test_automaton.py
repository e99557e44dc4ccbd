"""
L{supervisor.automaton.indexed}: the same transitions as Automat's own scan,
looked up by index.
"""

from __future__ import annotations

import pytest
from automat import NoTransition
from automat._core import Automaton

from supervisor.automaton import indexed
from supervisor.breaker import BreakerMachine
from supervisor.states.machine import ConnectionMachine, makeMachine


@pytest.mark.parametrize("machine", [ConnectionMachine, BreakerMachine])
def test_everyTransitionIsFoundAsAutomatWouldFindIt(machine: object) -> None:
    automaton = machine.__automat_automaton__  # type: ignore[attr-defined]
    transitions = automaton.allTransitions()
    assert transitions
    for old, symbol, new, outputs in transitions:
        found = automaton.outputForInput(old, symbol)
        assert found[0] is new
        assert list(found[1]) == list(outputs)
        assert Automaton.outputForInput(automaton, old, symbol) == (new, list(outputs))


def test_anInputAStateDoesNotAcceptStillRaises() -> None:
    automaton = ConnectionMachine.__automat_automaton__
    closed = next(new for _, _, new, _ in automaton.allTransitions() if new.name == "CLOSED")
    with pytest.raises(NoTransition):
        automaton.outputForInput(closed, "ready")


def test_aMachineOfAnotherShapeIsLeftAsItIs() -> None:
    class Other:
        pass

    other = Other()
    assert indexed(other) is other
    plain = makeMachine()
    assert "outputForInput" not in vars(plain.__automat_automaton__)
    assert "outputForInput" in vars(indexed(plain).__automat_automaton__)
