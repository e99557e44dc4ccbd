"""
The dashboard and the alerts of C{docs/} against a real Prometheus scraping a
real C{twistd -n netsupervisor} with live peers, every 1 s.

The scenario makes every alert condition hold: a peer killed (a connection
down, the share of ESTABLISHED connections low), a peer that accepts and
closes at once (a flapping connection, which the flap guard holds again and
again), a port nobody listens on with C{breaker = { failures = 1 }} (a
circuit breaker open from the first attempt), a peer frozen for less than
the heartbeat timeout (a late pong, a high RTT), and a SIGHUP with a broken
file (a refused reload). Then every PromQL expression of the dashboard (each
panel target and each variable query, after Grafana's substitution) and of
the rules that Prometheus itself loaded from C{docs/prometheus/} goes through
the HTTP API, and must succeed with a non-empty result. The files in
C{docs/} are the source of truth: a new panel or rule is tested as it is
added.

The alerts' own thresholds are crossed; their C{for:} durations (minutes)
are not waited for: the alerts must be I{pending} (their expression true at
an evaluation), which is what the C{for:} clock counts from. That they fire
after it is proved by C{promtool test rules} (C{tests/test_prometheus_rules.py}).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import grafana
from tests.integration.daemon import HOST, Daemon, Process, Processes, freePort, poll, stoppedAtEnd
from tests.programs import requireProgram

pytestmark = pytest.mark.integration

ALERTS = grafana.ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_FILES = [ALERTS]
JOB = "netsupervisor"

# What Grafana would put in place of its own variables for a dashboard over
# the last few minutes of 1 s scrapes. $__rate_interval is at least four
# scrape intervals in Grafana; 15 s leaves room for a late scrape.
BUILTINS = {
    "__rate_interval": "15s",
    "__interval": "1s",
    "__interval_ms": "1000",
    "__range": "5m",
    "__range_s": "300",
}

FREEZE = 2.0
"""How long the slow peer is frozen: more than its heartbeat interval, so that
a ping is in flight, and less than its heartbeat timeout, so that the pong
arrives late rather than never."""

SLOW_HEARTBEAT = "{ interval = 1.0, timeout = 4.0, misses = 2 }"
RTT_THRESHOLD = 0.5
"""NetsupervisorHeartbeatRttHigh's threshold; a pong at least
C{FREEZE - interval} = 1 s late crosses it."""

# A peer that accepts a connection and closes it after a tenth of a second,
# one at a time: the connection is ESTABLISHED, then lost, over and over.
FLAPPER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
print("listening on 127.0.0.1:%d" % server.getsockname()[1], flush=True)
while True:
    client, _ = server.accept()
    time.sleep(0.1)
    client.close()
"""


class Prometheus(Process):
    """
    C{prometheus} with a configuration of its own in C{directory}, scraping
    C{target} every second and evaluating C{rules} every second.
    """

    def __init__(self, program: str, directory: Path, target: str, rules: list[Path]) -> None:
        self.port = freePort()
        config = directory / "prometheus.yml"
        ruleFiles = "".join(f"  - {json.dumps(str(r))}\n" for r in rules)
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            f"rule_files:\n{ruleFiles}"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n"
        )
        super().__init__(
            [
                program,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--log.level=warn",
            ],
            directory,
            directory / "prometheus.log",
        )
        poll(self._ready, 30, "Prometheus to be ready")

    def _ready(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.output()}")
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/-/ready", timeout=5) as r:
            return bool(r.status == 200)

    def api(self, path: str, **params: str) -> Any:
        """
        The C{data} of a successful answer of the HTTP API.
        """
        url = f"http://{HOST}:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path} {params}: {e.code} {e.read()!r}") from e
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """
        The instant vector (or scalar, as one element) of C{expr}, now.
        """
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"value": data["result"]}]
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result


class Scene(Processes):
    """
    The processes of the test: line peers, the flapper, the daemon, Prometheus.
    """

    def flapper(self) -> int:
        process = self.started(
            Process([sys.executable, "-c", FLAPPER], self.directory, self.directory / "flapper.log")
        )
        line = poll(
            lambda: re.search(r"listening on [\d.]+:(\d+)", process.output()), 15, "the flapper"
        )
        return int(line.group(1))


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    yield from stoppedAtEnd(Scene(tmp_path))


