"""
Where plugins come from: the bundled ones, drop-in folders, and installed
distributions' entry points (L{supervisor.plugin}). What would pick one
plugin over another silently is refused, naming where each comes from; an
entry point that cannot be used is left out and named where it is used.

Installed distributions are simulated by a C{*.dist-info} folder (metadata
and C{entry_points.txt}) on C{sys.path}, which is what an installer writes.
What depends on C{sys.path} and the working directory at start-up runs in a
subprocess with both under control.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

import plugins
import supervisor.plugin
from supervisor import Supervisor
from supervisor.config import ConfigError, parseConfig
from supervisor.daemon import Daemon, Options
from supervisor.plugin import (
    BUNDLED,
    ENTRY_POINT_GROUP,
    PluginError,
    UnknownProtocol,
    availablePlugins,
    findPlugin,
)
from tests.logs import isWarning, loggedMessages

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_NAMES = {"http", "int32", "line", "mqtt", "nats", "redis"}

PLUGIN_MODULE = """
from zope.interface import implementer
from supervisor.interfaces import IProtocolPlugin

@implementer(IProtocolPlugin)
class Plugin:
    def __init__(self, name):
        self.name = name
    def buildProtocol(self, handle, options):
        raise NotImplementedError

plugin = Plugin({name!r})
"""

DROP_IN_MODULE = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from supervisor.interfaces import IProtocolPlugin

@implementer(IPlugin, IProtocolPlugin)
class Plugin:
    name = {name!r}
    def buildProtocol(self, handle, options):
        raise NotImplementedError

plugin = Plugin()
"""


def connection(protocol: str) -> str:
    endpoint = "tcp:host=127.0.0.1:port=1"
    return f'[[connection]]\nname = "c"\nendpoint = "{endpoint}"\nprotocol = "{protocol}"\n'


@attrs.define
class Site:
    """
    A site-packages folder on C{sys.path} where the test installs
    distributions.
    """

    path: Path
    modules: list[str] = attrs.field(factory=list)

    def install(self, distribution: str, version: str, entryPoints: str, **modules: str) -> None:
        """
        Write C{distribution}'s metadata, its entry points (the lines of
        the group's section) and its top-level modules.
        """
        info = self.path / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entryPoints}\n")
        for name, source in modules.items():
            (self.path / f"{name}.py").write_text(textwrap.dedent(source))
            self.modules.append(name)

    def installPlugin(self, distribution: str, version: str, name: str, module: str) -> None:
        """
        Install C{distribution} with one entry point, C{name}, for the
        plugin named C{name} in its module C{module}.
        """
        self.install(
            distribution,
            version,
            f"{name} = {module}:plugin",
            **{module: PLUGIN_MODULE.format(name=name)},
        )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(supervisor.plugin, "_latest", None)
    installed = Site(folder)
    try:
        yield installed
    finally:
        for name in installed.modules:
            sys.modules.pop(name, None)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """
    The warnings logged while the test runs.
    """
    with loggedMessages(isWarning) as seen:
        yield seen


@pytest.fixture
def dropInFolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """
    A drop-in folder added to the C{plugins} package's path, as it would be
    from C{sys.path} at start-up.
    """
    folder = tmp_path / "dropins" / "plugins"
    folder.mkdir(parents=True)
    monkeypatch.setattr(plugins, "__path__", [*plugins.__path__, str(folder)])
    monkeypatch.setattr(supervisor.plugin, "_latest", None)
    try:
        yield folder
    finally:
        for name in [m for m in sys.modules if m.startswith("plugins.dropped_")]:
            del sys.modules[name]


# Entry points.


