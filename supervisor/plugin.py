"""
Finding protocol plugins by name.
"""

from __future__ import annotations

from twisted.plugin import getPlugins

from supervisor.interfaces import IProtocolPlugin


class UnknownProtocol(LookupError):
    """
    No plugin provides the requested protocol name.
    """


def availablePlugins() -> dict[str, IProtocolPlugin]:
    """
    Every protocol plugin in the C{plugins} package (including drop-ins
    from any C{plugins/} directory on C{sys.path}), by name.
    """
    import plugins

    found: dict[str, IProtocolPlugin] = {}
    for plugin in getPlugins(IProtocolPlugin, plugins):
        found.setdefault(plugin.name, plugin)
    return found


def findPlugin(name: str) -> IProtocolPlugin:
    """
    The plugin whose C{name} is C{name}.

    @raise UnknownProtocol: with the names that do exist.
    """
    found = availablePlugins()
    try:
        return found[name]
    except KeyError:
        known = ", ".join(sorted(found)) or "none"
        raise UnknownProtocol(f"unknown protocol {name!r} (known: {known})") from None
