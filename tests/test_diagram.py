"""
The state diagram in docs/ is generated from the machine, is current, and
shows every state, input and required transition.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from supervisor.states.core import Inputs
from supervisor.states.diagram import automaton, dot, internalStates, main, visibleStates
from supervisor.states.machine import ConnectionMachine
from supervisor.states.records import STATES

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "states.dot"
STATES_DOC = ROOT / "docs" / "states.md"

REQUIRED = [
    ("IDLE", "CONNECTING"),
    ("CONNECTING", "ESTABLISHED"),
    ("CONNECTING", "IDLE"),
    ("CONNECTING", "CLOSED"),
    ("ESTABLISHED", "IDLE"),
    ("ESTABLISHED", "CLOSING"),
    ("CLOSING", "CLOSED"),
    ("CLOSING", "IDLE"),
    ("IDLE", "CLOSED"),
]


def inputNames() -> set[str]:
    """
    The inputs, read from the Inputs protocol (and the attempt's events it
    takes on) rather than from the machine.
    """
    return {
        name
        for name, member in inspect.getmembers(Inputs, inspect.isfunction)
        if not name.startswith("_")
    }


def visibleEdges() -> set[tuple[str, str]]:
    visible = visibleStates()
    _, edges = automaton()
    return {(visible[old], visible[new]) for old, _, new in edges}


def test_committedDiagramIsCurrent() -> None:
    """
    docs/states.dot is exactly what the machine draws today; if this fails,
    run C{python -m supervisor.states.diagram} and commit the result.
    """
    assert COMMITTED.read_text(encoding="utf-8") == dot()


def test_deterministic() -> None:
    """
    The same machine always gives the same text, edges sorted.
    """
    text = dot()
    assert text == dot()
    edge = re.compile(r'^    "(\w+)" -> "(\w+)" \[label="(\w+)"', re.MULTILINE)
    drawn = [(old, name, new) for old, new, name in edge.findall(text)]
    assert drawn == sorted(drawn)
    _, edges = automaton()
    assert drawn == edges


def test_everyStateAppears() -> None:
    """
    Every internal state of the machine is a node of the diagram.
    """
    text = dot()
    states = {state.name for state in ConnectionMachine.__automat_automaton__.states()}
    assert states == internalStates()
    assert len(states) == 13
    for name in states:
        assert re.search(rf'^\s+"{name}"( \[.*\])?;$', text, re.MULTILINE), name


def test_everyInputAppears() -> None:
    """
    Every input of the Inputs protocol is used by the machine and labels an
    edge of the diagram.
    """
    text = dot()
    names = inputNames()
    assert names == ConnectionMachine.__automat_automaton__.inputAlphabet()
    for name in names:
        assert f'[label="{name}"' in text, name


def test_everyTransitionIsAnEdge() -> None:
    """
    One edge per (state, input, next state), self-loops included.
    """
    text = dot()
    _, edges = automaton()
    assert any(old == new for old, _, new in edges)
    for old, inputName, new in edges:
        assert f'"{old}" -> "{new}" [label="{inputName}"' in text


def test_initialStateMarked() -> None:
    initial, _ = automaton()
    assert initial == "INIT"
    assert '"__start" -> "INIT";' in dot()


def test_mapping() -> None:
    """
    Internal states map to the visible ones as docs/states.md says, and each
    visible state is reachable from some internal state.
    """
    assert visibleStates() == {
        "CLOSED": "CLOSED",
        "CLOSING": "CLOSING",
        "CONNECTING": "CONNECTING",
        "ESTABLISHED": "ESTABLISHED",
        "IDLE": "IDLE",
        "INIT": "IDLE",
        "RESTARTING": "IDLE",
        "FLAPPING": "IDLE",
        "ADMITTING": "IDLE",
        "SECURING": "CONNECTING",
        "SECURING_READY": "CONNECTING",
        "HANDSHAKING": "CONNECTING",
        "ROTATING": "CLOSING",
    }
    assert set(visibleStates().values()) == set(STATES)
    text = dot()
    assert '"INIT" [label="INIT\\nshown as IDLE"];' in text
    assert '"ROTATING" [label="ROTATING\\nshown as CLOSING"];' in text


@pytest.mark.parametrize(("old", "new"), REQUIRED)
def test_requiredTransition(old: str, new: str) -> None:
    """
    Each transition the spec requires exists between the visible states.
    """
    assert (old, new) in visibleEdges()


def test_closingToIdleOnlyForRotation() -> None:
    """
    CLOSING -> IDLE happens only from ROTATING, which only C{rotate} (an
    operator's reconnect) and C{expired} (the end of a lifetime) enter.
    """
    visible = visibleStates()
    _, edges = automaton()
    sources = {old for old, _, new in edges if visible[old] == "CLOSING" and visible[new] == "IDLE"}
    assert sources == {"ROTATING"}
    entries = {name for old, name, new in edges if new == "ROTATING" and old != "ROTATING"}
    assert entries == {"rotate", "expired"}


def test_closedIsTerminal() -> None:
    """
    No input leaves CLOSED, and the diagram draws it as terminal.
    """
    _, edges = automaton()
    assert {new for old, _, new in edges if old == "CLOSED"} == {"CLOSED"}
    assert '"CLOSED" [peripheries=2];' in dot()


def test_docsTransitionTableMatchesMachine() -> None:
    """
    The transition table of docs/states.md lists exactly the machine's
    state-changing transitions.
    """
    row = re.compile(r"^\| ([A-Z_]+) \| `(\w+)` \| ([A-Z_]+) \|", re.MULTILINE)
    documented = set(row.findall(STATES_DOC.read_text(encoding="utf-8")))
    _, edges = automaton()
    assert documented == {edge for edge in edges if edge[0] != edge[2]}


def test_checkCommand(tmp_path: Path) -> None:
    """
    C{--check} exits 1 for a missing or stale file and 0 for a current one.
    """
    target = tmp_path / "states.dot"
    assert main(["--check", "--output", str(target)]) == 1
    target.write_text(dot() + "// edited\n", encoding="utf-8")
    assert main(["--check", "--output", str(target)]) == 1
    target.write_text(dot(), encoding="utf-8")
    assert main(["--check", "--output", str(target)]) == 0