def test_anInstalledDistributionAddsAPluginThroughItsEntryPoint(site: Site) -> None:
    site.installPlugin("netsupervisor-fake", "1.0", "fake", "fake_plugin_a")
    found = availablePlugins()
    assert set(found) == BUNDLED_NAMES | {"fake"}
    assert found.origins["fake"] == (
        "the entry point fake = fake_plugin_a:plugin of the distribution netsupervisor-fake 1.0"
    )
    assert found.origins["line"] == f"the bundled module plugins.line ({BUNDLED / 'line.py'})"
    assert found.unusable == {}
    assert findPlugin("fake") is sys.modules["fake_plugin_a"].plugin  # type: ignore[attr-defined]
    assert parseConfig(connection("fake"), "f.toml").connections[0].protocol == "fake"


def test_aDistributionInstalledAfterTheFirstSearchIsFoundByTheNext(site: Site) -> None:
    assert "late" not in availablePlugins()
    site.installPlugin("late-plugin", "2.0", "late", "late_plugin")
    assert findPlugin("late").name == "late"


def test_aNameTakenByABundledPluginIsRefusedNamingBoth(site: Site) -> None:
    site.installPlugin("netsupervisor-line", "3.1", "line", "other_line")
    with pytest.raises(PluginError) as refused:
        availablePlugins()
    assert str(refused.value) == (
        f"two plugins are named 'line': the bundled module plugins.line ({BUNDLED / 'line.py'}) "
        "and the entry point line = other_line:plugin of the distribution netsupervisor-line 3.1. "
        "A protocol name must be unique: uninstall or rename one"
    )
    with pytest.raises(PluginError):
        findPlugin("redis")


def test_twoDistributionsWithOneNameAreRefusedNamingBoth(site: Site) -> None:
    site.installPlugin("mc-one", "1.0", "mc", "mc_one")
    site.installPlugin("mc-two", "0.9", "mc", "mc_two")
    with pytest.raises(PluginError) as refused:
        availablePlugins()
    message = str(refused.value)
    assert message.startswith("two plugins are named 'mc': ")
    assert "the entry point mc = mc_one:plugin of the distribution mc-one 1.0" in message
    assert "the entry point mc = mc_two:plugin of the distribution mc-two 0.9" in message


def test_anEntryPointThatFailsToImportIsLeftOutAndNamedWhereItIsUsed(
    site: Site, warnings: list[str]
) -> None:
    """
    A broken plugin does not stop a configuration that does not use it; one
    that uses it is refused at its C{protocol} key, with the distribution,
    the entry point and the error.
    """
    site.install(
        "netsupervisor-broken",
        "0.3",
        "broken = broken_plugin:plugin",
        broken_plugin="import pymemcache_not_installed\n",
    )
    found = availablePlugins()
    assert set(found) == BUNDLED_NAMES
    why = (
        "the entry point broken = broken_plugin:plugin of the distribution "
        "netsupervisor-broken 0.3 fails to import: ModuleNotFoundError: "
        "No module named 'pymemcache_not_installed'"
    )
    assert found.unusable == {"broken": why}
    assert warnings == [f"plugin 'broken' left out: {why}"]

    assert parseConfig(connection("line"), "f.toml").connections[0].protocol == "line"
    with pytest.raises(ConfigError) as refused:
        parseConfig(connection("broken"), "f.toml")
    assert refused.value.keyPath == "connection[0].protocol"
    assert refused.value.problem.endswith(f'got "broken", whose plugin cannot be used: {why}')
    with pytest.raises(UnknownProtocol, match="protocol 'broken' cannot be used: the entry point"):
        findPlugin("broken")


@pytest.mark.parametrize(
    "source, problem",
    [
        (
            PLUGIN_MODULE.format(name="other"),
            "names a plugin whose name is 'other': "
            "the entry point's name must be the plugin's name",
        ),
        (
            PLUGIN_MODULE.format(name="odd").replace("plugin = Plugin('odd')", "plugin = Plugin"),
            "names a class; it must name an instance of it",
        ),
        ("plugin = 42\n", "names an object of type int, which is not a plugin"),
    ],
)
def test_anEntryPointThatNamesNoPluginOfItsNameIsLeftOut(
    site: Site, warnings: list[str], source: str, problem: str
) -> None:
    site.install("odd-plugin", "1.0", "odd = odd_plugin:plugin", odd_plugin=source)
    found = availablePlugins()
    assert "odd" not in found and "other" not in found
    assert found.unusable["odd"] == (
        f"the entry point odd = odd_plugin:plugin of the distribution odd-plugin 1.0 {problem}"
    )
    assert len(warnings) == 1


