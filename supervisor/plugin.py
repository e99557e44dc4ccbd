"""
Finding protocol plugins by name.

Plugins come from three places, searched afresh at every configuration
load (start and reload):

- the bundled plugins: the modules of netsupervisor's own C{plugins}
  package (L{BUNDLED});
- drop-in modules: the modules of every other C{plugins/} folder without an
  C{__init__.py} under an entry of C{sys.path} (L{dropInFolders}), which the
  package adds to its C{__path__} as C{twisted/plugins/} does; Twisted's
  L{getCache} finds their module-level objects providing C{IPlugin};
- installed distributions: every entry point of the group
  L{ENTRY_POINT_GROUP} names a plugin object, and the entry point's name is
  the plugin's (the configuration's C{protocol}).

What would otherwise silently pick one plugin over another is refused with
L{PluginError}: a folder imported as the package C{plugins} in place of the
bundled one, two plugins with the same name, two plugin modules with the
same file name. An entry point that cannot be used (it fails to import, or
names something that is not a plugin of that name) is left out with a
warning in the log, and listed in L{Plugins.unusable}, so that a
configuration that uses its protocol is refused with the reason while the
others load.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Final

import attrs
from twisted.logger import Logger
from twisted.plugin import getCache

from supervisor.dropins import dropInFolders
from supervisor.interfaces import IProtocolPlugin

__all__ = [
    "BUNDLED",
    "ENTRY_POINT_GROUP",
    "PluginError",
    "Plugins",
    "UnknownProtocol",
    "availablePlugins",
    "dropInFolders",
    "findPlugin",
]

ENTRY_POINT_GROUP: Final = "netsupervisor.plugins"
"""The entry-point group through which an installed distribution adds plugins."""

BUNDLED: Final = Path(__file__).resolve().parent.parent / "plugins"
"""The folder of the bundled plugins: the C{plugins} package installed with
this C{supervisor} package."""

PROBLEM_LENGTH: Final = 300
"""The most characters of an exception's text quoted in a message."""

log = Logger(namespace="netsupervisor.plugin")


class UnknownProtocol(LookupError):
    """
    No plugin provides the requested protocol name.
    """


class PluginError(Exception):
    """
    The plugins that are installed cannot be used together: the message says
    which, where each comes from, and what to change.
    """


@attrs.frozen(eq=False)
class Plugins(Mapping[str, IProtocolPlugin]):
    """
    The protocol plugins that one search found, by name.

    @ivar origins: where each plugin comes from, by name, for messages.
    @ivar unusable: the names of entry points that cannot be used, each with
        where it comes from and why.
    """

    plugins: Mapping[str, IProtocolPlugin]
    origins: Mapping[str, str] = attrs.field(factory=dict)
    unusable: Mapping[str, str] = attrs.field(factory=dict)

    def __getitem__(self, name: str) -> IProtocolPlugin:
        return self.plugins[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.plugins)

    def __len__(self) -> int:
        return len(self.plugins)


@attrs.frozen
class _Found:
    """
    One plugin name claimed somewhere: the plugin, or why it cannot be used.
    """

    name: str
    origin: str
    plugin: IProtocolPlugin | None
    problem: str = ""


_latest: Plugins | None = None


def availablePlugins() -> Plugins:
    """
    Every protocol plugin, bundled, dropped in or installed, by name. Each
    call searches afresh (a distribution installed since the last call is
    found); L{findPlugin} reuses the latest search.

    @raise PluginError: a folder hides the bundled plugins, two plugins have
        the same name, or two plugin modules the same file name.
    """
    global _latest
    claims: dict[str, list[_Found]] = {}
    for found in (*_packagePlugins(pluginPackage()), *_entryPointPlugins()):
        claims.setdefault(found.name, []).append(found)
    conflicts = [
        f"{_count(len(found))} plugins are named {name!r}: {_listed(f.origin for f in found)}"
        for name, found in sorted(claims.items())
        if len(found) > 1
    ]
    if conflicts:
        raise PluginError(
            "; ".join(conflicts) + ". A protocol name must be unique: uninstall or rename one"
        )
    usable: dict[str, IProtocolPlugin] = {}
    origins: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for name, [found] in claims.items():
        if found.plugin is None:
            unusable[name] = f"{found.origin} {found.problem}"
            log.warn(
                "plugin {name!r} left out: {origin} {problem}",
                name=name,
                origin=found.origin,
                problem=found.problem,
            )
        else:
            usable[name] = found.plugin
            origins[name] = found.origin
    _latest = Plugins(usable, origins, unusable)
    return _latest


def findPlugin(name: str) -> IProtocolPlugin:
    """
    The plugin whose C{name} is C{name}, from the latest search (searching
    again when it does not have the name).

    @raise UnknownProtocol: with the names that do exist, or why the plugin
        of that name cannot be used.
    @raise PluginError: as L{availablePlugins}.
    """
    found = _latest
    if found is None or name not in found:
        found = availablePlugins()
    try:
        return found[name]
    except KeyError:
        pass
    if name in found.unusable:
        raise UnknownProtocol(f"protocol {name!r} cannot be used: {found.unusable[name]}")
    known = ", ".join(sorted(found)) or "none"
    raise UnknownProtocol(f"unknown protocol {name!r} (known: {known})")


