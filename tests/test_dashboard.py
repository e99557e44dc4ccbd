"""
The Grafana dashboard C{docs/grafana/netsupervisor.json} is a dashboard that
current Grafana releases import: its structure, its variables, and queries
that follow the conventions of the file. That its queries work on real data
is for C{tests/integration/test_prometheus.py}.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

import pytest

from tests import grafana

DASHBOARD = grafana.load()
PANELS = list(grafana.panels(DASHBOARD))
TARGETS = list(grafana.targets(DASHBOARD))
VARIABLES = grafana.variables(DASHBOARD)
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"timeseries", "table", "stat", "bargauge", "row"}
# Metrics with a connection label, which a group filter must reach by a join.
PER_CONNECTION = re.compile(
    r"netsupervisor_(connection_state|connect_attempts_total|connect_failures_total|"
    r"disconnects_total|connection_transitions_total|heartbeat_last_rtt_seconds|"
    r"heartbeat_misses_total|backoff_delay_seconds|breaker_open|flap_holds_total)\b"
)
JOIN = (
    "* on(job, instance, connection) group_left(group) netsupervisor_connection_info"
    '{job=~"$job", instance=~"$instance", group=~"$group"}'
)


def test_importableTopLevel() -> None:
    assert DASHBOARD["uid"] == "netsupervisor"
    assert DASHBOARD["title"] == "netsupervisor"
    assert DASHBOARD["id"] is None, "an exported dashboard has no database id"
    assert 36 <= DASHBOARD["schemaVersion"] <= 41
    assert DASHBOARD["__inputs"] == [], "the data source is a variable, not an import input"
    required = {(r["type"], r["id"]) for r in DASHBOARD["__requires"]}
    assert ("datasource", "prometheus") in required and ("grafana", "grafana") in required
    used = {p["type"] for p in PANELS} - {"row"}
    assert used <= {i for t, i in required if t == "panel"}, "a panel type is not in __requires"
    assert DASHBOARD["time"]["from"].startswith("now-")
    assert isinstance(DASHBOARD["tags"], list) and "netsupervisor" in DASHBOARD["tags"]


def test_variables() -> None:
    assert list(VARIABLES) == ["datasource", "job", "instance", "group"]
    datasource = VARIABLES["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for name in ("job", "instance", "group"):
        variable = VARIABLES[name]
        assert variable["type"] == "query", name
        assert variable["datasource"] == PROMETHEUS, name
        assert variable["multi"] and variable["includeAll"], name
        # ".*" also matches a series without the label: connections without
        # a group have no group label in Prometheus.
        assert variable["allValue"] == ".*", name
        query = grafana.variableQuery(variable)
        assert variable["definition"] == query, name
        selector, label = grafana.labelValues(query)
        assert label == name and selector is not None, query
    # Each variable depends on the ones before it only.
    assert grafana.referenced(grafana.variableQuery(VARIABLES["job"])) == set()
    assert grafana.referenced(grafana.variableQuery(VARIABLES["instance"])) == {"job"}
    assert grafana.referenced(grafana.variableQuery(VARIABLES["group"])) == {"job", "instance"}


def test_everyPanelUsesTheDatasourceVariable() -> None:
    for panel in PANELS:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == PROMETHEUS, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refIds = [t["refId"] for t in panel["targets"]]
        assert len(refIds) == len(set(refIds)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == PROMETHEUS, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panelTypesIdsAndTitles() -> None:
    ids = [p["id"] for p in PANELS]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), "panel ids are not unique"
    assert {p["type"] for p in PANELS} <= PANEL_TYPES
    titles = [p["title"] for p in PANELS]
    assert len(titles) == len(set(titles))
    assert all(p.get("description") for p in PANELS if p["type"] != "row")


def test_gridPositionsFitAndDoNotOverlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        grid = panel["gridPos"]
        assert set(grid) >= {"x", "y", "w", "h"}, panel["title"]
        x, y, w, h = (grid[k] for k in "xywh")
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["title"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 24, panel["title"]
        for cell in itertools.product(range(x, x + w), range(y, y + h)):
            assert cell not in cells, f"{panel['title']} overlaps {cells[cell]}"
            cells[cell] = panel["title"]


def test_theIssuesPanelsAreThere() -> None:
    def has(kind: str, *words: str) -> bool:
        return any(
            p["type"] == kind and all(w.lower() in p["title"].lower() for w in words)
            for p in PANELS
        )

    assert has("timeseries", "connections by state")
    assert has("timeseries", "flapping", "transitions per minute")
    assert has("timeseries", "connect failures", "reason")
    assert has("timeseries", "heartbeat rtt", "percentiles", "group")
    assert has("timeseries", "backoff")
    assert has("stat", "drain") and has("timeseries", "drain")
    # Fleet-safe recovery (issue 11).
    assert has("timeseries", "circuit breakers by state", "held connections by kind")
    assert has("table", "open breaker")
    assert has("timeseries", "connect budget", "waiting")
    assert has("timeseries", "reload") and has("stat", "reload")
    assert {p["type"] for p in PANELS} >= {"timeseries", "table", "stat", "bargauge"}


@pytest.mark.parametrize(("where", "target"), TARGETS, ids=[w for w, _ in TARGETS])
def test_queriesFollowTheConventions(where: str, target: Mapping[str, Any]) -> None:
    expr: str = target["expr"]
    names = grafana.referenced(expr)
    assert names <= set(VARIABLES) | grafana.BUILTINS, f"{where}: unknown variable"
    # Every selector is restricted to the chosen jobs and instances.
    for selector in re.findall(r"netsupervisor_\w+\{([^}]*)\}", expr):
        assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, where
    assert not re.search(r"netsupervisor_\w+(?![\w{])", expr), f"{where}: unfiltered selector"
    # Rates follow the scrape interval (or span the chosen range).
    for window in re.findall(r"\[([^\]]+)\]", expr):
        assert window in ("$__rate_interval", "$__range"), f"{where}: window [{window}]"
    # Per-connection series reach the group variable through the info join,
    # with job and instance in on(): names are unique per process only.
    if PER_CONNECTION.search(expr):
        assert JOIN in expr, where
    if "group" in names:
        assert 'group=~"$group"' in expr, where
    if target.get("instant"):
        assert target.get("range") is False, where
    else:
        assert target.get("range") is True, where


def test_substitutionAsGrafanaDoes() -> None:
    values = {"job": "ns", "instance": grafana.regexEscape("127.0.0.1:9100"), "group": ".*"}
    assert grafana.substitute('x{job=~"$job",i=~"${instance}",g=~"[[group]]"}', values) == (
        'x{job=~"ns",i=~"127\\\\.0\\\\.0\\\\.1:9100",g=~".*"}'
    )
    assert grafana.substitute("${group:regex}", values) == ".*"
    with pytest.raises(KeyError):
        grafana.substitute("$nope", values)
    assert grafana.labelValues('label_values(up{a=~"$b"}, job)') == ('up{a=~"$b"}', "job")
    assert grafana.labelValues("label_values(job)") == (None, "job")
    with pytest.raises(ValueError):
        grafana.labelValues("query_result(up)")