# Drop-in folders.


def test_aDropInNamedLikeABundledPluginIsRefusedNamingBoth(dropInFolder: Path) -> None:
    (dropInFolder / "dropped_line.py").write_text(DROP_IN_MODULE.format(name="line"))
    with pytest.raises(PluginError) as refused:
        availablePlugins()
    assert str(refused.value).startswith(
        f"two plugins are named 'line': the bundled module plugins.line ({BUNDLED / 'line.py'}) "
        f"and the drop-in module {dropInFolder / 'dropped_line.py'}. "
    )


def test_aDropInModuleNamedLikeABundledModuleIsRefused(dropInFolder: Path) -> None:
    """
    Twisted knows a plugin module by its file name: a drop-in C{redis.py}
    would never be imported (the bundled one would be, twice).
    """
    (dropInFolder / "redis.py").write_text(DROP_IN_MODULE.format(name="my-redis"))
    with pytest.raises(PluginError) as refused:
        availablePlugins()
    assert str(refused.value) == (
        "plugin modules with the same name (only the first would be imported): "
        f"{BUNDLED / 'redis.py'} and {dropInFolder / 'redis.py'}. "
        "Give the drop-in module a name of its own"
    )


def test_aDropInPluginHasItsFileAsOrigin(dropInFolder: Path) -> None:
    (dropInFolder / "dropped_echo.py").write_text(DROP_IN_MODULE.format(name="dropped-echo"))
    found = availablePlugins()
    assert found.origins["dropped-echo"] == f"the drop-in module {dropInFolder / 'dropped_echo.py'}"


# The plugins package itself, the working directory, at start-up: in a
# subprocess whose sys.path and working directory the test controls.


