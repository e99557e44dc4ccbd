"""
Protocol plugins for netsupervisor.

Like C{twisted/plugins/}, this package's path is extended with the drop-in
folders: every C{plugins/} folder without an C{__init__.py} under an entry
of C{sys.path} (but the working directory, unless it is named; see
L{supervisor.dropins.dropInFolders}), so that a plugin module can be dropped
into any of them and be found by C{twisted.plugin.getCache}.
"""

from supervisor.dropins import dropInFolders

__path__.extend(dropInFolders(__name__))
__all__: list[str] = []
