"""
A hosts file the test controls: an C{IHostnameResolver} that resolves names
from a mapping (synchronously, as a hosts file would), and a reactor proxy
that resolves with it while everything else goes to the real reactor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from zope.interface import implementer


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        "Resolved at once: nothing to cancel."


@implementer(IHostnameResolver)
class HostsResolver:
    """
    Resolves each name to the addresses the test gave it, in order; a name
    it does not know resolves to nothing.

    @ivar hosts: name -> addresses (IPv4 or IPv6 text); change it at will.
    @ivar lookups: every name asked for, in order.
    """

    def __init__(self, hosts: Mapping[str, Sequence[str]]) -> None:
        self.hosts = {name: list(addresses) for name, addresses in hosts.items()}
        self.lookups: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.lookups.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for address in self.hosts.get(hostName, []):
            if ":" in address:
                resolutionReceiver.addressResolved(IPv6Address("TCP", address, portNumber))
            else:
                resolutionReceiver.addressResolved(IPv4Address("TCP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


@implementer(IReactorPluggableNameResolver)
class ResolvingReactor:
    """
    C{reactor} with its names resolved by C{resolver}: what an endpoint built
    on it resolves, it resolves from the test's hosts file.
    """

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        old, self.nameResolver = self.nameResolver, resolver
        return old

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)
