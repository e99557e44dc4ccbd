"""
L{supervisor.automaton.indexed}: the same transitions as Automat's own scan,
looked up by index, and the same behaviour from its leaner input path.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import pytest
from automat import NoTransition, TypeMachineBuilder
from automat._core import Automaton
from hypothesis import given
from hypothesis import strategies as st

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


# The leaner input path: a toy machine with every kind of step (a data
# state's factory, behaviours with and without the data, a reentrant input,
# an input that returns a result), run by Automat's own path and by
# indexed(), gives the same calls, results and errors for any inputs.


class ToyInputs(Protocol):
    def go(self, n: int) -> None: ...
    def again(self) -> None: ...
    def ask(self) -> int: ...
    def stop(self) -> None: ...


@dataclass
class ToyCore:
    log: list[object] = field(default_factory=list)
    reenter: bool = False


@dataclass
class Running:
    n: int


def _running(inputs: ToyInputs, core: ToyCore, n: int) -> Running:
    core.log.append(("enter", n))
    if core.reenter:
        # Given while go() is handled: postponed until it is done.
        inputs.again()
    return Running(n)


def makeToy() -> object:
    b = TypeMachineBuilder(ToyInputs, ToyCore)
    idle = b.state("idle")
    running = b.state("running", _running)

    @idle.upon(ToyInputs.go).to(running)
    def start(inputs: ToyInputs, core: ToyCore, n: int) -> None:
        core.log.append(("start", n))

    @running.upon(ToyInputs.again).loop()
    def again(inputs: ToyInputs, core: ToyCore, data: Running) -> None:
        core.log.append(("again", data.n))
        data.n += 1

    @running.upon(ToyInputs.ask).loop()
    def ask(inputs: ToyInputs, core: ToyCore, data: Running) -> int:
        core.log.append(("ask", data.n))
        if core.reenter:
            inputs.ask()  # wants a result: refused while another input runs
        return data.n * 10

    @running.upon(ToyInputs.stop).to(idle)
    def stop(inputs: ToyInputs, core: ToyCore, data: Running) -> None:
        core.log.append(("stop", data.n))

    idle.upon(ToyInputs.ask).loop().returns(-1)
    return b.build()


def _play(machine: object, steps: list[tuple[str, bool]]) -> list[object]:
    core = ToyCore()
    toy = machine(core)  # type: ignore[operator]
    outcome: list[object] = []
    for name, reenter in steps:
        core.reenter = reenter
        try:
            if name == "go":
                outcome.append(toy.go(len(outcome)))
            else:
                outcome.append(getattr(toy, name)())
        except NoTransition:
            outcome.append("NoTransition")
        except RuntimeError as e:
            outcome.append(f"RuntimeError: {e}")
    return [outcome, core.log]


_STEPS = st.tuples(st.sampled_from(["go", "again", "ask", "stop"]), st.booleans())


@given(st.lists(_STEPS, max_size=30))
def test_theLeanerPathDoesWhatAutomatDoes(steps: list[tuple[str, bool]]) -> None:
    assert _play(indexed(makeToy(), ToyInputs), steps) == _play(makeToy(), steps)


def test_theLeanerPathIsTheOneInstalled() -> None:
    fast = indexed(makeToy(), ToyInputs)
    assert fast.__automat_type__.go.__module__ == "supervisor.automaton"  # type: ignore[attr-defined]
    plain = makeToy()
    assert plain.__automat_type__.go.__module__ != "supervisor.automaton"  # type: ignore[attr-defined]
    for name in ("start", "ready", "pong", "failed", "close"):
        method = getattr(ConnectionMachine.__automat_type__, name)  # type: ignore[attr-defined]
        assert method.__module__ == "supervisor.automaton"
    assert BreakerMachine.__automat_type__.admit.__module__ == "supervisor.automaton"  # type: ignore[attr-defined]


def test_aTracedMachineTakesAutomatsOwnPath() -> None:
    core = ToyCore()
    toy = indexed(makeToy(), ToyInputs)(core)  # type: ignore[operator]
    seen: list[tuple[str, str, str]] = []
    toy.__automat_transitioner__.setTrace(
        lambda old, symbol, new: seen.append((old.name, symbol, new.name))
    )
    toy.go(7)
    toy.stop()
    assert seen == [("idle", "go", "running"), ("running", "stop", "idle")]
    assert core.log == [("enter", 7), ("start", 7), ("stop", 7)]


def test_anOutputOfAnotherKindLeavesAutomatsOwnPath() -> None:
    plain = makeToy()
    transitions = plain.__automat_automaton__._transitions  # type: ignore[attr-defined]
    old, symbol, new, outputs = next(iter(transitions))
    transitions.discard((old, symbol, new, outputs))
    transitions.add((old, symbol, new, (*outputs, object())))
    before = dict(vars(plain.__automat_type__))  # type: ignore[attr-defined]
    indexed(plain, ToyInputs)
    assert vars(plain.__automat_type__)["go"] is before["go"]  # type: ignore[attr-defined]


def test_aStateEqualToTheTablesIsFoundToo() -> None:
    """
    The leaner path looks states up by identity (a state's hash is computed
    in Python); a state equal to one of the table's but not the same object
    (a dataclass copy) still finds its transitions, and an unknown state still raises.
    """
    core = ToyCore()
    toy = indexed(makeToy(), ToyInputs)(core)  # type: ignore[operator]
    transitioner = toy.__automat_transitioner__
    idle = transitioner._state
    transitioner._state = replace(idle)
    assert transitioner._state == idle and transitioner._state is not idle
    toy.go(3)
    assert core.log == [("enter", 3), ("start", 3)]
    transitioner._state = replace(idle, name="nowhere")
    with pytest.raises(NoTransition):
        toy.go(4)
