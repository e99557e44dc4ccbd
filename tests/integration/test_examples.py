"""
The examples of docs/library.md against real servers:

- C{examples/fanout/fanout.py}, a Twisted program using the library, pushes
  its messages over a pool of redis connections: every push ends ok and is
  in redis;
- C{examples/bridge/}, a C{twistd} plugin, bridges a NATS subscription to
  an MQTT pool: what is published on NATS reaches an MQTT subscriber under
  the mapped topic; with the broker killed, the bridge's publishes time out,
  and a real Prometheus scraping the bridge's admin site shows
  C{NetsupervisorOperationsRefused} pending for the pool.
"""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from plugins import nats
from tests.integration.conftest import HOST, ROOT, theReactor, waitFor
from tests.integration.daemon import BIN, Process, freePort
from tests.integration.mqttsubscriber import SubscribingPlugin, supervised
from tests.integration.servers import ServerLauncher, findProgram, runProgram
from tests.integration.test_prometheus import ALERTS, Prometheus
from tests.programs import requireProgram

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "examples"


@pytest_twisted.inlineCallbacks
def test_theFanOutExample(
    servers: ServerLauncher, tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    server = yield servers.redis()
    config = tmp_path / "fanout.toml"
    text = (EXAMPLES / "fanout" / "fanout.toml").read_text()
    config.write_text(text.replace("port=6379", f"port={server.port}"))
    out, err, code = yield runProgram(
        [
            sys.executable,
            str(EXAMPLES / "fanout" / "fanout.py"),
            "--config",
            str(config),
            "--count",
            "3000",
            "--window",
            "300",
        ],
        timeout=60,
    )
    assert code == 0, (out, err)
    assert out.decode().split() == ["ok=3000"], (out, err)
    lengths = []
    for i in range(4):
        answer, _, _ = yield runProgram(
            [findProgram("redis-cli"), "-h", HOST, "-p", str(server.port), "LLEN", f"fanout:{i}"]
        )
        lengths.append(int(answer))
    assert lengths == [750, 750, 750, 750]


class Bridge(Process):
    """
    C{twistd -n nats-mqtt-bridge}, the example's plugin found on
    C{PYTHONPATH}, with its admin site on a free port.
    """

    def __init__(self, config: Path, directory: Path) -> None:
        self.admin = freePort()
        env = {**os.environ, "PYTHONPATH": str(EXAMPLES / "bridge")}
        super().__init__(
            [
                str(BIN / "twistd"),
                "-n",
                "--pidfile=",
                "nats-mqtt-bridge",
                "--config",
                str(config),
                "--admin",
                f"tcp:{self.admin}:interface={HOST}",
                "--source",
                "nats-in",
                "--subject",
                "sensors.>",
                "--sink",
                "mqtt-out",
                "--topic-prefix",
                "bridge/",
            ],
            directory,
            directory / "bridge.log",
            env,
        )

    def get(self, path: str) -> bytes:
        if self.popen.poll() is not None:
            raise AssertionError(f"the bridge exited:\n{self.output()}")
        with urllib.request.urlopen(f"http://{HOST}:{self.admin}{path}", timeout=2) as r:
            return bytes(r.read())

    def established(self) -> bool:
        try:
            import json

            connections = json.loads(self.get("/connections"))
        except OSError:
            return False
        return all(c["state"] == "ESTABLISHED" for c in connections) and len(connections) == 3


@pytest_twisted.inlineCallbacks
def test_theBridgeExampleAndTheOperationsAlert(
    servers: ServerLauncher, tmp_path: Path
) -> Generator[Deferred[Any], Any, None]:
    prometheusProgram = requireProgram("prometheus")
    natsServer, broker = yield gatherResults([servers.nats(), servers.mosquitto()])
    text = (EXAMPLES / "bridge" / "bridge.toml").read_text()
    config = tmp_path / "bridge.toml"
    config.write_text(
        text.replace("port=4222", f"port={natsServer.port}")
        .replace("port=1883", f"port={broker.port}")
        # Quick to give up on a dead broker, for the alert.
        .replace("timeout = 30.0", "timeout = 1.0")
        .replace(
            "heartbeat = { interval = 5.0, timeout = 2.0",
            "heartbeat = { interval = 0.5, timeout = 0.5",
        )
    )
    subscriber = SubscribingPlugin(b"bridge/#")
    listener = supervised(broker.port, subscriber, "mqtt-subscriber")
    publisher = supervised(natsServer.port, nats.natsPlugin, "nats", name="publisher")
    bridge = Bridge(config, tmp_path)
    prometheus: Prometheus | None = None
    try:
        listener.start()
        publisher.start()
        yield waitFor(bridge.established, 20, "the bridge's connections")
        yield waitFor(lambda: listener.state == "ESTABLISHED", 10, "the MQTT subscriber")
        yield waitFor(
            lambda: b"subscribed to sensors.>" in bridge.logPath.read_bytes(),
            10,
            "the bridge's subscription",
        )
        sent = [nats.publish(publisher, f"sensors.room{i % 5}.temp", b"%d" % i) for i in range(200)]
        yield gatherResults(sent)
        yield waitFor(lambda: len(subscriber.received) >= 200, 10, "the bridged messages")
        assert sorted(subscriber.received, key=lambda m: int(m[1])) == [
            (b"bridge/sensors/room%d/temp" % (i % 5), b"%d" % i) for i in range(200)
        ]

        # Prometheus sees the pool's counts (timeout = 0) before the broker
        # dies; then the bridge's publishes wait, and time out.
        prometheus = Prometheus(prometheusProgram, tmp_path, f"{HOST}:{bridge.admin}", [ALERTS])
        timeouts = 'netsupervisor_operations_total{connection="mqtt-out",result="timeout"}'

        def scraped() -> bool:
            assert prometheus is not None
            return bool(prometheus.query(f"count_over_time({timeouts}[1m]) >= 2"))

        yield waitFor(scraped, 20, "two scrapes of the pool's counts")
        broker.signal(signal.SIGKILL)
        yield broker.waitForExit()
        yield gatherResults([nats.publish(publisher, "sensors.lost", b"x") for _ in range(20)])

        def timedOut() -> bool:
            return f"{timeouts} 20.0" in bridge.get("/metrics").decode()

        yield waitFor(timedOut, 10, "the bridge's publishes to time out")

        def pending() -> list[dict[str, Any]]:
            assert prometheus is not None
            return [
                alert["labels"]
                for alert in prometheus.api("alerts")["alerts"]
                if alert["labels"]["alertname"] == "NetsupervisorOperationsRefused"
            ]

        found: list[list[dict[str, Any]]] = []
        yield waitFor(lambda: found.append(pending()) or found[-1], 30, "the alert")
        assert [(a["connection"], a["result"]) for a in found[-1]] == [("mqtt-out", "timeout")]
    finally:
        if prometheus is not None:
            prometheus.stop()
        yield listener.stop().addTimeout(5, theReactor())
        yield publisher.stop().addTimeout(5, theReactor())
        bridge.signal(signal.SIGTERM)
        code = bridge.wait(10)
        bridge.stop()
    log = bridge.logPath.read_text(errors="replace")
    assert code == -signal.SIGTERM, log
    assert "Traceback" not in log and "Unhandled" not in log, log
    assert "not bridged to bridge/sensors/lost (timeout)" in log
