"""
The C{twistd nats-mqtt-bridge} subcommand of the bridge example. Kept tiny:
the real module (C{bridge}, beside this C{twisted/} folder) is imported
only when the command runs.
"""

from twisted.application.service import ServiceMaker

bridge = ServiceMaker(
    "netsupervisor NATS to MQTT bridge",
    "bridge",
    "Subscribe on a supervised NATS connection, publish each message to a supervised MQTT pool.",
    "nats-mqtt-bridge",
)