# The flapper's connection keeps flapping for NetsupervisorConnectionFlapping
# (more than 3 losses in 15 minutes), and the flap guard holds it every fourth
# loss, briefly, for NetsupervisorConnectionHeldFlapping.
FLAP_GUARD = "{ max = 3, within = 60.0, hold = 0.5 }"


def configText(
    steady: int, down: int, flap: int, slow: int, dead: int, broken: bool = False
) -> str:
    def connection(name: str, port: int, group: str | None, extra: str = "") -> str:
        labels = "" if group is None else f'labels = {{ group = "{group}" }}\n'
        return (
            f'[[connection]]\nname = "{name}"\n'
            f'endpoint = "tcp:host=127.0.0.1:port={port}"\n{labels}{extra}\n'
        )

    return (
        '[defaults]\nprotocol = "line"\nconnect_timeout = 2.0\ndrain_timeout = 1.0\n'
        'backoff = { initial = 0.2, max = 1.0, jitter = "full", reset_after = 1.0 }\n'
        "heartbeat = { interval = 1.0, timeout = 1.0, misses = 2 }\n"
        # Only the flapper's connection has its flap guard on (below).
        "flap = { max = 0 }\n\n"
        + connection("steady-1", steady, "steady")
        + connection("steady-2", steady, "steady")
        + connection("plain", steady, None)
        + connection("down", down, "down")
        + connection("flap", flap, "flap", f"flap = {FLAP_GUARD}\n")
        + connection("tripped", dead, "down", "breaker = { failures = 1 }\n")
        + connection("slow", slow, "slow", f"heartbeat = {SLOW_HEARTBEAT}\n")
        + (connection("steady-1", steady, "steady") if broken else "")
    )


