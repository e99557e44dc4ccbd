"""
Automat machines, looked up by index, their inputs run by a leaner loop.

Automat finds the transition for an input by scanning every transition of
the machine and comparing (state, input) pairs: for the connection machine's
ninety-odd transitions that costs about 15 us per input, and a heartbeat's
pong, or a frame that proves the peer alive, is an input. L{indexed} gives a
built machine a dictionary from (state, input) to (next state, outputs),
built once, so that every input costs one lookup.

Given the machine's input protocol as well, it also replaces the methods of
the machine's runtime type (one per input) with ones that do what Automat's
do (the same postponement of an input given while another is being handled,
the same C{RuntimeError} when that input wants a result, the same outputs in
the same order with the same arguments, the same data assertion) from a
table of plain calls: Automat's own go through three calls per output
(building an argument list each time), which cProfile put at about 15% of
a connection's start-up (three inputs on the way to ESTABLISHED, two more
to its target's breaker). A machine being traced (C{setTrace}) takes
Automat's own path.

Behaviour is unchanged: an input a state does not accept still raises
C{NoTransition}; if Automat's internals are not as expected, the machine is
left as it is (slower, still right).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from automat import NoTransition

M = TypeVar("M")

BUSY = "__automat_postponed__"
"""The attribute of an Automat machine's inputs that is a list while it
handles an input (and L{None} otherwise)."""


def idle(inputs: object) -> bool:
    """
    Whether the machine of C{inputs} handles no input now: an input given
    now would be handled at once, not postponed. False if Automat does not
    mark it as this module expects.
    """
    return getattr(inputs, BUSY, ()) is None


# What a step of an input's plan calls: the data factory of the state
# entered (its result becomes the state's data), a behaviour given the data
# of the state left, or one that takes no data.
_DATA, _WITH_DATA, _WITHOUT = 0, 1, 2

Step = tuple[int, Callable[..., Any], Callable[[object], None]]


def _noAssertion(data: object) -> None:
    "A data factory's step checks nothing."


def indexed(machine: M, inputs: type | None = None) -> M:
    """
    Index the transitions of C{machine} (a built C{TypeMachine}) and return
    it; with its input protocol C{inputs}, also run its inputs from the
    index (see the module's docstring). If Automat's internals are not as
    expected, the machine is returned as it is.
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
    if inputs is not None:
        _runFromTable(machine, inputs, table)
    return machine


def _plan(outputs: Sequence[object]) -> tuple[Step, ...] | None:
    """
    The steps that run C{outputs} as Automat would, or L{None} for an
    output of a kind this module does not know.
    """
    try:
        from automat._typed import DataOutput, MethodOutput
    except ImportError:  # another Automat: its own path
        return None

    steps: list[Step] = []
    for output in outputs:
        if type(output) is DataOutput:
            steps.append((_DATA, output.dataFactory, _noAssertion))
        elif type(output) is MethodOutput:
            kind = _WITH_DATA if output.requiresData else _WITHOUT
            steps.append((kind, output.method, output._assertion))
        else:
            return None
    return tuple(steps)


def _runFromTable(
    machine: object,
    inputs: type,
    table: dict[tuple[object, object], tuple[object, Sequence[object]]],
) -> None:
    runtime: Any = getattr(machine, "__automat_type__", None)
    if runtime is None:
        return
    plans: dict[tuple[object, object], tuple[object, tuple[Step, ...]]] = {}
    for key, (new, outputs) in table.items():
        steps = _plan(outputs)
        if steps is None:
            return
        plans[key] = (new, steps)
    # By the identity of the state: a state is a frozen dataclass whose hash
    # is computed in Python at every lookup; the machine's states are the
    # very objects of its table (they live as long as the machine).
    byIdentity = {(id(old), symbol): plan for (old, symbol), plan in plans.items()}
    symbols = {symbol for _, symbol in table}
    replacements: dict[str, Callable[..., object]] = {}
    for name in symbols:
        if not isinstance(name, str):
            return
        original = vars(runtime).get(name)
        method = getattr(inputs, name, None)
        if original is None or method is None:
            return
        try:
            returns = inspect.signature(method, eval_str=True).return_annotation
        except (NameError, TypeError, ValueError):
            return
        replacements[name] = _implementation(name, original, returns, method, plans, byIdentity)
    for name, implementation in replacements.items():
        setattr(runtime, name, implementation)


def _implementation(
    name: str,
    original: Callable[..., object],
    returns: object,
    method: Callable[..., object],
    plans: dict[tuple[object, object], tuple[object, tuple[Step, ...]]],
    byIdentity: dict[tuple[int, object], tuple[object, tuple[Step, ...]]],
) -> Callable[..., object]:
    lookup, lookupEqual = byIdentity.get, plans.get
    returnsNone = returns is None

    def implementation(self: Any, *args: object, **kwargs: object) -> object:
        postponed = self.__automat_postponed__
        if postponed is not None:
            # Given while another input is being handled: in turn, after it.
            if not returnsNone:
                # Automat's own words.
                raise RuntimeError(
                    f"attempting to reentrantly run {method.__qualname__} "
                    f"but it wants to return {returns!r} not None"
                )
            postponed.append(lambda: implementation(self, *args, **kwargs))
            return None
        transitioner = self.__automat_transitioner__
        if transitioner._tracer is not None:
            return original(self, *args, **kwargs)
        state = transitioner._state
        found = lookup((id(state), name))
        if found is None:
            # A state equal to one of the table's without being it.
            found = lookupEqual((state, name))
            if found is None:
                raise NoTransition(state=state, symbol=name)
        postponed = self.__automat_postponed__ = []
        try:
            transitioner._state, steps = found
            core = self.__automat_core__
            dataAtStart = self.__automat_data__
            result: object = None
            for kind, call, assertion in steps:
                if kind == _DATA:
                    result = self.__automat_data__ = call(self, core, *args, **kwargs)
                elif kind == _WITH_DATA:
                    assertion(dataAtStart)
                    result = call(self, core, dataAtStart, *args, **kwargs)
                else:
                    result = call(self, core, *args, **kwargs)
        finally:
            self.__automat_postponed__ = None
        while postponed:
            postponed.pop(0)()
        return result

    implementation.__qualname__ = implementation.__name__ = f"<implementation for {method}>"
    return implementation
