"""
The C{twistd netsupervisor} command: options, and the service it runs.

This is the one place (with the twistd plugin that imports it lazily) that
touches the global reactor.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from types import FrameType
from typing import Any, ClassVar

import attrs
from twisted.application.service import IService
from twisted.internet.error import ReactorAlreadyInstalledError
from twisted.logger import Logger
from twisted.python import usage

from supervisor.admin.auth import tokenFileProblem
from supervisor.config import Config, ConfigError, loadConfig
from supervisor.plugin import PluginError
from supervisor.service import Supervisor
from supervisor.shard import Shard, ShardError

log = Logger(namespace="netsupervisor.daemon")


class Options(usage.Options):
    """
    C{twistd netsupervisor} options.
    """

    synopsis = "--config PATH [--admin ENDPOINT] [--shard I/N]"
    longdesc = (
        "Supervise the long-lived connections listed in a TOML file. SIGTERM or "
        "SIGINT drains every connection (bounded by drain_timeout) and exits; SIGHUP "
        "re-reads the file and applies the difference. For one JSON object per log "
        "line run twistd with --logger=supervisor.logs.jsonLogObserver."
    )
    optParameters: ClassVar[list[list[str | None]]] = [
        ["config", "c", None, "The TOML configuration file (required)."],
        [
            "admin",
            "a",
            None,
            "The admin HTTP listener, a Twisted server endpoint string; overrides "
            "admin.listen (e.g. tcp:9100:interface=127.0.0.1).",
        ],
        [
            "shard",
            "s",
            None,
            "Keep only the connections that shard I (from 0) of N owns, e.g. 2/4; "
            "wins over [supervisor] shard.",
        ],
    ]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config is required")
        if self["shard"] is not None:
            try:
                self["shard"] = Shard.fromString(self["shard"])
            except ShardError as e:
                raise usage.UsageError(f"--shard: {e}") from None


def _fail(message: str) -> None:
    # Before the reactor runs (and before daemonising): one line, no traceback.
    sys.stderr.write(f"netsupervisor: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


class Daemon:
    """
    Builds the supervisor from the file and handles SIGHUP and repeated
    SIGTERM/SIGINT on the real reactor.
    """

    def __init__(self, options: Options, reactor: Any) -> None:
        self.path: str = options["config"]
        self.adminOverride: str | None = options["admin"]
        self.shardOverride: Shard | None = options["shard"]
        self.reactor = reactor
        self._stopping = False
        self._reloadWhenRunning = False

    def load(self) -> Config:
        """
        Read and validate the file, applying C{--admin}.

        @raise ConfigError: for a bad file, and for an C{admin.token_file}
            that users other than its owner may read or write.
        @raise PluginError: the installed plugins cannot be used together.
        """
        config = loadConfig(self.path)
        if self.adminOverride:
            config = attrs.evolve(
                config, admin=attrs.evolve(config.admin, listen=self.adminOverride)
            )
        problem = tokenFileProblem(config.admin.token_file)
        if problem is not None:
            raise ConfigError(self.path, "admin.token_file", problem)
        return config

    def shardOf(self, config: Config) -> Shard:
        """
        This process's shard: C{--shard}, else the file's C{[supervisor]
        shard}, else all of it.
        """
        return self.shardOverride or config.shard or Shard()

    def makeService(self) -> IService:
        """
        The supervisor, with the admin site as its child.
        """
        from supervisor.admin import adminService
        from supervisor.metrics import SupervisorMetrics

        try:
            config = self.load()
        except (ConfigError, PluginError) as e:
            _fail(str(e))
            raise  # not reached
        try:
            supervisor = Supervisor(
                config, self.reactor, shard=self.shardOf(config), freezeAfterStart=True
            )
            metrics = SupervisorMetrics(supervisor)
            admin = adminService(supervisor, metrics, config.admin.listen, self.reactor)
        except Exception as e:  # a plugin failing to build, a bad listener
            _fail(f"{self.path}: {e}")
            raise
        admin.setServiceParent(supervisor)  # type: ignore[no-untyped-call]
        self.supervisor = supervisor
        # From now on a SIGHUP is a reload, even one that comes before the
        # reactor runs (its default action would end the process).
        signal.signal(signal.SIGHUP, self.onHangup)
        self.reactor.callWhenRunning(self._installSignals)
        return supervisor

    def reload(self) -> None:
        """
        Re-read the file; apply it, or keep the running config if it is
        refused. Once the drain has begun there is nothing to apply it to: it
        is ignored, and says so.
        """
        if self.supervisor.draining:
            log.info("SIGHUP received while draining; the configuration is not reloaded")
            return
        try:
            config = self.load()
        except (ConfigError, PluginError) as e:
            self.supervisor.reloadFailed()
            log.error("reload refused, keeping the running config: {error}", error=str(e))
            return
        running = self.supervisor.config.admin.listen
        if config.admin.listen != running:
            log.warn(
                "admin.listen changed to {new}; it applies at the next restart (still {old})",
                new=config.admin.listen,
                old=running,
            )
            config = attrs.evolve(config, admin=attrs.evolve(config.admin, listen=running))
        self.supervisor.reload(config, shard=self.shardOf(config))

    def onHangup(self, signum: int, frame: FrameType | None) -> None:
        """
        SIGHUP: reload from the reactor's thread; before the reactor runs,
        once it does.
        """
        if self.reactor.running:
            self.reactor.callFromThread(self.reload)
        else:
            self._reloadWhenRunning = True

    def onStop(self, signum: int, frame: FrameType | None) -> None:
        """
        SIGTERM/SIGINT: the first goes to the reactor's own handler (a
        signalled stop, which twistd re-raises at exit); a later one only
        says so, where the reactor's handler would call C{reactor.stop()}
        again and log a traceback.
        """
        if self._stopping:
            self.reactor.callFromThread(
                log.info,
                "{signal} received while draining; still draining",
                signal=signal.Signals(signum).name,
            )
            return
        self._stopping = True
        if signum == signal.SIGINT:
            self.reactor.sigInt(signum, frame)
        else:
            self.reactor.sigTerm(signum, frame)

    def _installSignals(self) -> None:
        # Replaces the handlers the reactor installed at start-up.
        signal.signal(signal.SIGHUP, self.onHangup)
        signal.signal(signal.SIGTERM, self.onStop)
        signal.signal(signal.SIGINT, self.onStop)
        if self._reloadWhenRunning:
            self._reloadWhenRunning = False
            log.info("reloading for the SIGHUP received while starting")
            self.reload()


def installReactor() -> None:
    """
    Install the reactor C{twistd netsupervisor} runs on, L{supervisor.reactor}
    (epoll with a bounded batch of events per poll), unless a reactor is
    installed already (C{twistd --reactor} installs its choice while it
    parses the options) or this system has no epoll (the default reactor is
    used then).
    """
    try:
        from supervisor.reactor import install
    except ImportError:
        return
    with contextlib.suppress(ReactorAlreadyInstalledError):
        install()


def makeService(options: Options) -> IService:
    """
    The service for C{twistd netsupervisor}, on the reactor of
    L{installReactor}.
    """
    installReactor()
    from twisted.internet import reactor

    return Daemon(options, reactor).makeService()
