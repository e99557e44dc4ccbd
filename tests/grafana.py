"""
The Grafana dashboard of C{docs/grafana/netsupervisor.json}, read as Grafana
reads it: its panels (rows included), their PromQL targets, its template
variables, and the substitution Grafana makes before a query reaches
Prometheus. Shared by the structure test and the test against a real
Prometheus, so that both see every expression of the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "netsupervisor.json"

BUILTINS = frozenset({"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s"})
"""Grafana's own variables that the dashboard may use."""

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*\S)\s*,\s*)?(\w+)\s*\)\s*$", re.DOTALL)

Dashboard = Mapping[str, Any]


def load() -> Dashboard:
    """
    The dashboard, parsed.
    """
    with DASHBOARD.open() as f:
        dashboard: Dashboard = json.load(f)
    return dashboard


def panels(dashboard: Dashboard) -> Iterator[Mapping[str, Any]]:
    """
    Every panel, those inside (collapsed) rows included; rows themselves too.
    """
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: Dashboard) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """
    Every query target of every panel, with a name saying where it is.
    """
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target


def variables(dashboard: Dashboard) -> dict[str, Mapping[str, Any]]:
    """
    The template variables, by name.
    """
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variableQuery(variable: Mapping[str, Any]) -> str:
    """
    The query of a query variable, in either of Grafana's forms (a string, or
    the object of the Prometheus variable editor).
    """
    query = variable["query"]
    if isinstance(query, Mapping):
        return str(query["query"])
    return str(query)


def labelValues(query: str) -> tuple[str | None, str]:
    """
    Split Grafana's C{label_values([selector,] label)} into the selector
    (C{None} without one) and the label.

    @raise ValueError: for any other kind of variable query.
    """
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group(1), match.group(2)


def referenced(text: str) -> set[str]:
    """
    The names of the variables C{text} uses, in any of Grafana's syntaxes.
    """
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def regexEscape(value: str) -> str:
    """
    A value as Grafana writes it into a PromQL regex matcher: regex
    metacharacters escaped, with the backslash doubled for the PromQL string.
    """
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """
    Replace every variable of C{text} with its value from C{values}, as
    Grafana interpolates a query.

    @raise KeyError: for a variable that has no value.
    """

    def value(match: re.Match[str]) -> str:
        name = next(g for g in (match.group(1), match.group(3), match.group(4)) if g)
        return values[name]

    return _VARIABLE.sub(value, text)