# The bundled package and the drop-in folders.


def pluginPackage() -> ModuleType:
    """
    The C{plugins} package, checked to be netsupervisor's own.

    @raise PluginError: the name C{plugins} is taken by another package (a
        folder with an C{__init__.py} ahead of ours on C{sys.path}), which
        would hide every bundled plugin.
    """
    import plugins

    folder = _folderOf(plugins)
    if folder == BUNDLED:
        return plugins
    if folder is None:
        raise PluginError(
            f"the package 'plugins' has no __init__.py (it spans "
            f"{_listed(str(p) for p in getattr(plugins, '__path__', []))}): netsupervisor's "
            f"bundled plugins ({BUNDLED}) are missing; reinstall netsupervisor"
        )
    raise PluginError(
        f"the folder {folder} hides netsupervisor's bundled plugins ({BUNDLED}): it has an "
        f"__init__.py, so Python imports it as the package 'plugins' in their place. "
        f"Delete {folder / '__init__.py'} to make it a drop-in folder, or take "
        f"{folder.parent} off sys.path (PYTHONPATH)"
    )


def _folderOf(package: ModuleType) -> Path | None:
    file = getattr(package, "__file__", None)
    return Path(file).resolve().parent if file else None


def _refuseModuleClashes(package: ModuleType) -> None:
    """
    Twisted knows a plugin module by its file name alone: of two modules
    with one name in two folders of the package, only the first is ever
    imported. Refuse that instead.
    """
    first: dict[str, str] = {}
    clashes: list[str] = []
    folders = dict.fromkeys(os.path.realpath(f) for f in getattr(package, "__path__", []))
    for folder in folders:
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(folder, entry)
            if entry.endswith(".py") and entry != "__init__.py":
                module = entry[: -len(".py")]
            elif os.path.isfile(os.path.join(path, "__init__.py")):
                module = entry
            else:
                continue
            if module in first:
                clashes.append(f"{first[module]} and {path}")
            else:
                first[module] = path
    if clashes:
        raise PluginError(
            f"plugin modules with the same name (only the first would be imported): "
            f"{'; '.join(clashes)}. Give the drop-in module a name of its own"
        )


def _packagePlugins(package: ModuleType) -> Iterator[_Found]:
    """
    The plugins of the modules of C{package}: bundled and dropped in. A
    module that fails to import is logged (by Twisted) and skipped.
    """
    _refuseModuleClashes(package)
    for dropin in getCache(package).values():  # type: ignore[no-untyped-call]
        for cached in dropin.plugins:
            try:
                plugin = IProtocolPlugin(cached, None)
            except Exception:
                log.failure("cannot load {plugin!r}", plugin=cached)
                continue
            if plugin is None:
                continue
            module = sys.modules.get(dropin.moduleName)
            file = getattr(module, "__file__", None) or dropin.moduleName
            if Path(file).resolve().parent == BUNDLED:
                origin = f"the bundled module {dropin.moduleName} ({file})"
            else:
                origin = f"the drop-in module {file}"
            name = getattr(plugin, "name", None)
            if not isinstance(name, str) or not name:
                log.warn("plugin {origin} left out: it has no name", origin=origin)
                continue
            yield _Found(name, origin, plugin)


# Installed distributions.


def _entryPointPlugins() -> Iterator[_Found]:
    """
    The plugins named by the entry points of L{ENTRY_POINT_GROUP}.
    """
    for entryPoint in entry_points(group=ENTRY_POINT_GROUP):
        origin = _entryPointOrigin(entryPoint)
        try:
            value = entryPoint.load()
        except Exception as e:
            yield _Found(entryPoint.name, origin, None, f"fails to import: {_exceptionText(e)}")
            continue
        if not IProtocolPlugin.providedBy(value):
            if isinstance(value, type) and IProtocolPlugin.implementedBy(value):
                what = "a class; it must name an instance of it"
            else:
                what = f"an object of type {type(value).__name__}, which is not a plugin"
            yield _Found(entryPoint.name, origin, None, f"names {what}")
            continue
        name = getattr(value, "name", None)
        if name != entryPoint.name:
            yield _Found(
                entryPoint.name,
                origin,
                None,
                f"names a plugin whose name is {name!r}: the entry point's name must be "
                "the plugin's name",
            )
            continue
        yield _Found(entryPoint.name, origin, value)


def _entryPointOrigin(entryPoint: EntryPoint) -> str:
    dist = entryPoint.dist
    where = f" of the distribution {dist.name} {dist.version}" if dist is not None else ""
    return f"the entry point {entryPoint.name} = {entryPoint.value}{where}"


def _exceptionText(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    if len(text) > PROBLEM_LENGTH:
        text = text[: PROBLEM_LENGTH - 1] + "…"
    return text


def _count(n: int) -> str:
    return {2: "two", 3: "three"}.get(n, str(n))


def _listed(items: Iterable[str]) -> str:
    words = list(items)
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]