def run(code: str, cwd: Path, pythonPath: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = pythonPath
    return subprocess.run(
        [sys.executable, *args, *(["-c", code] if code else [])],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


NAMES = (
    "from supervisor.plugin import availablePlugins; print(' '.join(sorted(availablePlugins())))"
)


@pytest.fixture
def shadow(tmp_path: Path) -> Path:
    """
    A drop-in folder made by mistake with an C{__init__.py}: a package
    named C{plugins}.
    """
    folder = tmp_path / "shadow" / "plugins"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "echo_plugin.py").write_text(DROP_IN_MODULE.format(name="echo"))
    return folder


def shadowRefusal(folder: Path) -> str:
    return (
        f"the folder {folder} hides netsupervisor's bundled plugins ({ROOT / 'plugins'}): it "
        f"has an __init__.py, so Python imports it as the package 'plugins' in their place. "
        f"Delete {folder / '__init__.py'} to make it a drop-in folder, or take {folder.parent} "
        f"off sys.path (PYTHONPATH)"
    )


def test_aPluginsPackageAheadOnSysPathIsRefusedNamingTheFolder(
    tmp_path: Path, shadow: Path
) -> None:
    ran = run(NAMES, tmp_path, os.pathsep.join([str(shadow.parent), str(ROOT)]))
    assert ran.returncode == 1
    assert ran.stderr.splitlines()[-1] == (
        f"supervisor.plugin.PluginError: {shadowRefusal(shadow)}"
    )


def test_theDaemonRefusesToStartWithAShadowedPluginsPackage(tmp_path: Path, shadow: Path) -> None:
    """
    C{twistd netsupervisor} says so in one line and exits 1, before
    anything runs.
    """
    config = tmp_path / "netsupervisor.toml"
    config.write_text(connection("line"))
    twistd = (
        "import sys; from twisted.scripts.twistd import run;"
        f" sys.argv = ['twistd', '-n', '--pidfile=', 'netsupervisor', '--config', {str(config)!r}];"
        " run()"
    )
    ran = run(twistd, tmp_path, os.pathsep.join([str(shadow.parent), str(ROOT)]))
    assert ran.returncode == 1, ran.stderr
    assert ran.stderr == f"netsupervisor: {shadowRefusal(shadow)}\n"


def test_aPluginsPackageBehindOursChangesNothing(tmp_path: Path, shadow: Path) -> None:
    ran = run(NAMES, tmp_path, os.pathsep.join([str(ROOT), str(shadow.parent)]))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == sorted(BUNDLED_NAMES)


@pytest.fixture
def workingDirectory(tmp_path: Path) -> Path:
    """
    A working directory holding a C{plugins/} folder without an
    C{__init__.py}, with a plugin C{here} in it.
    """
    folder = tmp_path / "work"
    (folder / "plugins").mkdir(parents=True)
    (folder / "plugins" / "here_plugin.py").write_text(DROP_IN_MODULE.format(name="here"))
    return folder


@pytest.mark.parametrize(
    "how",
    ["python -c", "python -m", "an empty PYTHONPATH component"],
)
def test_theWorkingDirectoryIsNotSearchedUnlessNamed(
    tmp_path: Path, workingDirectory: Path, how: str
) -> None:
    """
    Python puts the working directory on sys.path by itself for C{-c} and
    C{-m} and for an empty component of C{PYTHONPATH}: its C{plugins/}
    folder is not searched then. Named in C{PYTHONPATH}, it is.
    """
    path = str(ROOT)
    if how == "python -m":
        module = tmp_path / "tools" / "list_plugins.py"
        module.parent.mkdir()
        module.write_text(NAMES)
        path += os.pathsep + str(module.parent)
        ran = run("", workingDirectory, path, "-m", "list_plugins")
    elif how == "python -c":
        ran = run(NAMES, workingDirectory, path)
    else:
        ran = run(NAMES, workingDirectory, path + os.pathsep)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == sorted(BUNDLED_NAMES)

    named = run(NAMES, workingDirectory, path + os.pathsep + str(workingDirectory))
    assert named.returncode == 0, named.stderr
    assert named.stdout.split() == sorted(BUNDLED_NAMES | {"here"})


# The daemon.


def refuseEverything() -> supervisor.plugin.Plugins:
    raise PluginError("two plugins are named 'x': here and there")


def test_theDaemonSaysWhyThePluginsCannotBeUsedAndExits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "netsupervisor.toml"
    path.write_text(connection("line"))
    monkeypatch.setattr("supervisor.plugin.availablePlugins", refuseEverything)
    options = Options()
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as exited:
        Daemon(options, MemoryReactorClock()).makeService()
    assert exited.value.code == 1
    assert capsys.readouterr().err == "netsupervisor: two plugins are named 'x': here and there\n"


def test_aReloadWhenThePluginsCannotBeUsedKeepsTheRunningConfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noLoggedErrors: list[dict[str, object]]
) -> None:
    path = tmp_path / "netsupervisor.toml"
    path.write_text(connection("line"))
    options = Options()
    options.parseOptions(["--config", str(path)])
    reactor = MemoryReactorClock()
    daemon = Daemon(options, reactor)
    running = daemon.load()
    daemon.supervisor = Supervisor(running, reactor)
    before = daemon.supervisor.connection("c")

    monkeypatch.setattr("supervisor.plugin.availablePlugins", refuseEverything)
    daemon.reload()
    assert daemon.supervisor.config is running
    assert daemon.supervisor.connection("c") is before
    assert daemon.supervisor.reloads == {"success": 0, "failure": 1}
    [logged] = noLoggedErrors
    assert "reload refused, keeping the running config: two plugins are named 'x'" in formatEvent(
        logged
    )
    noLoggedErrors.clear()
