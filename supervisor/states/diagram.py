"""
The state diagram of the connection machine, drawn from the machine itself.

L{dot} reads every transition of L{ConnectionMachine} and returns Graphviz
DOT text: one cluster per user-visible state holding the internal states
that map to it, one edge per (state, input, next state), self-loops
included, the initial state marked by an arrow from a point and terminal
states (those with no way out) drawn with a double border. The text is
sorted, so the same machine always gives the same bytes.

Regenerate the committed diagram with::

    python -m supervisor.states.diagram            # docs/states.dot and docs/states.svg
    python -m supervisor.states.diagram --check    # exit 1 if docs/states.dot is stale

The SVG needs Graphviz's C{dot} program (Debian: C{apt-get install graphviz});
without it only the DOT file is written.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from supervisor.states.core import StateData
from supervisor.states.machine import ConnectionMachine
from supervisor.states.records import STATES, State

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "states.dot"
"""Where the committed diagram lives in a source checkout."""

Edge = tuple[str, str, str]
"""One transition: (internal state, input name, next internal state)."""


def _dataClasses(root: type[StateData] = StateData) -> Iterator[type[StateData]]:
    for cls in root.__subclasses__():
        yield cls
        yield from _dataClasses(cls)


def visibleStates() -> dict[str, State]:
    """
    The user-visible state each internal state maps to, read from the
    C{internal} and C{state} class attributes of the state-data classes
    (L{StateData} subclasses), which are what the running code reports.

    @raise ValueError: if a state of the machine has no data class, or two
        data classes disagree about one internal state.
    """
    mapping: dict[str, State] = {}
    for cls in _dataClasses():
        internal = getattr(cls, "internal", None)
        visible = getattr(cls, "state", None)
        if internal is None or visible is None:
            continue
        if mapping.setdefault(internal, visible) != visible:
            raise ValueError(
                f"internal state {internal} maps to both {mapping[internal]} and {visible}"
            )
    missing = sorted(internalStates() - mapping.keys())
    if missing:
        raise ValueError(f"no StateData class declares internal state(s) {', '.join(missing)}")
    return {name: mapping[name] for name in sorted(internalStates())}


def automaton() -> tuple[str, list[Edge]]:
    """
    The machine's initial state and all its transitions, sorted.
    """
    automaton = ConnectionMachine.__automat_automaton__
    edges = sorted(
        {(old.name, inputName, new.name) for old, inputName, new, _ in automaton.allTransitions()}
    )
    return automaton.initialState.name, edges


def internalStates() -> set[str]:
    """
    The names of all states of the machine.
    """
    initial, edges = automaton()
    return {initial} | {old for old, _, _ in edges} | {new for _, _, new in edges}


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def dot() -> str:
    """
    The connection machine as Graphviz DOT text.
    """
    initial, edges = automaton()
    visible = visibleStates()
    exits = {old for old, _, new in edges if old != new}
    lines = [
        "// The connection state machine, generated from",
        "// supervisor.states.machine.ConnectionMachine by",
        "// `python -m supervisor.states.diagram`. Do not edit by hand.",
        "//",
        "// Clusters are the user-visible states; boxes inside them are the",
        "// machine's internal states; edges are labelled with the input that",
        "// causes them. Dashed self-loops: inputs a state accepts without leaving it.",
        "// States are laid out left to right in the order of records.STATES.",
        "digraph ConnectionMachine {",
        '    graph [rankdir=LR, fontname="Helvetica", fontsize=12, nodesep=0.5, ranksep=0.9];',
        '    node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        "",
        '    "__start" [shape=point, width=0.15, label=""];',
        f"    {_quote('__start')} -> {_quote(initial)};",
    ]
    for shown in STATES:
        members = [name for name, maps in visible.items() if maps == shown]
        if not members:
            continue
        lines += [
            "",
            f"    subgraph {_quote('cluster_' + shown)} {{",
            f"        label={_quote(shown)};",
            '        style="rounded,filled"; fillcolor="#eef3fa"; color="#6b8cc7"; labelloc=b;',
        ]
        for name in members:
            attributes = []
            if name != shown:
                # "\\n" is DOT's line break inside a label.
                attributes.append(f'label="{name}\\nshown as {shown}"')
            if name not in exits:
                attributes.append("peripheries=2")
            suffix = f" [{', '.join(attributes)}]" if attributes else ""
            lines.append(f"        {_quote(name)}{suffix};")
        lines.append("    }")
    lines.append("")
    order = {name: STATES.index(shown) for name, shown in visible.items()}
    for old, inputName, new in edges:
        style = ""
        if old == new:
            style = ", style=dashed, color=gray50, fontcolor=gray40"
        elif order[new] < order[old]:
            # Lay the states out in the order of STATES; edges going back
            # (to IDLE, mostly) do not pull their target to the right.
            style = ", constraint=false"
        lines.append(f"    {_quote(old)} -> {_quote(new)} [label={_quote(inputName)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """
    Write the DOT file (and the SVG, if Graphviz is installed), or with
    C{--check} report whether the committed DOT file is current.
    """
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.states.diagram",
        description="Draw the connection state machine from the machine itself.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the DOT file differs from the machine",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="the DOT file; the SVG goes next to it (default: %(default)s)",
    )
    options = parser.parse_args(argv)
    path: Path = options.output
    text = dot()
    if options.check:
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(
                f"{path} is out of date; run: python -m supervisor.states.diagram",
                file=sys.stderr,
            )
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    graphviz = shutil.which("dot")
    if graphviz is None:
        print("Graphviz's `dot` is not installed; the SVG was not updated", file=sys.stderr)
        return 0
    svg = path.with_suffix(".svg")
    subprocess.run([graphviz, "-Tsvg", "-o", str(svg)], input=text.encode(), check=True)
    print(f"wrote {svg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