def promtoolCount(path: Path) -> int:
    result = subprocess.run(
        [requireProgram("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert match is not None, result.stdout
    return int(match.group(1))


def test_everyDashboardAndRuleExpressionFindsData(scene: Scene) -> None:
    program = requireProgram("prometheus")
    started = time.monotonic()
    steady, down, slow = scene.peer(), scene.peer(), scene.peer()
    flap = scene.flapper()
    dead = freePort()  # nothing listens there: every attempt is refused
    config = scene.directory / "netsupervisor.toml"
    config.write_text(configText(steady.port, down.port, flap, slow.port, dead))
    daemon = Daemon(config, scene.directory)
    scene.started(daemon)
    instance = f"{HOST}:{daemon.admin}"
    prometheus = Prometheus(program, scene.directory, instance, RULE_FILES)
    scene.started(prometheus)

    names = ["steady-1", "steady-2", "plain", "down", "slow"]
    poll(
        lambda: all(daemon.connections()[n]["state"] == "ESTABLISHED" for n in names),
        10,
        "the connections to the live peers to be ESTABLISHED",
    )
    # Two scrapes of the healthy start: counters have a value before their
    # increase (a reload failure is an increase from 0).
    poll(
        lambda: prometheus.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 2'),
        15,
        "two scrapes",
    )
    assert prometheus.query(f'up{{job="{JOB}"}} == 1'), "the daemon is not up in Prometheus"

    # The scenario.
    down.stop()  # SIGKILL: "down" is lost, then refused, retrying
    slow.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        config.write_text(configText(steady.port, down.port, flap, slow.port, dead, broken=True))
        daemon.signal(signal.SIGHUP)
        poll(
            lambda: daemon.sample("netsupervisor_config_reloads_total", result="failure") == 1,
            10,
            "the refused reload to be counted",
        )
        # The freeze itself is the scenario: wait out its length, bounded.
        poll(lambda: time.monotonic() - frozen >= FREEZE, FREEZE + 1, "the end of the freeze")
    finally:
        slow.signal(signal.SIGCONT)

    # The next ping follows the late pong at once (it is overdue), so the
    # last-RTT gauge shows the late one for a moment only: the histogram
    # keeps it.
    def slowAnswers() -> float:
        total = daemon.sample("netsupervisor_heartbeat_rtt_seconds_count", group="slow")
        fast = daemon.sample(
            "netsupervisor_heartbeat_rtt_seconds_bucket", group="slow", le=str(RTT_THRESHOLD)
        )
        assert total is not None and fast is not None
        return total - fast

    poll(slowAnswers, 10, "the late pong of the frozen peer")
    assert daemon.connections()["slow"]["state"] == "ESTABLISHED", "the freeze was too long"

    # Every rule that Prometheus loaded from docs/prometheus/, evaluated.
    expected = sum(promtoolCount(path) for path in RULE_FILES)

    def evaluatedRules() -> list[dict[str, Any]]:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules = poll(evaluatedRules, 10, "every rule to be evaluated")
    assert len(rules) == expected, [r["name"] for r in rules]
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule.get("lastError", "") == "", rule
        if rule["type"] == "alerting":
            assert rule["duration"] > 0, f"{rule['name']} has no for:"
            assert rule["labels"].get("severity") in ("info", "warning", "critical"), rule
            for key in ("summary", "description"):
                assert "{{ $labels." in rule["annotations"].get(key, ""), (rule["name"], key)
    # Operations are submitted by an application (docs/library.md): this
    # scenario runs none, so that alert's condition cannot hold here; it is
    # shown pending against a real daemon that runs one in
    # tests/integration/test_examples.py.
    needsAnApplication = {"NetsupervisorOperationsRefused"}
    alertNames = {r["name"] for r in rules if r["type"] == "alerting"} - needsAnApplication

    # Every alert condition holds: each alert is pending (or, after its
    # for:, firing) for the connections, groups and processes of the
    # scenario, and for no other.
    def active() -> dict[str, set[str]]:
        alerts = [a for a in prometheus.api("alerts")["alerts"] if a["state"] != "inactive"]
        found: dict[str, set[str]] = {}
        for alert in alerts:
            labels = alert["labels"]
            subject = labels.get("connection") or labels.get("group") or labels["instance"]
            found.setdefault(labels["alertname"], set()).add(subject)
        return found if set(found) == alertNames else {}

    firing = poll(active, 30, "every alert to be pending")
    assert {"down", "tripped"} <= firing["NetsupervisorConnectionDown"]
    assert firing["NetsupervisorConnectionDown"] <= {"down", "flap", "tripped"}, firing
    assert firing["NetsupervisorConnectionFlapping"] == {"flap"}, firing
    assert firing["NetsupervisorConnectionHeldFlapping"] == {"flap"}, firing
    assert firing["NetsupervisorBreakerOpen"] == {instance}, firing
    assert firing["NetsupervisorHeartbeatRttHigh"] == {"slow"}, firing
    assert firing["NetsupervisorConfigReloadFailed"] == {instance}, firing
    assert firing["NetsupervisorEstablishedShareLow"] == {instance}, firing

    failures: list[str] = []

    def check(where: str, expr: str, needData: bool = True) -> None:
        try:
            result = prometheus.query(expr)
        except AssertionError as e:
            failures.append(f"{where}: {expr}\n  {e}")
            return
        if needData and not result:
            failures.append(f"{where}: no data for\n  {expr}")

    for rule in rules:
        check(f"rule {rule['name']}", rule["query"], rule["name"] not in needsAnApplication)

    # The dashboard, as Grafana would query it with everything selected.
    dashboard = grafana.load()
    values = {
        **BUILTINS,
        "job": grafana.regexEscape(JOB),
        "instance": grafana.regexEscape(instance),
        "group": ".*",
    }
    variables = grafana.variables(dashboard)
    known = {"job": {JOB}, "instance": {instance}, "group": {"steady", "down", "flap", "slow"}}
    for name, variable in variables.items():
        if variable["type"] != "query":
            continue
        selector, label = grafana.labelValues(grafana.variableQuery(variable))
        params = {} if selector is None else {"match[]": grafana.substitute(selector, values)}
        found = set(prometheus.api(f"label/{label}/values", **params))
        assert found == known[name], (name, found)
    targets = list(grafana.targets(dashboard))
    assert len(targets) >= 17
    for where, target in targets:
        check(where, grafana.substitute(target["expr"], values))
    # One group chosen: the queries stay valid (some panels are empty then).
    for where, target in targets:
        check(where, grafana.substitute(target["expr"], {**values, "group": "slow"}), False)
    assert not failures, "\n".join(failures)
    log = daemon.output()
    assert "Traceback" not in log and "Unhandled" not in log, log
    print(f"\n{len(rules)} rules, {len(targets)} panel targets, {time.monotonic() - started:.1f} s")
