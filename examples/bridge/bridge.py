"""
A C{twistd} plugin that bridges two supervised connections with
netsupervisor's library API: it subscribes on a NATS connection (again
each time it is ESTABLISHED, since a subscription lives and dies with its
connection) and publishes each message to an MQTT pool with QoS 1.

    PYTHONPATH=examples/bridge twistd -n nats-mqtt-bridge \\
        --config examples/bridge/bridge.toml \\
        --source nats-in --subject 'sensors.>' --sink mqtt-out --topic-prefix bridge/

The supervisor is the one C{twistd netsupervisor} runs (built by
L{supervisor.daemon.Daemon}: the admin site, SIGHUP reloads, the SIGTERM
drain), and the bridge is a child service of it. A NATS subject
C{sensors.kitchen.temp} becomes the MQTT topic C{bridge/sensors/kitchen/temp}.

Core NATS delivers at most once and has no acknowledgement to withhold, so
the bridge is at most once too: a publish that does not end ok (the pool's
queue full, timed out, closed, or lost in flight) is logged and counted in
C{netsupervisor_operations_total{connection="mqtt-out"}}; it is not retried.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from twisted.application.service import IService, Service
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from plugins import mqtt, nats
from supervisor import OperationError, Supervisor, Transition
from supervisor.daemon import Daemon
from supervisor.daemon import Options as DaemonOptions
from supervisor.operations import Submitter

log = Logger(namespace="bridge")


class Options(DaemonOptions):
    """
    C{twistd nats-mqtt-bridge}: netsupervisor's options, and what to bridge.
    """

    synopsis = DaemonOptions.synopsis + " --source NAME --subject SUBJECT --sink NAME"
    optParameters: ClassVar[list[list[str | None]]] = [
        *DaemonOptions.optParameters,
        ["source", None, None, "The NATS connection to subscribe on (required)."],
        ["subject", None, None, "The NATS subject to subscribe to, wildcards allowed (required)."],
        ["sink", None, None, "The MQTT pool (or connection) to publish to (required)."],
        ["topic-prefix", None, "", "Put before each topic (a subject's dots become slashes)."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        for required in ("source", "subject", "sink"):
            if not self[required]:
                raise usage.UsageError(f"--{required} is required")


class Bridge(Service):
    """
    Subscribes on C{source} whenever it becomes ESTABLISHED; publishes each
    message to C{sink}.

    @ivar endings: how the publishes ended, by result.
    """

    def __init__(
        self, supervisor: Supervisor, source: str, subject: str, sink: str, prefix: str
    ) -> None:
        self.supervisor = supervisor
        self.source = source
        self.subject = subject
        self.sink = sink
        self.prefix = prefix
        self.endings: Counter[str] = Counter()

    def startService(self) -> None:
        super().startService()
        # The supervisor relays the transitions of every connection, the
        # ones a reload makes included; the connections start after this.
        self.supervisor.addObserver(self.transition)

    def transition(self, record: Transition) -> None:
        if record.connection == self.source and record.to == "ESTABLISHED" and self.running:
            # Runs at once, on the new connection's protocol.
            subscribing = nats.subscribe(
                self.supervisor.connection(self.source), self.subject, self.forward
            )
            subscribing.addCallbacks(self.subscribed, self.notSubscribed)

    def subscribed(self, sid: int) -> None:
        log.info("subscribed to {subject} on {source}", subject=self.subject, source=self.source)

    def notSubscribed(self, failure: Failure) -> None:
        log.failure("could not subscribe on {source}", failure, source=self.source)

    def target(self) -> Submitter:
        pools = self.supervisor.pools
        return pools[self.sink] if self.sink in pools else self.supervisor.connection(self.sink)

    def forward(self, message: nats.Message) -> None:
        topic = self.prefix + message.subject.decode("utf-8").replace(".", "/")
        published = mqtt.publish(self.target(), topic, message.payload, qos=1)
        published.addBoth(self.published, topic)

    def published(self, outcome: object, topic: str) -> None:
        if not isinstance(outcome, Failure):
            self.endings["ok"] += 1
            return
        result = outcome.value.result if isinstance(outcome.value, OperationError) else "error"
        self.endings[result] += 1
        log.warn(
            "not bridged to {topic} ({result}): {error}",
            topic=topic,
            result=result,
            error=outcome.getErrorMessage(),
        )


def makeService(options: Any) -> IService:
    """
    The supervisor of C{twistd netsupervisor}, with the bridge as a child.
    """
    from twisted.internet import reactor

    supervisor = Daemon(options, reactor).makeService()
    assert isinstance(supervisor, Supervisor)
    bridge = Bridge(
        supervisor, options["source"], options["subject"], options["sink"], options["topic-prefix"]
    )
    bridge.setServiceParent(supervisor)
    return supervisor
