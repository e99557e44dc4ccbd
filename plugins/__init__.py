"""
Protocol plugins for netsupervisor.

Like C{twisted/plugins/}, this package's path is extended with every
C{plugins/} directory on C{sys.path}, so that a plugin module can be dropped
into any of them and be found by C{twisted.plugin.getPlugins}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[no-untyped-call]
__all__: list[str] = []
